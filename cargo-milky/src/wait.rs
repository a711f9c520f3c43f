//! `--wait`: block until every live server of a group serves what the index wants for an app,
//! reading the servers' status reports from the store. What a CI release script needs.

use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use milky_core::status::{DEFAULT_STALE_AFTER, read_group, summarize};
use milky_core::{AppName, GroupName, Store};

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

/// Polls until `app` converged in `group`, one of its servers failed, or the timeout passed.
pub async fn until_converged(
    store: &Store,
    group: &GroupName,
    app: &AppName,
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
    loop {
        let Some((index, _)) = store.read_index().await? else {
            return Err(user_error("the store has no version.info"));
        };
        let wanted = index.group(group);
        let reports = read_group(store, group).await?;
        let summary = summarize(
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
        let Some(state) = summary.apps.get(app) else {
            printer.status(format!(
                "{group} has no live servers reporting {app}; nothing to wait for"
            ));
            return Ok(());
        };
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
