//! `cargo milky hosts`: the servers' reports.

use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use milky_core::{GroupName, HostName, Index, layout};
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::exit::user_error;
use crate::progress::Printer;
use crate::settings::Settings;

/// List the servers that report to a group, or forget dead ones.
#[derive(Debug, Args)]
pub struct HostsArgs {
    #[command(subcommand)]
    pub command: HostsCommand,
}

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Drop a server's report (a server that is gone for good), or every report not rewritten for
    /// longer than --older-than; a live server writes its report again on its next pass
    #[command(
        after_help = "Examples:\n  cargo milky hosts forget stable web-7\n  cargo milky hosts forget stable --older-than 7d --dry-run\n  cargo milky hosts forget --older-than 30d"
    )]
    Forget(ForgetArgs),
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The group [default with --older-than: every group]
    #[arg(required_unless_present = "older_than")]
    pub group: Option<GroupName>,
    /// The server whose report goes
    #[arg(conflicts_with = "older_than")]
    pub host: Option<HostName>,
    /// Forget every report (of GROUP, else of every group) not rewritten for this long. A live
    /// server rewrites its report at least every 10 minutes; at least 1h is required
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
    /// List the reports that would be forgotten; delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the forgotten reports as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Forgotten {
    group: GroupName,
    host: HostName,
    /// Seconds since the report was last written.
    age_secs: u64,
}

pub async fn run(args: HostsArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let store = settings.open_store().await?;
    let HostsCommand::Forget(args) = args.command;
    match (args.group, args.host, args.older_than) {
        (Some(group), Some(host), None) => {
            let key = layout::host_status(&group, &host);
            if store.head(&key).await?.is_none() {
                return Err(user_error(format!("{group} has no report from {host}")));
            }
            if !args.dry_run {
                store.delete(&key).await?;
            }
            let verb = if args.dry_run {
                "would forget"
            } else {
                "forgot"
            };
            printer.status(format!("{verb} {host} in {group}"));
            Ok(())
        }
        (group, None, Some(older_than)) => {
            if older_than < milky_core::retention::GRACE {
                return Err(user_error(format!(
                    "--older-than {} would forget live servers (they rewrite their report every 10 minutes); give at least 1h",
                    humantime::format_duration(older_than)
                )));
            }
            let groups: Vec<GroupName> = match group {
                Some(group) => vec![group],
                None => all_groups(&store).await?,
            };
            let now = SystemTime::now();
            let mut forgotten = Vec::new();
            for group in groups {
                let prefix = layout::host_status_prefix(&group);
                for entry in store.list_entries(&prefix).await? {
                    let Some(host) = entry
                        .key
                        .strip_prefix(&prefix)
                        .and_then(|k| k.strip_suffix(".toml"))
                        .and_then(|h| h.parse::<HostName>().ok())
                    else {
                        continue;
                    };
                    let Some(age) = entry.modified.and_then(|at| now.duration_since(at).ok())
                    else {
                        continue;
                    };
                    if age < older_than {
                        continue;
                    }
                    if !args.dry_run {
                        store.delete(&entry.key).await?;
                    }
                    forgotten.push(Forgotten {
                        group: group.clone(),
                        host,
                        age_secs: age.as_secs(),
                    });
                }
            }
            if args.json {
                return super::print_json(&forgotten);
            }
            let verb = if args.dry_run {
                "would forget"
            } else {
                "forgot"
            };
            for f in &forgotten {
                outln!(
                    "{verb} {} in {}: last report {} ago",
                    f.host,
                    f.group,
                    humantime::format_duration(Duration::from_secs(f.age_secs))
                );
            }
            printer.status(format!(
                "{verb} {} report(s) older than {}",
                forgotten.len(),
                humantime::format_duration(older_than)
            ));
            Ok(())
        }
        _ => Err(user_error(
            "give GROUP HOST to forget one server, or --older-than AGE [GROUP] to forget every stale one",
        )),
    }
}

/// The groups of the index and those with anything in the store.
async fn all_groups(store: &milky_core::Store) -> anyhow::Result<Vec<GroupName>> {
    let index = store.read_index().await?.map(|(index, _)| index);
    let mut groups = index.as_ref().map(Index::known_groups).unwrap_or_default();
    groups.extend(
        store
            .list_dirs(layout::GROUPS)
            .await?
            .iter()
            .filter_map(|g| g.parse().ok()),
    );
    Ok(groups.into_iter().collect())
}
