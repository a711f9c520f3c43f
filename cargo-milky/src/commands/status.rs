//! `cargo milky status`: what the servers of each group report.

use std::collections::BTreeMap;
use std::time::SystemTime;

use clap::Args;
use milky_core::GroupName;
use milky_core::status::{GroupSummary, HostTls, read_group, summarize};

use crate::cli::GlobalArgs;
use crate::settings::Settings;

/// Show, per group and app, the wanted version, how many live servers serve it, which lag or
/// failed and why, each server's HTTPS certificate (a warning two weeks before it expires), and
/// which servers went stale (no report for longer than --stale-after).
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
    }
    if args.json {
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
            for host_tls in &state.tls {
                print_tls(host_tls);
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
    }
    if all.is_empty() {
        outln!("no groups yet");
    }
    Ok(())
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
