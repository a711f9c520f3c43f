//! `--wait`: block until every live server of a group serves what the index wants for an app,
//! reading the servers' status reports from the store. What a CI release script needs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use milky_core::status::{
    AppSummary, DEFAULT_STALE_AFTER, READ_CONCURRENCY, Report, ReportCache, read_group, summarize,
};
use milky_core::{AppName, GroupName, HostName, Store};

use crate::exit::user_error;
use crate::progress::Printer;

#[derive(Debug, Args, Clone)]
pub struct WaitArgs {
    /// Wait until every live server of the group serves the new version
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (e.g. 90s, 10m)
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, requires = "wait")]
    pub timeout: Duration,
    /// A server whose report is older than this is taken for dead and not waited for
    #[arg(long, default_value = "25m", value_parser = humantime::parse_duration)]
    pub stale_after: Duration,
}

impl Default for WaitArgs {
    fn default() -> Self {
        Self {
            wait: false,
            timeout: Duration::from_secs(600),
            stale_after: DEFAULT_STALE_AFTER,
        }
    }
}

/// The time of each server's last report, read before an edit of the index.
///
/// A report says which version failed, not under which env generation, and a server rewrites
/// its report only when something in it changes (or every ten minutes). So right after an env
/// edit, a server whose pass failed on the generation before still reports that failure. A
/// failure counts for the edit only in a report written since (its pass time differs from the
/// one read here); until then the server is one that has not tried the edit yet.
#[derive(Debug, Default)]
pub struct ReportsBefore(BTreeMap<HostName, String>);

impl ReportsBefore {
    pub async fn read(store: &Store, group: &GroupName) -> anyhow::Result<Self> {
        let reports = read_group(store, group).await?;
        Ok(Self(pass_times(&reports)))
    }
}

fn pass_times(reports: &[Report]) -> BTreeMap<HostName, String> {
    reports
        .iter()
        .filter_map(|(host, report)| Some((host.clone(), report.as_ref().ok()?.last_pass.clone())))
        .collect()
}

/// Moves the failures of servers that have not reported since `before` to the lagging ones:
/// they failed on what the group ran before `generation`, and will try it on their next pass.
fn failures_since(
    state: &mut AppSummary,
    now: &BTreeMap<HostName, String>,
    before: &ReportsBefore,
    generation: u64,
) {
    let (old, new): (Vec<_>, Vec<_>) =
        std::mem::take(&mut state.failed)
            .into_iter()
            .partition(|failed| {
                now.get(&failed.host).is_some()
                    && now.get(&failed.host) == before.0.get(&failed.host)
            });
    state.failed = new;
    for mut failed in old {
        failed.reason = Some(format!(
            "has not tried env generation {generation} yet; its last pass failed: {}",
            failed.reason.as_deref().unwrap_or("failed")
        ));
        state.lagging.push(failed);
    }
}

/// Polls until `app` converged in `group`, one of its servers failed, or the timeout passed.
pub async fn until_converged(
    store: &Store,
    group: &GroupName,
    app: &AppName,
    args: &WaitArgs,
    printer: Printer,
) -> anyhow::Result<()> {
    poll(store, group, app, None, args, printer).await
}

/// As [`until_converged`], after an env edit that wrote `generation`: a failure a server reported
/// before the edit (`before`) is not one of this generation.
pub async fn until_env_converged(
    store: &Store,
    group: &GroupName,
    app: &AppName,
    generation: u64,
    before: &ReportsBefore,
    args: &WaitArgs,
    printer: Printer,
) -> anyhow::Result<()> {
    poll(store, group, app, Some((generation, before)), args, printer).await
}

async fn poll(
    store: &Store,
    group: &GroupName,
    app: &AppName,
    env_edit: Option<(u64, &ReportsBefore)>,
    args: &WaitArgs,
    printer: Printer,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let bar = printer.counter(&format!("waiting for {group} to serve {app}"));
    let finish = || {
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
    };
    let mut last_line = String::new();
    // Each poll re-reads only the reports that changed since the one before.
    let mut cache = ReportCache::default();
    loop {
        let Some((index, _)) = store.read_index().await? else {
            return Err(user_error("the store has no version.info"));
        };
        let wanted = index.group(group);
        let poll_started = Instant::now();
        let reports = cache.read(store, group, READ_CONCURRENCY).await?;
        tracing::debug!(
            reports = reports.len(),
            fetched = cache.fetched,
            took_ms = poll_started.elapsed().as_millis() as u64,
            "read the reports"
        );
        let mut summary = summarize(
            &wanted,
            &index.env_generations(group),
            &reports,
            SystemTime::now(),
            args.stale_after,
        );
        let target = wanted
            .get(app)
            .map(ToString::to_string)
            .unwrap_or_else(|| "nothing".into());
        let Some(state) = summary.apps.get_mut(app) else {
            printer.status(format!(
                "{group} has no live servers reporting {app}; nothing to wait for"
            ));
            return Ok(());
        };
        if let Some((generation, before)) = env_edit {
            failures_since(state, &pass_times(&reports), before, generation);
        }
        let state = &*state;
        if summary.live.is_empty() {
            printer.status(format!(
                "{group} has no live servers; they will converge when they start"
            ));
            return Ok(());
        }
        let total = summary.live.len();
        let line = format!(
            "{app} {target} on {group}: {}/{total} servers",
            state.serving.len()
        );
        match &bar {
            Some(bar) => {
                bar.set_length(total as u64);
                bar.set_position(state.serving.len() as u64);
            }
            None if line != last_line => printer.status(&line),
            None => {}
        }
        last_line = line;
        if !state.failed.is_empty() {
            finish();
            let reasons: Vec<String> = state
                .failed
                .iter()
                .map(|f| format!("  {}: {}", f.host, f.reason.as_deref().unwrap_or("failed")))
                .collect();
            anyhow::bail!(
                "{app} {target} failed on {} of {total} servers of {group}:\n{}",
                state.failed.len(),
                reasons.join("\n")
            );
        }
        if state.converged() {
            finish();
            printer.status(format!(
                "all {total} live servers of {group} serve {app} {target}"
            ));
            return Ok(());
        }
        if started.elapsed() >= args.timeout {
            finish();
            let reasons: Vec<String> = state
                .lagging
                .iter()
                .map(|l| {
                    format!(
                        "  {}: serves {}{}",
                        l.host,
                        l.serving
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_else(|| "nothing".into()),
                        l.reason
                            .as_ref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            anyhow::bail!(
                "timed out after {} waiting for {group} to serve {app} {target}; {} of {total} servers lag:\n{}",
                humantime::format_duration(args.timeout),
                state.lagging.len(),
                reasons.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
