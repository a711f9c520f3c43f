//! `version.info`, the index: which version of which app each group runs, and which versions exist.
//!
//! The file stays human-readable and keeps its comments and layout across edits (toml_edit). Every
//! edit goes through [`crate::store::Store::edit_index`], a compare-and-swap on the object's ETag.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml_edit::{DocumentMut, Item, Table, value};

use crate::names::{AppName, GroupName, Version};
use crate::retention::Policy;

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

/// What the store holds of one uploaded package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageEntry {
    /// sha256 of the `.tar.bz2` file, hex.
    pub sha256: String,
    /// Size of the `.tar.bz2` file in bytes.
    pub size: u64,
    /// When it was uploaded (RFC 3339).
    pub uploaded: String,
    /// `<key-id>:<base64>`: the admin's signature over app, version, sha256 and size (see
    /// [`crate::signing`]). Agents with trusted keys refuse entries without a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The package's `[app] python`, copied from its manifest, so a server that has no such
    /// Python refuses the release before it downloads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexData {
    schema: Option<i64>,
    #[serde(default)]
    groups: BTreeMap<GroupName, BTreeMap<AppName, Version>>,
    #[serde(default)]
    apps: BTreeMap<AppName, AppData>,
    /// Per group and app, the versions it ran before, most recent first (for rollback).
    #[serde(default)]
    history: BTreeMap<GroupName, BTreeMap<AppName, Vec<Version>>>,
    /// Per group and app, the generation of its env object (`cargo milky env`): a change here
    /// tells agents to fetch the env and restart the app.
    #[serde(default)]
    env: BTreeMap<GroupName, BTreeMap<AppName, u64>>,
    /// What `cargo milky prune` and uploads remove (see [`crate::retention`]).
    #[serde(default)]
    retention: Option<crate::retention::PolicySettings>,
}

/// How many earlier versions the index remembers per group and app.
pub const HISTORY_LEN: usize = 10;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppData {
    #[serde(default)]
    versions: BTreeMap<Version, PackageEntry>,
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

/// The outcome of recording an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    New,
    /// The same bytes were uploaded before: nothing to do.
    AlreadyThere,
    /// The same bytes were uploaded before without a signature; the new one was added.
    Signed,
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

    /// Every group with the app → version it runs.
    pub fn groups(&self) -> BTreeMap<GroupName, BTreeMap<AppName, Version>> {
        self.data().groups.clone()
    }

    /// Every group the index names: those that run apps, and those with an env or a history of
    /// versions.
    pub fn known_groups(&self) -> std::collections::BTreeSet<GroupName> {
        let data = self.data();
        data.groups
            .keys()
            .chain(data.env.keys())
            .chain(data.history.keys())
            .cloned()
            .collect()
    }

    /// The apps and versions one group runs (empty if the group is unknown).
    pub fn group(&self, group: &GroupName) -> BTreeMap<AppName, Version> {
        self.data().groups.get(group).cloned().unwrap_or_default()
    }

    /// Every app with its uploaded versions.
    pub fn apps(&self) -> BTreeMap<AppName, BTreeMap<Version, PackageEntry>> {
        self.data()
            .apps
            .iter()
            .map(|(app, data)| (app.clone(), data.versions.clone()))
            .collect()
    }

    /// The uploaded versions of one app, without copying the rest of the index.
    pub fn versions(&self, app: &AppName) -> Option<&BTreeMap<Version, PackageEntry>> {
        Some(&self.data().apps.get(app)?.versions)
    }

    pub fn package(&self, app: &AppName, version: &Version) -> Option<PackageEntry> {
        self.versions(app)?.get(version).cloned()
    }

    /// Records an uploaded package. The same bytes again are [`Added::AlreadyThere`], or
    /// [`Added::Signed`] when the entry had no signature and `entry` brings one (so releases
    /// uploaded before signing can be signed by uploading them again); other bytes under a known
    /// version are refused, because a version never changes once uploaded.
    pub fn add_package(
        &mut self,
        app: &AppName,
        version: &Version,
        entry: &PackageEntry,
    ) -> Result<Added, IndexError> {
        if let Some(existing) = self.package(app, version) {
            return if existing.sha256 == entry.sha256 {
                match &entry.signature {
                    Some(signature) if existing.signature.is_none() => {
                        if existing.size != entry.size {
                            return Err(IndexError::SizeMismatch {
                                app: app.clone(),
                                version: version.clone(),
                                listed: existing.size,
                                size: entry.size,
                            });
                        }
                        self.set_signature(app, version, signature)?;
                        Ok(Added::Signed)
                    }
                    _ => Ok(Added::AlreadyThere),
                }
            } else {
                Err(IndexError::VersionConflict {
                    app: app.clone(),
                    version: version.clone(),
                    existing: existing.sha256,
                    new: entry.sha256.clone(),
                })
            };
        }
        let versions = table_at(self.doc_mut(), &["apps", app.as_str(), "versions"]);
        let mut row = Table::new();
        row["sha256"] = value(&entry.sha256);
        row["size"] = value(i64::try_from(entry.size).unwrap_or(i64::MAX));
        row["uploaded"] = value(&entry.uploaded);
        if let Some(signature) = &entry.signature {
            row["signature"] = value(signature);
        }
        if let Some(python) = &entry.python {
            row["python"] = value(python);
        }
        versions.insert(version.as_str(), Item::Table(row));
        Ok(Added::New)
    }

    /// Sets (or replaces) the signature of an uploaded version's entry; the rest of the entry,
    /// and any comments on it, stay as they are.
    pub fn set_signature(
        &mut self,
        app: &AppName,
        version: &Version,
        signature: &str,
    ) -> Result<(), IndexError> {
        if self.package(app, version).is_none() {
            return Err(IndexError::UnknownVersion {
                app: app.clone(),
                version: version.clone(),
                known: self.known_versions(app),
            });
        }
        let row = table_at(self.doc_mut(), &["apps", app.as_str(), "versions"])
            .get_mut(version.as_str())
            .and_then(Item::as_table_like_mut)
            .expect("a listed version has a table");
        match row.get_mut("signature").and_then(Item::as_value_mut) {
            // Keeps the key's decor (a trailing comment, say).
            Some(existing) => {
                let decor = existing.decor().clone();
                *existing = signature.into();
                *existing.decor_mut() = decor;
            }
            None => {
                row.insert("signature", value(signature));
            }
        }
        Ok(())
    }

    fn known_versions(&self, app: &AppName) -> String {
        self.versions(app)
            .map(|versions| {
                versions
                    .keys()
                    .map(Version::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|list| !list.is_empty())
            .unwrap_or_else(|| "none".into())
    }

    /// Makes `group` run `version` of `app`, which must have been uploaded. Returns the version the
    /// group ran before, if any.
    pub fn set_version(
        &mut self,
        group: &GroupName,
        app: &AppName,
        version: &Version,
    ) -> Result<Option<Version>, IndexError> {
        if self.package(app, version).is_none() {
            return Err(IndexError::UnknownVersion {
                app: app.clone(),
                version: version.clone(),
                known: self.known_versions(app),
            });
        }
        let previous = self.group(group).remove(app);
        if let Some(previous) = previous.as_ref().filter(|p| *p != version) {
            let mut history = self.history(group, app);
            history.retain(|v| v != previous);
            history.insert(0, previous.clone());
            history.truncate(HISTORY_LEN);
            self.set_history(group, app, &history);
        }
        let apps = table_at(self.doc_mut(), &["groups", group.as_str()]);
        apps.insert(app.as_str(), value(version.as_str()));
        Ok(previous)
    }

    /// The generation of `app`'s env in `group` (0: none set).
    pub fn env_generation(&self, group: &GroupName, app: &AppName) -> u64 {
        self.data()
            .env
            .get(group)
            .and_then(|apps| apps.get(app).copied())
            .unwrap_or(0)
    }

    /// Every app's env generation in `group`.
    pub fn env_generations(&self, group: &GroupName) -> BTreeMap<AppName, u64> {
        self.data().env.get(group).cloned().unwrap_or_default()
    }

    /// Records a new env generation; an older one never replaces a newer.
    pub fn set_env_generation(&mut self, group: &GroupName, app: &AppName, generation: u64) {
        if generation > self.env_generation(group, app) {
            let table = table_at(self.doc_mut(), &["env", group.as_str()]);
            table.insert(
                app.as_str(),
                value(i64::try_from(generation).unwrap_or(i64::MAX)),
            );
        }
    }

    /// The versions `group` ran of `app` before the current one, most recent first.
    pub fn history(&self, group: &GroupName, app: &AppName) -> Vec<Version> {
        self.data()
            .history
            .get(group)
            .and_then(|apps| apps.get(app).cloned())
            .unwrap_or_default()
    }

    fn set_history(&mut self, group: &GroupName, app: &AppName, history: &[Version]) {
        let table = table_at(self.doc_mut(), &["history", group.as_str()]);
        let mut array = toml_edit::Array::new();
        history.iter().for_each(|v| array.push(v.as_str()));
        table.insert(app.as_str(), value(array));
    }

    /// Switches `group` back to the version of `app` it ran before; that version leaves the
    /// history, so rolling back again goes one further. Versions whose package is no longer
    /// listed, and those `served` says never served anywhere (a release that failed its health
    /// check everywhere), are passed over and leave the history too.
    pub fn rollback(
        &mut self,
        group: &GroupName,
        app: &AppName,
        served: impl Fn(&Version) -> bool,
    ) -> Result<Rollback, IndexError> {
        let current = self
            .group(group)
            .remove(app)
            .ok_or_else(|| IndexError::NotInGroup {
                group: group.clone(),
                app: app.clone(),
            })?;
        let mut history = self.history(group, app);
        let mut never_served = Vec::new();
        while let Some(candidate) = history.first().cloned() {
            history.remove(0);
            if self.package(app, &candidate).is_none() || candidate == current {
                continue;
            }
            if !served(&candidate) {
                never_served.push(candidate);
                continue;
            }
            self.set_history(group, app, &history);
            table_at(self.doc_mut(), &["groups", group.as_str()])
                .insert(app.as_str(), value(candidate.as_str()));
            return Ok(Rollback {
                from: current,
                to: candidate,
                never_served,
            });
        }
        Err(IndexError::NoHistory {
            group: group.clone(),
            app: app.clone(),
            never_served,
        })
    }

    /// Takes `app` out of `group`. Its packages stay listed and stored. Returns the version it ran.
    pub fn remove_app(&mut self, group: &GroupName, app: &AppName) -> Result<Version, IndexError> {
        let Some(version) = self.group(group).remove(app) else {
            return Err(IndexError::NotInGroup {
                group: group.clone(),
                app: app.clone(),
            });
        };
        table_at(self.doc_mut(), &["groups", group.as_str()]).remove(app.as_str());
        Ok(version)
    }
}

/// The ids of recent edits ride in comment lines at the end of the file, not in a TOML key:
/// builds that predate them refuse unknown keys but keep comments through their own edits.
const EDITS_LINE: &str = "# milky-edits:";
/// How many edit ids the index remembers: more than can land between one controller's write and
/// its read-back.
pub const RECENT_EDITS: usize = 64;
const EDITS_PER_LINE: usize = 8;

impl Index {
    /// The ids of the last [`RECENT_EDITS`] edits, oldest first (see
    /// [`crate::store::Store::edit_index`]).
    pub fn recent_edits(&self) -> Vec<String> {
        let trailing = self.doc.trailing().as_str().unwrap_or_default();
        trailing
            .lines()
            .filter_map(|line| line.trim().strip_prefix(EDITS_LINE))
            .flat_map(str::split_whitespace)
            .map(str::to_owned)
            .collect()
    }

    /// Records an edit's id, forgetting the oldest beyond [`RECENT_EDITS`]. Whatever else is at
    /// the end of the file (a comment someone wrote) stays.
    pub fn record_edit(&mut self, id: &str) {
        let mut ids = self.recent_edits();
        ids.push(id.to_owned());
        let ids = &ids[ids.len().saturating_sub(RECENT_EDITS)..];
        let trailing = self.doc.trailing().as_str().unwrap_or_default().to_owned();
        let mut kept: Vec<&str> = trailing
            .lines()
            .filter(|line| !line.trim().starts_with(EDITS_LINE))
            .collect();
        while kept.last().is_some_and(|line| line.trim().is_empty()) {
            kept.pop();
        }
        let mut text: String = kept.iter().map(|line| format!("{line}\n")).collect();
        text.push('\n');
        for chunk in ids.chunks(EDITS_PER_LINE) {
            text.push_str(&format!("{EDITS_LINE} {}\n", chunk.join(" ")));
        }
        self.doc.set_trailing(text);
    }
}

/// Retention (see [`crate::retention`]): the policy and the removal of versions.
impl Index {
    /// The `[retention]` policy, or the default one.
    pub fn retention(&self) -> Policy {
        self.data()
            .retention
            .as_ref()
            .map(|settings| Policy::from_settings(settings).expect("checked when parsed"))
            .unwrap_or_default()
    }

    /// Writes `policy` as `[retention]`, every field spelled out.
    pub fn set_retention(&mut self, policy: &Policy) {
        let table = table_at(self.doc_mut(), &["retention"]);
        table.set_implicit(false);
        table.insert(
            "keep",
            value(i64::try_from(policy.keep).unwrap_or(i64::MAX)),
        );
        table.insert(
            "older_than",
            value(humantime::format_duration(policy.older_than).to_string()),
        );
        table.insert("after_upload", value(policy.after_upload));
    }

    /// Every version some group can roll back to.
    pub fn history_versions(&self) -> std::collections::BTreeSet<(AppName, Version)> {
        self.data()
            .history
            .values()
            .flatten()
            .flat_map(|(app, versions)| versions.iter().map(|v| (app.clone(), v.clone())))
            .collect()
    }

    /// Takes versions' entries out of the index (an app left without any goes too). Their
    /// packages stay in the store until `cargo milky prune` deletes them.
    pub fn remove_versions(&mut self, versions: &[(AppName, Version)]) {
        for (app, version) in versions {
            if self.package(app, version).is_none() {
                continue;
            }
            let entries = table_at(self.doc_mut(), &["apps", app.as_str(), "versions"]);
            entries.remove(version.as_str());
            if entries.is_empty() {
                table_at(self.doc_mut(), &["apps"]).remove(app.as_str());
            }
        }
    }
}

impl std::fmt::Display for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.doc)
    }
}

/// What a rollback did: the version it left, the one it went to, and the versions of the history
/// it passed over because they never served anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    pub from: Version,
    pub to: Version,
    pub never_served: Vec<Version>,
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

/// The typed form of a document, with its schema checked.
fn typed(doc: &DocumentMut) -> Result<IndexData, IndexError> {
    let data: IndexData =
        toml::from_str(&doc.to_string()).map_err(|e| IndexError::Malformed(e.to_string()))?;
    if let Some(settings) = &data.retention {
        crate::retention::Policy::from_settings(settings).map_err(IndexError::Malformed)?;
    }
    match data.schema {
        Some(SCHEMA) => Ok(data),
        Some(found) => Err(IndexError::UnknownSchema { found }),
        None => Err(IndexError::Malformed(
            "the `schema = 1` line is missing".into(),
        )),
    }
}

fn implicit_table() -> Item {
    let mut table = Table::new();
    table.set_implicit(true);
    Item::Table(table)
}

/// The table at a dotted path, created (as implicit parents) where missing.
fn table_at<'d>(doc: &'d mut DocumentMut, path: &[&str]) -> &'d mut Table {
    let mut table = doc.as_table_mut();
    for key in path {
        // Implicit tables print no header of their own while they hold only tables, so the
        // file shows `[apps.myapp.versions.v1]` rather than three headers.
        let item = table.entry(key).or_insert_with(implicit_table);
        // A hand-written `key = { … }` on the path: same content, edited as a table.
        if let Some(inline) = item.as_inline_table_mut() {
            *item = Item::Table(std::mem::take(inline).into_table());
        }
        table = item
            .as_table_mut()
            .expect("validated index has tables at these paths");
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(s: &str) -> AppName {
        AppName::new(s).unwrap()
    }
    fn group(s: &str) -> GroupName {
        GroupName::new(s).unwrap()
    }
    fn version(s: &str) -> Version {
        Version::new(s).unwrap()
    }
    fn entry(sha: char) -> PackageEntry {
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
    fn set_version_needs_an_uploaded_version_and_reports_the_previous_one() {
        let mut index = Index::new();
        let err = index
            .set_version(&group("stable"), &app("myapp"), &version("v9"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "app myapp has no uploaded version v9 (uploaded: none)"
        );
        index
            .add_package(&app("myapp"), &version("v1"), &entry('a'))
            .unwrap();
        index
            .add_package(&app("myapp"), &version("v2"), &entry('b'))
            .unwrap();
        assert_eq!(
            index
                .set_version(&group("stable"), &app("myapp"), &version("v1"))
                .unwrap(),
            None
        );
        assert_eq!(
            index
                .set_version(&group("stable"), &app("myapp"), &version("v2"))
                .unwrap(),
            Some(version("v1"))
        );
        let err = index
            .set_version(&group("stable"), &app("myapp"), &version("v3"))
            .unwrap_err();
        assert!(err.to_string().ends_with("(uploaded: v1, v2)"), "{err}");
    }

    #[test]
    fn same_bytes_again_are_a_no_op_other_bytes_are_refused() {
        let mut index = Index::new();
        assert_eq!(
            index
                .add_package(&app("a"), &version("v1"), &entry('a'))
                .unwrap(),
            Added::New
        );
        assert_eq!(
            index
                .add_package(&app("a"), &version("v1"), &entry('a'))
                .unwrap(),
            Added::AlreadyThere
        );
        let err = index
            .add_package(&app("a"), &version("v1"), &entry('b'))
            .unwrap_err();
        assert!(matches!(err, IndexError::VersionConflict { .. }), "{err}");
    }

    #[test]
    fn a_signature_is_written_added_to_an_unsigned_entry_and_replaced_in_place() {
        let mut index = Index::new();
        let signed = PackageEntry {
            signature: Some("0011223344556677:c2ln".into()),
            python: None,
            ..entry('a')
        };
        index
            .add_package(&app("a"), &version("v1"), &signed)
            .unwrap();
        assert!(
            index.to_string().contains(
                "uploaded = \"2026-11-25T04:25:00Z\"\nsignature = \"0011223344556677:c2ln\"\n"
            ),
            "{index}"
        );
        assert_eq!(
            index.package(&app("a"), &version("v1")),
            Some(signed.clone())
        );

        // An unsigned entry, uploaded again with a key, gets the signature; a signed one keeps its.
        index
            .add_package(&app("a"), &version("v2"), &entry('b'))
            .unwrap();
        let v2 = PackageEntry {
            signature: Some("0011223344556677:djI=".into()),
            python: None,
            ..entry('b')
        };
        assert_eq!(
            index.add_package(&app("a"), &version("v2"), &v2).unwrap(),
            Added::Signed
        );
        assert_eq!(
            index.package(&app("a"), &version("v2")).unwrap().signature,
            v2.signature
        );
        let other = PackageEntry {
            signature: Some("8899aabbccddeeff:b3RoZXI=".into()),
            python: None,
            ..entry('b')
        };
        assert_eq!(
            index
                .add_package(&app("a"), &version("v2"), &other)
                .unwrap(),
            Added::AlreadyThere
        );
        assert_eq!(
            index.package(&app("a"), &version("v2")).unwrap().signature,
            v2.signature
        );
        // The same sha256 with another size is not signed.
        let unsigned_v3 = entry('c');
        index
            .add_package(&app("a"), &version("v3"), &unsigned_v3)
            .unwrap();
        let err = index
            .add_package(
                &app("a"),
                &version("v3"),
                &PackageEntry {
                    size: 1,
                    signature: Some("x".into()),
                    python: None,
                    ..entry('c')
                },
            )
            .unwrap_err();
        assert!(matches!(err, IndexError::SizeMismatch { .. }), "{err}");

        // set_signature replaces in place and keeps a comment on the line.
        let text = index.to_string().replace(
            "signature = \"0011223344556677:c2ln\"",
            "signature = \"0011223344556677:c2ln\" # release key",
        );
        let mut index = Index::parse(&text).unwrap();
        index
            .set_signature(&app("a"), &version("v1"), "8899aabbccddeeff:bmV3")
            .unwrap();
        assert!(
            index
                .to_string()
                .contains("signature = \"8899aabbccddeeff:bmV3\" # release key\n"),
            "{index}"
        );
        let err = index
            .set_signature(&app("a"), &version("v9"), "x")
            .unwrap_err();
        assert!(matches!(err, IndexError::UnknownVersion { .. }), "{err}");
    }

    #[test]
    fn rollback_walks_back_through_the_history() {
        let mut index = Index::new();
        for v in ["v1", "v2", "v3"] {
            index
                .add_package(&app("a"), &version(v), &entry('a'))
                .unwrap();
            index
                .set_version(&group("g"), &app("a"), &version(v))
                .unwrap();
        }
        assert_eq!(
            index.history(&group("g"), &app("a")),
            vec![version("v2"), version("v1")]
        );
        assert!(
            index
                .to_string()
                .contains("[history.g]\na = [\"v2\", \"v1\"]"),
            "{index}"
        );
        let any = |_: &Version| true;
        let back = |index: &mut Index| {
            let r = index.rollback(&group("g"), &app("a"), any).unwrap();
            (r.from, r.to)
        };
        assert_eq!(back(&mut index), (version("v3"), version("v2")));
        assert_eq!(back(&mut index), (version("v2"), version("v1")));
        let err = index.rollback(&group("g"), &app("a"), any).unwrap_err();
        assert!(matches!(err, IndexError::NoHistory { .. }), "{err}");
        assert_eq!(index.group(&group("g"))[&app("a")], version("v1"));
        let reparsed = Index::parse(&index.to_string()).unwrap();
        assert!(reparsed.history(&group("g"), &app("a")).is_empty());
    }

    #[test]
    fn rollback_passes_over_versions_that_never_served() {
        let mut index = Index::new();
        for v in ["v1", "v2", "v3", "v4"] {
            index
                .add_package(&app("a"), &version(v), &entry('a'))
                .unwrap();
            index
                .set_version(&group("g"), &app("a"), &version(v))
                .unwrap();
        }
        // v3 failed its health check everywhere; v2 served.
        let served = |v: &Version| v.as_str() != "v3";
        let rollback = index.rollback(&group("g"), &app("a"), served).unwrap();
        assert_eq!(
            (rollback.from, rollback.to, rollback.never_served),
            (version("v4"), version("v2"), vec![version("v3")])
        );
        assert_eq!(index.history(&group("g"), &app("a")), vec![version("v1")]);
        let none = |_: &Version| false;
        let err = index.rollback(&group("g"), &app("a"), none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "group g has no earlier version of a to roll back to (one version in its history never served on any server: v1)"
        );
        // A refused rollback changes nothing.
        assert_eq!(index.group(&group("g"))[&app("a")], version("v2"));
    }

    #[test]
    fn remove_keeps_the_packages() {
        let mut index = Index::new();
        index
            .add_package(&app("a"), &version("v1"), &entry('a'))
            .unwrap();
        index
            .set_version(&group("g"), &app("a"), &version("v1"))
            .unwrap();
        assert_eq!(
            index.remove_app(&group("g"), &app("a")).unwrap(),
            version("v1")
        );
        assert!(index.group(&group("g")).is_empty());
        assert!(index.package(&app("a"), &version("v1")).is_some());
        // A group that only has an env is known; one whose last app left (with no history) is
        // not any more: its servers' reports in the store keep it known to the controller.
        index.set_env_generation(&group("e"), &app("a"), 1);
        assert_eq!(
            index.known_groups().into_iter().collect::<Vec<_>>(),
            [group("e")]
        );
        index
            .set_version(&group("h"), &app("a"), &version("v1"))
            .unwrap();
        assert_eq!(
            index.known_groups().into_iter().collect::<Vec<_>>(),
            [group("e"), group("h")]
        );
        let err = index.remove_app(&group("g"), &app("a")).unwrap_err();
        assert_eq!(err.to_string(), "group g does not run app a");
    }

    #[test]
    fn edit_ids_are_kept_bounded_and_invisible_to_readers() {
        let mut index = Index::new();
        index
            .add_package(&app("a"), &version("v1"), &entry('a'))
            .unwrap();
        index.record_edit("first");
        let text = format!("{index}# someone's note\n");
        let mut index = Index::parse(&text).unwrap();
        assert_eq!(index.recent_edits(), ["first"]);
        for n in 0..RECENT_EDITS + 5 {
            index.record_edit(&format!("id{n}"));
            // An edit made after the ids: they stay at the end of the file.
            index
                .set_version(&group("g"), &app("a"), &version("v1"))
                .unwrap();
        }
        let text = index.to_string();
        let reread = Index::parse(&text).unwrap();
        let ids = reread.recent_edits();
        assert_eq!(ids.len(), RECENT_EDITS);
        assert_eq!(ids.first().unwrap(), "id5");
        assert_eq!(ids.last().unwrap(), &format!("id{}", RECENT_EDITS + 4));
        assert!(text.contains("# someone's note\n"), "{text}");
        assert!(
            text.trim_end()
                .ends_with(&format!("id{}", RECENT_EDITS + 4)),
            "{text}"
        );
        // Readers that know nothing of the ids (serde, as older builds) see a plain index.
        let plain: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(plain.as_table().unwrap().len(), 3, "{plain}");
        assert_eq!(reread.group(&group("g")).len(), 1);
    }

    #[test]
    fn versions_leave_the_index_and_the_policy_round_trips() {
        let text = "schema = 1\n# kept: the audit\n[apps.a.versions.v1]\nsha256 = \"aa\"\nsize = 1\nuploaded = \"x\"\n";
        let mut index = Index::parse(text).unwrap();
        index
            .add_package(&app("a"), &version("v2"), &entry('b'))
            .unwrap();
        index
            .add_package(&app("b"), &version("v1"), &entry('c'))
            .unwrap();
        assert_eq!(index.retention(), Policy::default());
        index.remove_versions(&[(app("a"), version("v2")), (app("b"), version("v1"))]);
        let out = index.to_string();
        assert!(
            out.contains("# kept: the audit\n[apps.a.versions.v1]"),
            "{out}"
        );
        assert!(!out.contains("v2") && !out.contains("apps.b"), "{out}");
        let policy = Policy {
            keep: 5,
            older_than: std::time::Duration::from_secs(7 * 86400),
            after_upload: false,
        };
        index.set_retention(&policy);
        let out = index.to_string();
        assert!(
            out.contains("[retention]\nkeep = 5\nolder_than = \"7days\"\nafter_upload = false\n"),
            "{out}"
        );
        assert_eq!(Index::parse(&out).unwrap().retention(), policy);
        let err = Index::parse("schema = 1\n[retention]\nolder_than = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
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
