//! `cargo milky info`: what the index says.

use std::collections::BTreeMap;

use clap::Args;
use milky_core::{AppName, GroupName, PackageEntry, Version};
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::settings::Settings;

/// List every group with its apps and versions, and every uploaded version of each app.
///
/// Each version shows the id of the key that signed it, as the index says; servers check the
/// signature itself against their own trusted keys.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print the index as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Info {
    store: String,
    groups: BTreeMap<GroupName, BTreeMap<AppName, Version>>,
    apps: BTreeMap<AppName, BTreeMap<Version, PackageEntry>>,
}

pub async fn run(args: InfoArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let store = settings.open_store().await?;
    let index = store
        .read_index()
        .await?
        .map(|(index, _)| index)
        .unwrap_or_default();
    let info = Info {
        store: store.url(),
        groups: index.groups(),
        apps: index.apps(),
    };
    if args.json {
        return super::print_json(&info);
    }
    outln!("store: {}", info.store);
    outln!();
    if info.groups.is_empty() {
        outln!("no groups yet: `cargo milky upload --new-group --group GROUP DIR` creates one");
    }
    for (group, apps) in &info.groups {
        outln!("group {group}");
        if apps.is_empty() {
            outln!("  (no apps)");
        }
        for (app, version) in apps {
            outln!("  {app:<24} {version}");
        }
    }
    if !info.apps.is_empty() {
        outln!();
        outln!("uploaded versions");
    }
    for (app, versions) in &info.apps {
        outln!("  {app}");
        for (version, entry) in versions {
            let running: Vec<&str> = info
                .groups
                .iter()
                .filter(|(_, apps)| apps.get(app) == Some(version))
                .map(|(group, _)| group.as_str())
                .collect();
            let running = if running.is_empty() {
                String::new()
            } else {
                format!("  ← {}", running.join(", "))
            };
            let signed = match milky_core::signing::signer(entry) {
                Some(id) => format!("signed {id}"),
                None if entry.signature.is_some() => "signature malformed".into(),
                None => "unsigned".into(),
            };
            outln!(
                "    {version:<22} {:>12} bytes  {}  sha256 {}  {signed}{running}",
                entry.size,
                entry.uploaded,
                &entry.sha256[..entry.sha256.len().min(12)]
            );
        }
    }
    Ok(())
}
