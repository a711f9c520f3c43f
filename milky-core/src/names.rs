//! Validated names of apps, groups, versions and hosts.
//!
//! Every one of these ends up in store keys, file paths and nginx/Apache configs, so each is checked
//! once, when it enters the program, against a charset that is safe in all of those places.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name that was rejected, with the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct NameError {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal, $extra:literal, $rule:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The charset, for error messages and `--help`.
            pub const RULE: &'static str = $rule;

            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                check(&value, $kind, $max, $extra, $rule)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// An app's name: also its directory on servers, its nginx upstream and its mod_wsgi process group.
    AppName, "app name", 64, "_-",
    "1 to 64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
);
name_type!(
    /// A server group, such as `stable` or `unstable`.
    GroupName, "group name", 64, "_-",
    "1 to 64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
);
name_type!(
    /// A version of an app as uploaded: `v1022`, `1.4.0`, `v1.2-3-gabc1234`, `20261125.0425`.
    Version, "version", 128, "._+-",
    "1 to 128 characters of letters, digits, '.', '_', '+' and '-', starting with a letter or digit"
);
name_type!(
    /// A server's name within its group.
    HostName, "host name", 128, "._-",
    "1 to 128 characters of letters, digits, '.', '_' and '-', starting with a letter or digit"
);

fn check(
    value: &str,
    kind: &'static str,
    max: usize,
    extra: &str,
    rule: &'static str,
) -> Result<(), NameError> {
    let lowercase_only = matches!(kind, "app name" | "group name");
    let allowed = |c: char| {
        c.is_ascii_digit()
            || c.is_ascii_lowercase()
            || (!lowercase_only && c.is_ascii_uppercase())
            || extra.contains(c)
    };
    let ok = !value.is_empty()
        && value.len() <= max
        && value.chars().all(allowed)
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && !value.contains("..");
    if ok {
        Ok(())
    } else {
        Err(NameError {
            kind,
            value: value.to_owned(),
            rule,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["myapp", "my-app_2", "a", "0day"] {
            AppName::new(ok).unwrap();
            GroupName::new(ok).unwrap();
        }
        for ok in [
            "v1022",
            "1.4.0",
            "v1.2-3-gabc1234",
            "20261125.0425",
            "1.0+build.5",
        ] {
            Version::new(ok).unwrap();
        }
        HostName::new("web-01.eu-west").unwrap();
    }

    #[test]
    fn rejects_names_that_could_escape_a_path_or_a_config() {
        for bad in [
            "", "-x", ".hidden", "My App", "a/b", "a;b", "a{b", "a\nb", "a\"b", "Upper", "ä",
            "../x",
        ] {
            assert!(AppName::new(bad).is_err(), "{bad:?} accepted as app name");
        }
        for bad in ["", "..", "v1..2", "v1/2", "v 1", ".v1", "v1;", "v1'"] {
            assert!(Version::new(bad).is_err(), "{bad:?} accepted as version");
        }
        assert!(AppName::new("x".repeat(65)).is_err());
    }

    #[test]
    fn error_names_the_value_and_the_rule() {
        let err = GroupName::new("Stable!").unwrap_err().to_string();
        assert!(err.contains("invalid group name \"Stable!\""), "{err}");
        assert!(err.contains("a-z"), "{err}");
    }
}
