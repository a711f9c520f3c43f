//! `cargo milky status`: what the servers of each group report.

use std::collections::BTreeMap;
use std::time::SystemTime;

use clap::Args;
use milky_core::signing::group_state::unix_now;
use milky_core::status::{GroupSummary, read_group, summarize};
use milky_core::{GroupName, Store};
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::settings::Settings;

/// Show, per group and app, the wanted version, how many live servers serve it, which lag or
/// failed and why, and which servers went stale (no report for longer than --stale-after).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  cargo milky status\n  cargo milky status stable --json")]
pub struct StatusArgs {
    /// Only this group [default: every group of the index]
    pub group: Option<GroupName>,
    /// A server whose report is older than this is shown as stale
    #[arg(long, default_value = "25m", value_parser = humantime::parse_duration)]
    pub stale_after: std::time::Duration,
    /// Print the status as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StatusArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let store = settings.open_store().await?;
    let index = store
        .read_index()
        .await?
        .map(|(index, _)| index)
        .unwrap_or_default();
    let groups: Vec<GroupName> = match args.group {
        Some(group) => {
            crate::groups::require(&store, Some(&index), &group).await?;
            vec![group]
        }
        None => index.groups().into_keys().collect(),
    };
    let mut all: BTreeMap<GroupName, GroupSummary> = BTreeMap::new();
    let mut states: BTreeMap<GroupName, SignedState> = BTreeMap::new();
    for group in groups {
        let reports = read_group(&store, &group).await?;
        all.insert(
            group.clone(),
            summarize(
                &index.group(&group),
                &index.env_generations(&group),
                &reports,
                SystemTime::now(),
                args.stale_after,
            ),
        );
        if let Some(state) = SignedState::read(&store, &group).await {
            states.insert(group, state);
        }
    }
    if args.json {
        let all: BTreeMap<_, _> = all
            .into_iter()
            .map(|(group, summary)| {
                let signed_state = states.remove(&group);
                (
                    group,
                    GroupStatus {
                        summary,
                        signed_state,
                    },
                )
            })
            .collect();
        return super::print_json(&all);
    }
    for (group, summary) in &all {
        outln!(
            "group {group}: {} live server(s){}",
            summary.live.len(),
            if summary.stale.is_empty() {
                String::new()
            } else {
                format!(", {} stale", summary.stale.len())
            }
        );
        for (app, state) in &summary.apps {
            let wanted = state
                .wanted
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "(removed)".into());
            let env = if state.env_generation > 0 {
                format!(" (env generation {})", state.env_generation)
            } else {
                String::new()
            };
            outln!(
                "  {app:<20} {wanted:<16} {}/{} serving{env}",
                state.serving.len(),
                summary.live.len()
            );
            for failed in &state.failed {
                outln!(
                    "    FAILED  {}: {}",
                    failed.host,
                    failed.reason.as_deref().unwrap_or("failed")
                );
            }
            for lag in &state.lagging {
                let serving = lag
                    .serving
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "nothing".into());
                outln!(
                    "    lagging {}: serves {serving}{}",
                    lag.host,
                    lag.reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
            }
        }
        for (host, age) in &summary.stale {
            outln!(
                "  stale   {host}: last report {} ago (`cargo milky hosts forget {group} {host}` drops it)",
                humantime::format_duration(std::time::Duration::from_secs(*age))
            );
        }
        for (host, err) in &summary.unreadable {
            outln!("  unreadable report of {host}: {err}");
        }
        print_not_verifying(summary);
        if let Some(state) = states.get(group) {
            outln!("  {state}");
        }
    }
    if all.is_empty() {
        outln!("no groups yet");
    }
    Ok(())
}

/// A group's status with its signed state, for `--json`.
#[derive(Serialize)]
struct GroupStatus {
    #[serde(flatten)]
    summary: GroupSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    signed_state: Option<SignedState>,
}

/// What `status` says of a group's signed state (`cargo milky sign-state`).
#[derive(Serialize)]
struct SignedState {
    generation: Option<u64>,
    expires: Option<String>,
    signed_by: Option<String>,
    expired: bool,
    /// Why it could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl SignedState {
    /// None when the group has no state: the store is not signing group state.
    async fn read(store: &Store, group: &GroupName) -> Option<Self> {
        let unreadable = |err: anyhow::Error| Self {
            generation: None,
            expires: None,
            signed_by: None,
            expired: false,
            error: Some(format!("{err:#}")),
        };
        let state = match crate::group_state::read(store, group).await {
            Ok(state) => state?,
            Err(err) => return Some(unreadable(err)),
        };
        Some(Self {
            generation: Some(state.generation),
            expired: state.expires_at().is_none_or(|at| at <= unix_now()),
            signed_by: state.signer().map(|id| id.to_string()),
            expires: Some(state.expires),
            error: None,
        })
    }
}

impl std::fmt::Display for SignedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(err) = &self.error {
            return write!(f, "signed state: unreadable: {err}");
        }
        write!(
            f,
            "signed state: generation {}, signed by {}, {} {}",
            self.generation.unwrap_or(0),
            self.signed_by.as_deref().unwrap_or("nobody"),
            if self.expired {
                "EXPIRED at"
            } else {
                "valid until"
            },
            self.expires.as_deref().unwrap_or("?")
        )?;
        if self.expired {
            write!(
                f,
                " (servers that require it install nothing new: `cargo milky sign-state`)"
            )?;
        }
        Ok(())
    }
}

/// Servers that would install an unsigned package: one line when it is every live server for
/// the same reason (a fleet without signing), else one per server.
fn print_not_verifying(summary: &GroupSummary) {
    let hosts = &summary.not_verifying;
    if let [(_, why), rest @ ..] = hosts.as_slice()
        && !rest.is_empty()
        && hosts.len() == summary.live.len()
        && rest.iter().all(|(_, other)| other == why)
    {
        outln!("  all {} live servers: {why}", hosts.len());
        return;
    }
    for (host, why) in hosts {
        outln!("  server {host} {why}");
    }
}
