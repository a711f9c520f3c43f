//! `version.info`, the index: which version of which app each group runs, and which versions exist.
//!
//! The file stays human-readable and keeps its comments and layout across edits (toml_edit). Every
//! edit goes through [`crate::store::Store::edit_index`], a compare-and-swap on the object's ETag.

//!
//! `document.rs` holds the file's two forms (typed, and toml_edit for edits), `packages.rs` the
//! uploaded versions, `groups.rs` what each group runs (history, rollback, env generations),
//! `edit_log.rs` the ids of recent edits, `retention.rs` the policy and removal of versions.

mod document;
mod edit_log;
mod groups;
mod packages;
mod retention;

use toml_edit::{DocumentMut, value};

use self::document::{IndexData, implicit_table, typed};
pub use self::edit_log::RECENT_EDITS;
pub use self::groups::{HISTORY_LEN, Rollback};
pub use self::packages::{Added, PackageEntry};
use crate::names::{AppName, GroupName, Version};

/// The schema this build reads and writes. A newer one is refused rather than misread.
pub const SCHEMA: i64 = 1;

const HEADER: &str = "\
# MilkyWhite index: which version of which app each server group runs.
# Written by `cargo milky`; every edit is a compare-and-swap on this object's ETag.
# Comments you add here survive edits.
";

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("version.info is empty; it should at least hold `schema = {SCHEMA}`")]
    Empty,
    #[error("version.info is broken: {0}")]
    Malformed(String),
    #[error(
        "version.info has schema {found}, this build understands schema {SCHEMA}; upgrade cargo-milky / milky-agent"
    )]
    UnknownSchema { found: i64 },
    #[error("app {app} has no uploaded version {version} (uploaded: {known})")]
    UnknownVersion {
        app: AppName,
        version: Version,
        known: String,
    },
    #[error("group {group} does not run app {app}")]
    NotInGroup { group: GroupName, app: AppName },
    #[error(
        "group {group} has no earlier version of {app} to roll back to{}",
        passed_over(never_served)
    )]
    NoHistory {
        group: GroupName,
        app: AppName,
        /// Versions in the history that never served anywhere.
        never_served: Vec<Version>,
    },
    #[error(
        "{app} {version} is listed with size {listed}, the package is {size} bytes; refusing to sign an entry that does not match"
    )]
    SizeMismatch {
        app: AppName,
        version: Version,
        listed: u64,
        size: u64,
    },
    #[error(
        "{app} {version} was already uploaded with other bytes (sha256 {existing}, now {new}); versions are immutable, pick a new version"
    )]
    VersionConflict {
        app: AppName,
        version: Version,
        existing: String,
        new: String,
    },
}

/// The parsed index, with its original text kept for lossless edits.
///
/// Its typed form is parsed once and kept until the next edit: an agent pass or a command looks
/// it up many times, and an index of thousands of versions takes milliseconds to parse. Every
/// edit of `doc` goes through [`Index::doc_mut`], which drops the typed form.
#[derive(Debug, Clone)]
pub struct Index {
    doc: DocumentMut,
    data: std::sync::OnceLock<IndexData>,
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

impl Index {
    /// A fresh index, as written the first time anything is uploaded.
    pub fn new() -> Self {
        let mut doc = DocumentMut::new();
        doc["schema"] = value(SCHEMA);
        doc.decor_mut().set_prefix(format!("{HEADER}\n"));
        doc["groups"] = implicit_table();
        doc["apps"] = implicit_table();
        Self {
            doc,
            data: std::sync::OnceLock::new(),
        }
    }

    /// Parses and fully validates an index: TOML syntax, schema version, and every name in it.
    pub fn parse(text: &str) -> Result<Self, IndexError> {
        if text.trim().is_empty() {
            return Err(IndexError::Empty);
        }
        let doc: DocumentMut = text
            .parse()
            .map_err(|e: toml_edit::TomlError| IndexError::Malformed(e.to_string()))?;
        let data = typed(&doc)?;
        Ok(Self {
            doc,
            data: data.into(),
        })
    }

    /// The typed form, parsed on first use after the last edit.
    fn data(&self) -> &IndexData {
        // Every constructor and edit keeps the document valid, so this cannot fail.
        self.data
            .get_or_init(|| typed(&self.doc).expect("index stays valid between edits"))
    }

    /// The document, to edit: the typed form is parsed again on the next lookup.
    fn doc_mut(&mut self) -> &mut DocumentMut {
        self.data = std::sync::OnceLock::new();
        &mut self.doc
    }
}

impl std::fmt::Display for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.doc)
    }
}

fn passed_over(never_served: &[Version]) -> String {
    if never_served.is_empty() {
        return String::new();
    }
    let list: Vec<&str> = never_served.iter().map(Version::as_str).collect();
    format!(
        " ({} in its history never served on any server: {})",
        if list.len() == 1 {
            "one version"
        } else {
            "versions"
        },
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn app(s: &str) -> AppName {
        AppName::new(s).unwrap()
    }
    pub(super) fn group(s: &str) -> GroupName {
        GroupName::new(s).unwrap()
    }
    pub(super) fn version(s: &str) -> Version {
        Version::new(s).unwrap()
    }
    pub(super) fn entry(sha: char) -> PackageEntry {
        PackageEntry {
            sha256: sha.to_string().repeat(64),
            size: 1234,
            uploaded: "2026-11-25T04:25:00Z".into(),
            signature: None,
            python: None,
        }
    }

    #[test]
    fn new_index_round_trips_and_edits_render_readably() {
        let mut index = Index::new();
        index
            .add_package(&app("myapp"), &version("1.4.0"), &entry('a'))
            .unwrap();
        index
            .set_version(&group("stable"), &app("myapp"), &version("1.4.0"))
            .unwrap();
        insta::assert_snapshot!(index.to_string());
        let reparsed = Index::parse(&index.to_string()).unwrap();
        assert_eq!(
            reparsed.group(&group("stable"))[&app("myapp")],
            version("1.4.0")
        );
    }

    #[test]
    fn hand_written_inline_tables_can_be_edited() {
        let text = "schema = 1\ngroups = { stable = { myapp = \"v1\" } }\n\n[apps.myapp]\nversions = { v1 = { sha256 = \"aaaa\", size = 1, uploaded = \"x\" } }\n";
        let mut index = Index::parse(text).unwrap();
        index
            .add_package(&app("myapp"), &version("v2"), &entry('b'))
            .unwrap();
        index
            .set_signature(&app("myapp"), &version("v1"), "sig")
            .unwrap();
        index
            .set_version(&group("stable"), &app("myapp"), &version("v2"))
            .unwrap();
        index
            .set_version(&group("beta"), &app("myapp"), &version("v1"))
            .unwrap();
        let reparsed = Index::parse(&index.to_string()).unwrap();
        assert_eq!(
            reparsed.group(&group("stable"))[&app("myapp")],
            version("v2")
        );
        assert_eq!(reparsed.group(&group("beta"))[&app("myapp")], version("v1"));
        let v1 = reparsed.package(&app("myapp"), &version("v1")).unwrap();
        assert_eq!(
            (v1.sha256.as_str(), v1.signature.as_deref()),
            ("aaaa", Some("sig"))
        );
        assert!(reparsed.package(&app("myapp"), &version("v2")).is_some());
        assert_eq!(
            reparsed.history(&group("stable"), &app("myapp")),
            [version("v1")]
        );
    }

    #[test]
    fn comments_and_layout_survive_edits() {
        let text = "# ops: stable is the customer-facing fleet\nschema = 1\n\n[groups.stable]\nmyapp = \"v1\" # pinned for the audit\n\n[apps.myapp.versions.v1]\nsha256 = \"aaaa\"\nsize = 1\nuploaded = \"x\"\n";
        let mut index = Index::parse(text).unwrap();
        index
            .add_package(&app("myapp"), &version("v2"), &entry('b'))
            .unwrap();
        index
            .set_version(&group("unstable"), &app("myapp"), &version("v2"))
            .unwrap();
        let out = index.to_string();
        assert!(
            out.starts_with("# ops: stable is the customer-facing fleet\n"),
            "{out}"
        );
        assert!(
            out.contains("myapp = \"v1\" # pinned for the audit"),
            "{out}"
        );
        assert!(out.contains("[groups.unstable]"), "{out}");
    }

    #[test]
    fn broken_indexes_are_refused_with_where_and_why() {
        assert!(matches!(Index::parse(""), Err(IndexError::Empty)));
        let err = Index::parse("schema = 1\n[groups.stable\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        let err = Index::parse("schema = 7\n").unwrap_err();
        assert!(
            matches!(err, IndexError::UnknownSchema { found: 7 }),
            "{err}"
        );
        let err = Index::parse("schema = 1\n[groups.stable]\n\"my app\" = \"v1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid app name \"my app\""), "{err}");
        let err = Index::parse("groups = 3\n").unwrap_err().to_string();
        assert!(err.contains("broken"), "{err}");
        let err = Index::parse("schema = 1\nsurprise = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("surprise"), "{err}");
    }
}
