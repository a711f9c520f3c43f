//! `cargo milky status`: what the servers of each group report.

use std::collections::BTreeMap;
use std::time::SystemTime;

use clap::Args;
use milky_core::signing::group_state::unix_now;
use milky_core::status::{GroupSummary, HostTls, READ_CONCURRENCY, ReportCache, summarize};
use milky_core::{GroupName, Store};
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::settings::Settings;

/// Show, per group and app, the wanted version, how many live servers serve it, which lag or
/// failed and why, each server's HTTPS certificate (a warning two weeks before it expires), and
/// which servers went stale (no report for longer than --stale-after).
///
/// Reports are read 64 at a time. A large group is summarised: counts per state, then the
/// failed and lagging servers (the first ten of each), the rest elided; --all lists every
/// server. --json is always complete.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo milky status\n  cargo milky status stable --all\n  cargo milky status stable --json"
)]
pub struct StatusArgs {
    /// Only this group [default: every group of the index]
    pub group: Option<GroupName>,
    /// A server whose report is older than this is shown as stale
    #[arg(long, default_value = "25m", value_parser = humantime::parse_duration)]
    pub stale_after: std::time::Duration,
    /// List every server, however many (the text output shows ten per list and counts the rest)
    #[arg(long)]
    pub all: bool,
    /// Print the status as JSON on stdout (always every server)
    #[arg(long)]
    pub json: bool,
    /// Reports read at once (1: one after another, the benchmark's baseline)
    #[arg(long, hide = true, default_value_t = READ_CONCURRENCY)]
    pub read_concurrency: usize,
}

/// Servers listed per list and app unless --all.
const SHOWN: usize = 10;

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
        let reports = ReportCache::default()
            .read(&store, &group, args.read_concurrency)
            .await?;
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
    let limit = if args.all { usize::MAX } else { SHOWN };
    for (group, summary) in &all {
        print_group(group, summary, limit);
        if let Some(state) = states.get(group) {
            outln!("  {state}");
        }
    }
    if all.is_empty() {
        outln!("no groups yet");
    }
    Ok(())
}

fn print_group(group: &GroupName, summary: &GroupSummary, limit: usize) {
    outln!(
        "group {group}: {} live server(s){}",
        summary.live.len(),
        if summary.stale.is_empty() {
            String::new()
        } else {
            format!(", {} stale", summary.stale.len())
        }
    );
    let mut elided = 0;
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
        let mut counts = Vec::new();
        if !state.failed.is_empty() {
            counts.push(format!("{} failed", state.failed.len()));
        }
        if !state.lagging.is_empty() {
            counts.push(format!("{} lagging", state.lagging.len()));
        }
        let counts = if counts.is_empty() {
            String::new()
        } else {
            format!("; {}", counts.join(", "))
        };
        outln!(
            "  {app:<20} {wanted:<16} {}/{} serving{env}{counts}",
            state.serving.len(),
            summary.live.len()
        );
        for failed in state.failed.iter().take(limit) {
            outln!(
                "    FAILED  {}: {}",
                failed.host,
                failed.reason.as_deref().unwrap_or("failed")
            );
        }
        for host_tls in &state.tls {
            print_tls(host_tls);
        }
        for lag in state.lagging.iter().take(limit) {
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
        elided += more(
            &format!("    … {app}:"),
            &[
                ("failed", state.failed.len()),
                ("lagging", state.lagging.len()),
            ],
            limit,
        );
    }
    for (host, age) in summary.stale.iter().take(limit) {
        outln!(
            "  stale   {host}: last report {} ago (`cargo milky hosts forget {group} {host}` drops it)",
            humantime::format_duration(std::time::Duration::from_secs(*age))
        );
    }
    // Every stuck pass is listed: each one freezes its server.
    for (host, stuck) in &summary.stuck {
        outln!(
            "  STUCK   {host}: {}; no other pass runs there until it ends",
            stuck.describe()
        );
    }
    for (host, err) in summary.unreadable.iter().take(limit) {
        outln!("  unreadable report of {host}: {err}");
    }
    elided += more(
        "  …",
        &[
            ("stale", summary.stale.len()),
            ("unreadable", summary.unreadable.len()),
        ],
        limit,
    );
    elided += print_not_verifying(summary, limit);
    if elided > 0 {
        outln!(
            "  ({elided} servers not listed: `cargo milky status {group} --all` lists every one, --json too)"
        );
    }
}

/// "    … shop: 990 more lagging" for the lists longer than `limit`; returns how many were left out.
fn more(lead: &str, lists: &[(&str, usize)], limit: usize) -> usize {
    let parts: Vec<String> = lists
        .iter()
        .filter(|(_, len)| *len > limit)
        .map(|(what, len)| format!("{} more {what}", len - limit))
        .collect();
    if !parts.is_empty() {
        outln!("{lead} {}", parts.join(", "));
    }
    lists.iter().map(|(_, len)| len.saturating_sub(limit)).sum()
}

/// An app's HTTPS on one server: mode, certificate names and expiry, then any warning or error.
fn print_tls(host_tls: &HostTls) {
    let tls = &host_tls.tls;
    let certificate = match &tls.expires {
        Some(expires) => format!(": {} until {expires}", tls.names.join(", ")),
        None if tls.mode == "proxy" => String::new(),
        None => ": no certificate installed".to_owned(),
    };
    outln!("    tls {} on {}{certificate}", tls.mode, host_tls.host);
    if let Some(warning) = &host_tls.warning {
        outln!("    WARNING {}: {warning}", host_tls.host);
    }
    if let Some(error) = &tls.error {
        outln!("    tls error on {}: {error}", host_tls.host);
    }
    if let Some(error) = &tls.renewal_error {
        outln!(
            "    tls renewal failed (seen by {}): {error}",
            host_tls.host
        );
    }
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
/// the same reason (a fleet without signing), else one per server. Returns how many were left out.
fn print_not_verifying(summary: &GroupSummary, limit: usize) -> usize {
    let hosts = &summary.not_verifying;
    if let [(_, why), rest @ ..] = hosts.as_slice()
        && !rest.is_empty()
        && hosts.len() == summary.live.len()
        && rest.iter().all(|(_, other)| other == why)
    {
        outln!("  all {} live servers: {why}", hosts.len());
        return 0;
    }
    for (host, why) in hosts.iter().take(limit) {
        outln!("  server {host} {why}");
    }
    more(
        "  …",
        &[("servers that do not verify signatures", hosts.len())],
        limit,
    )
}
