//! `cargo milky logs`: the servers' shipped logs, in time order, and their pruning.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use milky_core::logs::{self, Merge, SegmentKey, Source};
use milky_core::{AppName, GroupName, HostName, Store};

use crate::cli::GlobalArgs;
use crate::exit::user_error;
use crate::progress::Printer;
use crate::settings::Settings;

/// Segments fetched ahead of the one being printed.
const IN_FLIGHT: usize = 8;
/// A segment is a few MB of text; more than this is not a segment an agent wrote.
const MAX_SEGMENT: u64 = 256 << 20;

/// Print the logs the servers of a group shipped: nginx's access and error logs, each app's
/// Apache error log (tracebacks), the hooks' output (migrations) and the agents' own logs, merged
/// in time order and prefixed with the server's name.
///
/// Agents ship on every pass, so lines show up one pass (cron: up to 5 minutes) after they were
/// written. Servers are expected to keep UTC: nginx's and Apache's error logs carry no zone.
///
/// `logs GROUP` is short for `logs show GROUP`; a group named `show` or `prune` is read with
/// `logs show GROUP`.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  cargo milky logs stable\n  cargo milky logs show prune\n  cargo milky logs stable --app shop --source apache --since 2h\n  cargo milky logs stable --host web-1 --follow\n  cargo milky logs stable --since 2026-11-25T08:00:00Z --json | jq .line\n  cargo milky logs prune --older-than 30d"
)]
pub struct LogsArgs {
    #[command(subcommand)]
    pub command: Option<LogsCommand>,
    #[command(flatten)]
    pub show: ShowArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The group whose servers' logs to read
    #[arg(required = true)]
    pub group: Option<GroupName>,
    /// Only these servers (repeatable)
    #[arg(long, value_name = "HOST")]
    pub host: Vec<HostName>,
    /// Only this app's logs (leaves out the agents' and nginx's own)
    #[arg(long)]
    pub app: Option<AppName>,
    /// Only these sources (repeatable): nginx, apache, agent, hooks
    #[arg(long, value_name = "SOURCE")]
    pub source: Vec<Source>,
    /// From when: a duration back from now (90m, 2h, 3d), a date (2026-11-25) or an RFC 3339
    /// time (2026-11-25T08:00:00Z)
    #[arg(long, default_value = "1h", value_parser = parse_since)]
    pub since: Since,
    /// Keep printing lines as servers ship them, until Ctrl-C
    #[arg(short, long)]
    pub follow: bool,
    /// How often --follow looks for new segments
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// One JSON object per line (time, host, source, app, file, line) on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum LogsCommand {
    /// Print a group's logs, as `logs GROUP` does (also for a group named `show` or `prune`)
    Show(ShowArgs),
    /// Delete shipped logs older than a given age (or let an S3 lifecycle rule do it: see README)
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Delete the days that ended longer ago than this (30d, 12w)
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: Duration,
    /// Only these groups [default: every group with logs]
    pub groups: Vec<GroupName>,
    /// Say what would be deleted, delete nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// Unix seconds from which lines are printed.
#[derive(Debug, Clone, Copy)]
pub struct Since(i64);

fn parse_since(text: &str) -> Result<Since, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(Since(unix_now() - ago.as_secs() as i64));
    }
    if let Some(day) = logs::parse_day(text) {
        return Ok(Since(day));
    }
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .map(|t| Since(unix_secs(t)))
        .map_err(|_| {
            format!("{text:?} is neither a duration (2h), a date (2026-11-25) nor a time (2026-11-25T08:00:00Z)")
        })
}

pub async fn run(args: LogsArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let store = settings.open_store().await?;
    match args.command {
        Some(LogsCommand::Prune(prune_args)) => prune(&store, prune_args, printer).await,
        Some(LogsCommand::Show(show_args)) => show(&store, show_args).await,
        None => show(&store, args.show).await,
    }
}

/// One line to print.
#[derive(Debug, serde::Serialize)]
struct Line {
    #[serde(serialize_with = "rfc3339_millis")]
    time: i64,
    host: HostName,
    source: String,
    app: Option<AppName>,
    file: String,
    line: String,
}

fn rfc3339_millis<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    let time = UNIX_EPOCH + Duration::from_millis((*ms).max(0) as u64);
    s.collect_str(&humantime::format_rfc3339_millis(time))
}

async fn show(store: &Store, args: ShowArgs) -> anyhow::Result<()> {
    let group = args.group.clone().expect("clap requires the group");
    require_group(store, &group).await?;
    let since = args.since.0;
    let mut seen = BTreeSet::new();
    // The day before `since` too: a segment that began then may run into it.
    let segments = list_segments(store, &group, &args, since - 86_400, &mut seen).await?;
    if segments.is_empty() && !args.follow {
        let hosts = store.list_dirs(&logs::group_prefix(&group)).await?;
        if hosts.is_empty() {
            return Err(user_error(format!(
                "no server of {group} has shipped logs to {} yet (agents ship on every pass)",
                store.url()
            )));
        }
        eprintln!("no log lines of {group} since the given time");
        return Ok(());
    }
    print_segments(store, logs::select(segments, since), &args, since).await?;
    if !args.follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(args.interval).await;
        // Late segments (a server on a slower cron) print when they arrive, not in the past.
        let from = unix_now() - 86_400;
        let mut fresh = list_segments(store, &group, &args, from, &mut seen).await?;
        fresh.sort_by_key(|s| s.first);
        print_segments(store, fresh, &args, since).await?;
    }
}

/// The segments of the group's servers from the day of `from` to today that pass the filters and
/// are not in `seen` (which they are added to).
async fn list_segments(
    store: &Store,
    group: &GroupName,
    args: &ShowArgs,
    from: i64,
    seen: &mut BTreeSet<String>,
) -> anyhow::Result<Vec<SegmentKey>> {
    let mut hosts = Vec::new();
    for name in store.list_dirs(&logs::group_prefix(group)).await? {
        if let Ok(host) = name.parse::<HostName>()
            && (args.host.is_empty() || args.host.contains(&host))
        {
            hosts.push(host);
        }
    }
    let today = unix_now();
    let mut segments = Vec::new();
    for host in &hosts {
        let mut day = from;
        while day <= today + 86_400 {
            for key in store.list(&logs::day_prefix(group, host, day)).await? {
                let Some(segment) = SegmentKey::parse(&key) else {
                    continue;
                };
                let wanted = (args.source.is_empty()
                    || args.source.contains(&segment.stream.source))
                    && (args.app.is_none() || segment.stream.app == args.app);
                if wanted && seen.insert(key) {
                    segments.push(segment);
                }
            }
            day += 86_400;
        }
    }
    Ok(segments)
}

/// Fetches segments a few ahead and prints their lines from `since` on, merged in time order.
async fn print_segments(
    store: &Store,
    segments: Vec<SegmentKey>,
    args: &ShowArgs,
    since: i64,
) -> anyhow::Result<()> {
    let mut pending = segments.into_iter();
    let mut fetching = VecDeque::new();
    let mut merge = Merge::default();
    loop {
        while fetching.len() < IN_FLIGHT {
            let Some(segment) = pending.next() else { break };
            let store = store.clone();
            let key = segment.key();
            fetching.push_back((
                segment,
                tokio::spawn(async move { store.get(&key).await.map(|o| (key, o)) }),
            ));
        }
        let Some((segment, fetch)) = fetching.pop_front() else {
            break;
        };
        let (key, object) = fetch.await??;
        // Gone since it was listed (pruned): nothing to print.
        let Some(object) = object else { continue };
        let text =
            logs::gunzip(&object.bytes, MAX_SEGMENT).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        let text = String::from_utf8_lossy(&text);
        for timed in logs::timed_lines(&text, segment.first * 1000) {
            if timed.time_ms >= since * 1000 {
                merge.push(
                    timed.time_ms,
                    Line {
                        time: timed.time_ms,
                        host: segment.host.clone(),
                        source: segment.stream.source.to_string(),
                        app: segment.stream.app.clone(),
                        file: segment.stream.file.clone(),
                        line: timed.text,
                    },
                );
            }
        }
        // Every segment still to come begins at or after the next one's first line.
        let next = fetching.front().map(|(s, _)| s.first * 1000);
        if let Some(next) = next {
            print_lines(merge.take_before(Some(next)), args.json)?;
        }
    }
    print_lines(merge.take_before(None), args.json)
}

fn print_lines(lines: Vec<(i64, Line)>, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for (_, line) in lines {
        let written = if json {
            writeln!(out, "{}", serde_json::to_string(&line)?)
        } else {
            let from = match &line.app {
                Some(app) => format!("{}/{app}", line.source),
                None => line.source.clone(),
            };
            writeln!(out, "{} {from} | {}", line.host, line.line)
        };
        // A closed pipe (`| head`) ends the command quietly.
        if let Err(err) = written {
            crate::stdout::closed(&err);
        }
    }
    Ok(())
}

async fn prune(store: &Store, args: PruneArgs, printer: Printer) -> anyhow::Result<()> {
    let cutoff = unix_now() - args.older_than.as_secs() as i64;
    let groups: Vec<GroupName> = if args.groups.is_empty() {
        store
            .list_dirs(logs::PREFIX)
            .await?
            .into_iter()
            .filter_map(|g| g.parse().ok())
            .collect()
    } else {
        for group in &args.groups {
            require_group(store, group).await?;
        }
        args.groups
    };
    let (mut days, mut deleted) = (0usize, 0usize);
    for group in &groups {
        let prefix = logs::group_prefix(group);
        for host in store.list_dirs(&prefix).await? {
            for day in store.list_dirs(&format!("{prefix}{host}/")).await? {
                // Only whole days that ended before the cutoff.
                let Some(start) = logs::parse_day(&day) else {
                    continue;
                };
                if start + 86_400 > cutoff {
                    continue;
                }
                let keys = store.list(&format!("{prefix}{host}/{day}/")).await?;
                if keys.is_empty() {
                    continue;
                }
                days += 1;
                if args.dry_run {
                    printer.status(format!(
                        "would delete {} segments of {group}/{host} on {day}",
                        keys.len()
                    ));
                    deleted += keys.len();
                    continue;
                }
                for key in &keys {
                    store.delete(key).await?;
                }
                deleted += keys.len();
                printer.status(format!(
                    "deleted {} segments of {group}/{host} on {day}",
                    keys.len()
                ));
            }
        }
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    printer.status(format!(
        "{verb} {deleted} segments in {days} server-days older than {}",
        humantime::format_duration(args.older_than)
    ));
    Ok(())
}

/// An error listing the groups unless `group` is one, or has shipped logs.
async fn require_group(store: &Store, group: &GroupName) -> anyhow::Result<()> {
    if !store
        .list_dirs(&logs::group_prefix(group))
        .await?
        .is_empty()
    {
        return Ok(());
    }
    let index = store.read_index().await?.map(|(index, _)| index);
    crate::groups::require(store, index.as_ref(), group).await
}

fn unix_now() -> i64 {
    unix_secs(SystemTime::now())
}

fn unix_secs(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_dates_and_times() {
        let now = unix_now();
        let ago = parse_since("2h").unwrap().0;
        assert!((now - 7200 - ago).abs() <= 2);
        assert_eq!(parse_since("2026-11-25").unwrap().0, 1_795_564_800);
        assert_eq!(
            parse_since("2026-11-25T10:00:00Z").unwrap().0,
            1_795_600_800
        );
        assert!(parse_since("yesterday-ish").is_err());
    }
}
