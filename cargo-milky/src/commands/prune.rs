//! `cargo milky prune`: old versions out of the index, then their packages out of the store.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;
use milky_core::once_hooks::Lease;
use milky_core::retention::{self, Doomed, Policy};
use milky_core::{AppName, GroupName, Index, Store, Version, layout};
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::progress::Printer;
use crate::settings::Settings;

/// Remove old versions: their index entries, then their packages.
///
/// A version goes when no group runs it or can roll back to it (its history), no server is
/// running its once hooks, it is not among the newest --keep of its app, and it was uploaded at
/// least --older-than ago. Nothing younger than one hour goes, whatever the flags say: a server
/// that read the index just before the edit may still be downloading it. The index is edited by
/// compare-and-swap first; a package is deleted only once the index no longer names it. The
/// once-hook records and served markers of versions the index no longer lists go too.
///
/// The index's [retention] policy (see --save) gives the defaults, and `cargo milky upload`
/// applies it after each upload; without one, the newest 20 versions of each app stay.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo milky prune --dry-run\n  cargo milky prune --keep 10 --older-than 30d\n  cargo milky prune --keep 50 --save"
)]
pub struct PruneArgs {
    /// The newest versions of each app that stay, in use or not [default: [retention] keep, else 20]
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// Only versions uploaded at least this long ago go; never less than 1h [default: [retention] older_than, else 1h]
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
    /// List what would go and how many bytes; change nothing
    #[arg(long, conflicts_with = "save")]
    pub dry_run: bool,
    /// Save --keep and --older-than as the index's [retention] policy, then prune. Needs agents
    /// of this version or newer: older ones refuse an index with a [retention] table
    #[arg(long)]
    pub save: bool,
    /// With --save: prune only when `cargo milky prune` runs, not after each upload
    #[arg(long, requires = "save")]
    pub manual: bool,
    /// Print what went (or would go) as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// What a prune removed, or would remove.
#[derive(Debug, Default, Serialize)]
pub struct Pruned {
    pub dry_run: bool,
    /// Index entries removed.
    pub versions: Vec<Doomed>,
    /// Packages deleted: those of `versions`, and any other the index does not name.
    pub packages: Vec<Gone>,
    /// Once-hook records and served markers of versions the index no longer lists.
    pub records: Vec<Gone>,
    /// The bytes of `packages` and `records`.
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Gone {
    pub key: String,
    pub size: u64,
}

#[derive(Debug, Serialize)]
struct Outcome<'a> {
    policy: Policy,
    #[serde(flatten)]
    pruned: &'a Pruned,
}

pub async fn run(args: PruneArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let store = settings.open_store().await?;
    let Some((index, _)) = store.read_index().await? else {
        printer.status("the store has no version.info: nothing to prune");
        return Ok(());
    };
    let saved = index.retention();
    let policy = Policy {
        keep: args.keep.unwrap_or(saved.keep),
        older_than: args.older_than.unwrap_or(saved.older_than),
        after_upload: if args.save {
            !args.manual
        } else {
            saved.after_upload
        },
    };
    if args.save {
        store
            .edit_index(|index| {
                index.set_retention(&policy);
                Ok::<_, std::convert::Infallible>(())
            })
            .await
            .context("saving the policy in version.info")?;
        printer.status(format!(
            "saved the policy: keep {} versions per app, older than {}, {}",
            policy.keep,
            humantime::format_duration(policy.min_age()),
            if policy.after_upload {
                "after each upload"
            } else {
                "when `cargo milky prune` runs"
            }
        ));
    }
    let pruned = prune(&store, &policy, args.dry_run).await?;
    if args.json {
        return super::print_json(&Outcome {
            policy,
            pruned: &pruned,
        });
    }
    print(&pruned);
    Ok(())
}

fn print(pruned: &Pruned) {
    let (would, verb) = if pruned.dry_run {
        ("would ", "remove")
    } else {
        ("", "removed")
    };
    if pruned.versions.is_empty() && pruned.packages.is_empty() && pruned.records.is_empty() {
        outln!("nothing to prune");
        return;
    }
    outln!(
        "{would}{verb} {} version(s) from the index",
        pruned.versions.len()
    );
    for doomed in &pruned.versions {
        outln!(
            "  {} {} ({}, uploaded {})",
            doomed.app,
            doomed.version,
            megabytes(doomed.size),
            doomed.uploaded
        );
    }
    let delete = if pruned.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    outln!("{delete} {} package(s)", pruned.packages.len());
    for gone in &pruned.packages {
        outln!("  {} ({})", gone.key, megabytes(gone.size));
    }
    if !pruned.records.is_empty() {
        outln!(
            "{delete} {} once-hook record(s) and served marker(s) of versions no longer listed",
            pruned.records.len()
        );
    }
    outln!(
        "{}: {}",
        if pruned.dry_run {
            "would free"
        } else {
            "freed"
        },
        megabytes(pruned.bytes)
    );
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Applies `policy` to the store: the index entries by compare-and-swap (re-selected on every
/// attempt, so a version uploaded or set meanwhile stays), then the packages and records of
/// versions the index no longer lists, each past the grace period. With `dry_run`, only says.
pub async fn prune(store: &Store, policy: &Policy, dry_run: bool) -> anyhow::Result<Pruned> {
    let now = SystemTime::now();
    let Some((index, _)) = store.read_index().await? else {
        return Ok(Pruned {
            dry_run,
            ..Pruned::default()
        });
    };
    let mut groups: BTreeSet<GroupName> = index.known_groups();
    groups.extend(
        store
            .list_dirs(layout::GROUPS)
            .await?
            .iter()
            .filter_map(|g| g.parse().ok()),
    );
    let busy = once_hooks_running(store, &groups, now).await?;
    let (versions, index) = if dry_run {
        let doomed = retention::select(&index, policy, &busy, now);
        let mut after = index;
        after.remove_versions(&keys(&doomed));
        (doomed, after)
    } else {
        store
            .edit_index(|index| {
                let doomed = retention::select(index, policy, &busy, now);
                index.remove_versions(&keys(&doomed));
                Ok::<_, std::convert::Infallible>(doomed)
            })
            .await
            .context("removing versions from version.info")?
    };
    let mut listed = retention::listed(&index);
    // What this prune took out of the index goes now; anything else unlisted once past the grace.
    let gone: BTreeSet<(AppName, Version)> = keys(&versions).into_iter().collect();
    let due = |app: &AppName, version: &Version, modified: Option<SystemTime>| {
        !named(&listed, app, version)
            && (gone.contains(&(app.clone(), version.clone()))
                || retention::past_grace(modified, now))
    };
    let mut packages = unlisted_packages(store, &due).await?;
    let mut records = Vec::new();
    for group in &groups {
        for prefix in [
            format!("{}{group}/once/", layout::GROUPS),
            format!("{}{group}/served/", layout::GROUPS),
        ] {
            records.extend(unlisted_records(store, &prefix, &due).await?);
        }
    }
    if !dry_run {
        // A version uploaded again under the same name since the edit keeps its package.
        if let Some((now_index, _)) = store.read_index().await? {
            listed = retention::listed(&now_index);
            packages.retain(|(app, version, _)| !named(&listed, app, version));
        }
        for (_, _, gone) in &packages {
            store.delete(&gone.key).await?;
        }
        for gone in &records {
            store.delete(&gone.key).await?;
        }
    }
    let packages: Vec<Gone> = packages.into_iter().map(|(_, _, gone)| gone).collect();
    let bytes = packages.iter().chain(&records).map(|g| g.size).sum();
    Ok(Pruned {
        dry_run,
        versions,
        packages,
        records,
        bytes,
    })
}

/// After an upload: prunes what the index's policy selects, if it says to and anything is due.
/// A failure here does not fail the upload; it is reported and left to `cargo milky prune`.
pub async fn after_upload(store: &Store, written: &Index, printer: Printer) {
    let policy = written.retention();
    if !policy.after_upload
        || retention::select(written, &policy, &BTreeSet::new(), SystemTime::now()).is_empty()
    {
        return;
    }
    match prune(store, &policy, false).await {
        Ok(pruned) if !pruned.versions.is_empty() || !pruned.packages.is_empty() => {
            printer.status(format!(
                "retention: removed {} old version(s), deleted {} package(s), freed {}",
                pruned.versions.len(),
                pruned.packages.len(),
                megabytes(pruned.bytes)
            ));
        }
        Ok(_) => {}
        Err(err) => printer.status(format!(
            "warning: the upload went through, but pruning old versions failed (`cargo milky prune` tries again): {err:#}"
        )),
    }
}

fn keys(doomed: &[Doomed]) -> Vec<(AppName, Version)> {
    doomed
        .iter()
        .map(|d| (d.app.clone(), d.version.clone()))
        .collect()
}

fn named(listed: &BTreeMap<AppName, BTreeSet<Version>>, app: &AppName, version: &Version) -> bool {
    listed
        .get(app)
        .is_some_and(|versions| versions.contains(version))
}

/// A version's object that may go: its app, version and when it was written.
type Due<'a> = dyn Fn(&AppName, &Version, Option<SystemTime>) -> bool + 'a;

/// The packages `due` selects: those of pruned versions, and any an interrupted upload or prune
/// left. A key that is not a package's stays.
async fn unlisted_packages(
    store: &Store,
    due: &Due<'_>,
) -> anyhow::Result<Vec<(AppName, Version, Gone)>> {
    let mut found = Vec::new();
    for entry in store.list_entries("packages/").await? {
        let Some((app, version)) = package_of(&entry.key) else {
            continue;
        };
        if due(&app, &version, entry.modified) {
            found.push((
                app,
                version,
                Gone {
                    key: entry.key,
                    size: entry.size,
                },
            ));
        }
    }
    Ok(found)
}

/// The app and version a package key names, if it is one (`layout::package` backwards).
fn package_of(key: &str) -> Option<(AppName, Version)> {
    let rest = key.strip_prefix("packages/")?;
    let (app, file) = rest.split_once('/')?;
    let app: AppName = app.parse().ok()?;
    let version: Version = file
        .strip_prefix(&format!("{app}-"))?
        .strip_suffix(".tar.bz2")?
        .parse()
        .ok()?;
    (layout::package(&app, &version) == key).then_some((app, version))
}

/// The objects `PREFIX<app>/<version>…` (once-hook records, served markers) `due` selects.
async fn unlisted_records(store: &Store, prefix: &str, due: &Due<'_>) -> anyhow::Result<Vec<Gone>> {
    let mut found = Vec::new();
    for entry in store.list_entries(prefix).await? {
        let Some(rest) = entry.key.strip_prefix(prefix) else {
            continue;
        };
        let mut parts = rest.split('/');
        let (Some(app), Some(version)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(app), Ok(version)) = (app.parse::<AppName>(), version.parse::<Version>()) else {
            continue;
        };
        if due(&app, &version, entry.modified) {
            found.push(Gone {
                key: entry.key,
                size: entry.size,
            });
        }
    }
    Ok(found)
}

/// Versions whose once hooks a server is running now: a lease neither finished nor expired.
async fn once_hooks_running(
    store: &Store,
    groups: &BTreeSet<GroupName>,
    now: SystemTime,
) -> anyhow::Result<BTreeSet<(AppName, Version)>> {
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut running = BTreeSet::new();
    for group in groups {
        let prefix = format!("{}{group}/once/", layout::GROUPS);
        let keys: BTreeSet<String> = store.list(&prefix).await?.into_iter().collect();
        for key in &keys {
            let Some(folder) = key.strip_suffix("lease.toml") else {
                continue;
            };
            if keys.contains(&layout::result_in(folder)) {
                continue;
            }
            let mut parts = folder[prefix.len()..].split('/');
            let (Some(Ok(app)), Some(Ok(version))) = (
                parts.next().map(str::parse::<AppName>),
                parts.next().map(str::parse::<Version>),
            ) else {
                continue;
            };
            let Some(object) = store.get(key).await? else {
                continue;
            };
            let held = Lease::parse(&String::from_utf8_lossy(&object.bytes))
                .map(|lease| !lease.finished && lease.expires > now_secs)
                // A lease that does not parse may be a newer agent's: keep its version.
                .unwrap_or(true);
            if held {
                running.insert((app, version));
            }
        }
    }
    Ok(running)
}

#[cfg(test)]
mod tests {
    #[test]
    fn package_keys_read_back_to_app_and_version() {
        let (app, version) = super::package_of("packages/shop/shop-v1.2.tar.bz2").unwrap();
        assert_eq!((app.as_str(), version.as_str()), ("shop", "v1.2"));
        assert!(super::package_of("packages/shop/other-v1.tar.bz2").is_none());
        assert!(super::package_of("packages/shop/shop-v1.tar.bz2.part").is_none());
        assert!(super::package_of("packages/readme").is_none());
    }
}
