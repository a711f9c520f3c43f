//! Which Python an app runs on: `[app] python` in milky.toml, a version (`"3.13"`, meaning any
//! 3.13.x) or a PEP 440 specifier (`">=3.12"`, `">=3.12,<3.14"`, `"~=3.12"`, `"==3.13.*"`).
//! Servers match it against the interpreters they have; `package --wheels` takes the lowest
//! version it allows.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A CPython version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PythonVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl PythonVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// `3.13.0`, `3.13` (patch 0), or with a suffix such as `3.13.0rc1` or `3.13.0+` (ignored).
    pub fn parse(text: &str) -> Option<Self> {
        let numbers: Vec<u32> = text
            .trim()
            .split('.')
            .take(3)
            .map(|part| {
                let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .collect::<Option<_>>()?;
        match numbers[..] {
            [major, minor] => Some(Self::new(major, minor, 0)),
            [major, minor, patch] => Some(Self::new(major, minor, patch)),
            _ => None,
        }
    }

    /// `3.13`, as in `python3.13` and wheel tags.
    pub fn short(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
}

impl fmt::Display for PythonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    NotEq,
    Less,
    LessEq,
    Greater,
    GreaterEq,
    Compatible,
}

/// One clause: an operator and a version of 2 or 3 numbers, `.*` allowed after `==` and `!=`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    op: Op,
    numbers: Vec<u32>,
    wildcard: bool,
}

/// What an app asks for, parsed from `[app] python`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonSpec {
    text: String,
    clauses: Vec<Clause>,
}

impl PythonSpec {
    /// A bare version (`3.13`, `3.13.1`) matches that release series (`==3.13.*`) or that
    /// exact release; otherwise comma-separated PEP 440 clauses, all of which must hold.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = |why: &str| {
            format!(
                "app.python {text:?} {why}; write a version such as \"3.13\" or a specifier such as \">=3.12\""
            )
        };
        if text.is_empty() {
            return Err(bad("is empty"));
        }
        let mut clauses = Vec::new();
        for raw in text.split(',') {
            let raw = raw.trim();
            let (op, rest) = [
                ("~=", Op::Compatible),
                ("==", Op::Eq),
                ("!=", Op::NotEq),
                ("<=", Op::LessEq),
                (">=", Op::GreaterEq),
                ("<", Op::Less),
                (">", Op::Greater),
            ]
            .iter()
            .find_map(|(prefix, op)| raw.strip_prefix(prefix).map(|rest| (*op, rest.trim())))
            .unwrap_or((Op::Eq, raw));
            let bare = op == Op::Eq && !raw.starts_with("==");
            let (version, wildcard) = match rest.strip_suffix(".*") {
                Some(v) => (v, true),
                None => (rest, bare && rest.split('.').count() == 2),
            };
            if wildcard && !matches!(op, Op::Eq | Op::NotEq) {
                return Err(bad("uses .* with an operator other than == or !="));
            }
            let numbers: Vec<u32> = version
                .split('.')
                .map(|n| n.parse().ok().filter(|_| !n.is_empty() && n.len() < 6))
                .collect::<Option<_>>()
                .ok_or_else(|| bad(&format!("has {raw:?}, which is not a version clause")))?;
            if !(1..=3).contains(&numbers.len())
                || numbers[0] != 3
                || (op == Op::Compatible && numbers.len() < 2)
            {
                return Err(bad(&format!(
                    "has {raw:?}, which is not a Python 3 version"
                )));
            }
            clauses.push(Clause {
                op,
                numbers,
                wildcard,
            });
        }
        Ok(Self {
            text: text.to_owned(),
            clauses,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `version` satisfies every clause.
    pub fn matches(&self, version: PythonVersion) -> bool {
        let have = [version.major, version.minor, version.patch];
        self.clauses.iter().all(|clause| {
            let n = &clause.numbers;
            let padded = |i: usize| n.get(i).copied().unwrap_or(0);
            let want = [padded(0), padded(1), padded(2)];
            let prefix = have[..n.len()] == n[..];
            match clause.op {
                Op::Eq if clause.wildcard => prefix,
                Op::Eq => have == want,
                Op::NotEq if clause.wildcard => !prefix,
                Op::NotEq => have != want,
                Op::Less => have < want,
                Op::LessEq => have <= want,
                Op::Greater => have > want,
                Op::GreaterEq => have >= want,
                // ~=3.12 is >=3.12,==3.*; ~=3.12.1 is >=3.12.1,==3.12.*
                Op::Compatible => have >= want && have[..n.len() - 1] == n[..n.len() - 1],
            }
        })
    }

    /// The lowest `3.x` series with a release that satisfies the spec (the one wheels are
    /// vendored for); `None` if no 3.x up to 3.99 does.
    pub fn lowest_series(&self) -> Option<PythonVersion> {
        (0..100)
            .map(|minor| PythonVersion::new(3, minor, 0))
            .find(|v| (0..=30).any(|patch| self.matches(PythonVersion::new(3, v.minor, patch))))
    }
}

impl fmt::Display for PythonSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> PythonVersion {
        PythonVersion::parse(text).unwrap()
    }

    fn allows(spec: &str, version: &str) -> bool {
        PythonSpec::parse(spec).unwrap().matches(v(version))
    }

    #[test]
    fn a_bare_version_is_its_series_or_its_release() {
        assert!(allows("3.13", "3.13.0"));
        assert!(allows("3.13", "3.13.7"));
        assert!(!allows("3.13", "3.12.9"));
        assert!(!allows("3.13", "3.14.0"));
        assert!(allows("3.13.1", "3.13.1"));
        assert!(!allows("3.13.1", "3.13.2"));
    }

    #[test]
    fn specifiers_follow_pep_440() {
        assert!(allows(">=3.12", "3.12.0"));
        assert!(allows(">=3.12", "3.14.1"));
        assert!(!allows(">=3.12", "3.11.2"));
        assert!(allows(">=3.12, <3.14", "3.13.0"));
        assert!(!allows(">=3.12,<3.14", "3.14.0"));
        assert!(allows("==3.13.*", "3.13.5"));
        assert!(!allows("!=3.13.*", "3.13.5"));
        assert!(allows("~=3.12", "3.13.0"));
        assert!(!allows("~=3.12.1", "3.13.0"));
        assert!(allows("~=3.12.1", "3.12.4"));
        assert!(!allows(">3.12", "3.12.0"));
        assert!(allows("<=3.11", "3.11.0"));
        assert!(!allows("<=3.11", "3.11.2"));
    }

    #[test]
    fn nonsense_is_refused_with_the_fix() {
        for bad in ["", "three", ">=3.x", "2.7", ">=3.12.*", "python3.13", "~=3"] {
            let err = PythonSpec::parse(bad).unwrap_err();
            assert!(err.contains("such as \"3.13\""), "{bad}: {err}");
        }
    }

    #[test]
    fn wheels_are_for_the_lowest_series_allowed() {
        let lowest = |s: &str| {
            PythonSpec::parse(s)
                .unwrap()
                .lowest_series()
                .map(|v| v.short())
        };
        assert_eq!(lowest("3.13").as_deref(), Some("3.13"));
        assert_eq!(lowest(">=3.12").as_deref(), Some("3.12"));
        assert_eq!(lowest(">3.12").as_deref(), Some("3.12"));
        assert_eq!(lowest("~=3.11.4").as_deref(), Some("3.11"));
        assert_eq!(lowest("<3.0"), None);
    }

    #[test]
    fn interpreter_versions_parse_with_suffixes() {
        assert_eq!(v("3.13.0rc1"), PythonVersion::new(3, 13, 0));
        assert_eq!(v("3.11"), PythonVersion::new(3, 11, 0));
        assert_eq!(PythonVersion::parse("3"), None);
    }
}
