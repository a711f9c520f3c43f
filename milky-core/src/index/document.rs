//! The two forms of `version.info`: the typed data read from it (serde, with its schema checked)
//! and the toml_edit tables that edits write into, so comments and layout survive.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml_edit::{DocumentMut, Item, Table};

use super::{IndexError, PackageEntry, SCHEMA};
use crate::names::{AppName, GroupName, Version};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IndexData {
    pub(super) schema: Option<i64>,
    #[serde(default)]
    pub(super) groups: BTreeMap<GroupName, BTreeMap<AppName, Version>>,
    #[serde(default)]
    pub(super) apps: BTreeMap<AppName, AppData>,
    /// Per group and app, the versions it ran before, most recent first (for rollback).
    #[serde(default)]
    pub(super) history: BTreeMap<GroupName, BTreeMap<AppName, Vec<Version>>>,
    /// Per group and app, the generation of its env object (`cargo milky env`): a change here
    /// tells agents to fetch the env and restart the app.
    #[serde(default)]
    pub(super) env: BTreeMap<GroupName, BTreeMap<AppName, u64>>,
    /// What `cargo milky prune` and uploads remove (see [`crate::retention`]).
    #[serde(default)]
    pub(super) retention: Option<crate::retention::PolicySettings>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AppData {
    #[serde(default)]
    pub(super) versions: BTreeMap<Version, PackageEntry>,
}

/// The typed form of a document, with its schema checked.
pub(super) fn typed(doc: &DocumentMut) -> Result<IndexData, IndexError> {
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

pub(super) fn implicit_table() -> Item {
    let mut table = Table::new();
    table.set_implicit(true);
    Item::Table(table)
}

/// The table at a dotted path, created (as implicit parents) where missing.
pub(super) fn table_at<'d>(doc: &'d mut DocumentMut, path: &[&str]) -> &'d mut Table {
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
