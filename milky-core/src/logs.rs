//! Server logs in the store: how agents name the segments they ship and how `cargo milky logs`
//! reads them back in time order.
//!
//! A segment is a gzip of whole lines cut from one log file on one server, at
//! `logs/<group>/<host>/<YYYY-MM-DD>/<source>/<app or _>/<HHMMSS>-<file>-<inode>-<gen>-<offset>.gz`.
//! The key is a function of the bytes it holds (the file's inode, how often the agent saw it
//! truncated, the offset they start at and the time of their first line), so an agent that crashed after an upload and ships the same
//! bytes again writes the same key: the copy replaces the first instead of doubling it.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use crate::names::{AppName, GroupName, HostName};

/// Every shipped segment lives under this prefix.
pub use crate::layout::LOGS as PREFIX;

/// Where a log line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// nginx's access and error logs, per app (`_`: requests no app claimed, nginx itself).
    Nginx,
    /// The error log of an app's Apache slot: mod_wsgi's messages and the app's tracebacks.
    Apache,
    /// The agent's own log.
    Agent,
    /// The output of the package's hooks (migrations, collectstatic).
    Hooks,
}

impl Source {
    pub const ALL: [Source; 4] = [Source::Nginx, Source::Apache, Source::Agent, Source::Hooks];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Nginx => "nginx",
            Source::Apache => "apache",
            Source::Agent => "agent",
            Source::Hooks => "hooks",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::ALL
            .into_iter()
            .find(|source| source.as_str() == s)
            .ok_or_else(|| format!("unknown log source {s:?} (nginx, apache, agent or hooks)"))
    }
}

/// One log file's identity across rotations: its source, its app and which of the app's files
/// it is (`access`, `error`, `blue`, `green`, `agent`, `hooks`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stream {
    pub source: Source,
    pub app: Option<AppName>,
    pub file: String,
}

impl Stream {
    pub fn new(source: Source, app: Option<AppName>, file: &str) -> Self {
        debug_assert!(is_file_tag(file), "file tags are [a-z0-9]+: {file}");
        Stream {
            source,
            app,
            file: file.to_owned(),
        }
    }

    /// `nginx/shop/access`, `agent/_/agent`: how the stream shows in output.
    pub fn label(&self) -> String {
        format!("{}/{}/{}", self.source, self.app_str(), self.file)
    }

    fn app_str(&self) -> &str {
        self.app.as_ref().map_or("_", AppName::as_str)
    }
}

fn is_file_tag(file: &str) -> bool {
    !file.is_empty()
        && file
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The key of one shipped segment, and everything the key tells about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentKey {
    pub group: GroupName,
    pub host: HostName,
    pub stream: Stream,
    /// Unix seconds of the segment's first line with a time stamp.
    pub first: i64,
    /// The file the bytes were cut from, and where in it they start.
    pub inode: u64,
    /// Bumped when the file was truncated (or its inode reused): offset 0 again is other bytes.
    pub generation: u32,
    pub offset: u64,
}

impl SegmentKey {
    pub fn key(&self) -> String {
        let (day, hms) = split_time(self.first);
        format!(
            "{}/{}/{day}/{}/{}/{hms}-{}-{}-{}-{}.gz",
            group_prefix(&self.group).trim_end_matches('/'),
            self.host,
            self.stream.source,
            self.stream.app_str(),
            self.stream.file,
            self.inode,
            self.generation,
            self.offset
        )
    }

    /// The inverse of [`SegmentKey::key`]; `None` for anything else found under `logs/`.
    pub fn parse(key: &str) -> Option<Self> {
        let rest = key.strip_prefix(PREFIX)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [group, host, day, source, app, name] = parts[..] else {
            return None;
        };
        let name = name.strip_suffix(".gz")?;
        let [hms, file, inode, generation, offset] = name.split('-').collect::<Vec<_>>()[..] else {
            return None;
        };
        let app = match app {
            "_" => None,
            app => Some(AppName::new(app).ok()?),
        };
        if !is_file_tag(file) {
            return None;
        }
        Some(SegmentKey {
            group: GroupName::new(group).ok()?,
            host: HostName::new(host).ok()?,
            stream: Stream::new(source.parse().ok()?, app, file),
            first: join_time(day, hms)?,
            inode: inode.parse().ok()?,
            generation: generation.parse().ok()?,
            offset: offset.parse().ok()?,
        })
    }
}

/// `logs/<group>/`: every host of the group below it.
pub fn group_prefix(group: &GroupName) -> String {
    crate::layout::logs_group_prefix(group)
}

/// `logs/<group>/<host>/<YYYY-MM-DD>/`: one host's segments whose first line is of that day.
pub fn day_prefix(group: &GroupName, host: &HostName, unix_secs: i64) -> String {
    format!("{}{host}/{}/", group_prefix(group), split_time(unix_secs).0)
}

/// The day of a day prefix's last component (`2026-11-25`), as unix seconds at its midnight.
pub fn parse_day(day: &str) -> Option<i64> {
    join_time(day, "000000")
}

fn split_time(unix_secs: i64) -> (String, String) {
    // Segment times come from parsed log lines or the agent's clock: always in range.
    let t = OffsetDateTime::from_unix_timestamp(unix_secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    (
        format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
        format!("{:02}{:02}{:02}", t.hour(), t.minute(), t.second()),
    )
}

fn join_time(day: &str, hms: &str) -> Option<i64> {
    let mut fields = day.split('-');
    let y = fields.next()?.parse().ok()?;
    let m = fields.next()?.parse().ok()?;
    let d = fields.next()?.parse().ok()?;
    if fields.next().is_some() || hms.len() != 6 || !hms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| hms[i..i + 2].parse::<i64>().ok();
    Some(timestamp(y, m, d, n(0)?, n(2)?, n(4)?)?.div_euclid(1000))
}

// ---- time stamps in log lines ------------------------------------------------------------------

/// The time stamp of a log line in milliseconds since the epoch, from the formats the servers
/// write: RFC 3339 at the start (the agent, hooks), `2026/11/25 10:00:00` (nginx's error log),
/// `[Wed Nov 25 10:00:00.123456 2026]` (Apache's error log), `[25/Nov/2026:10:00:00 +0000]`
/// (nginx's access log). nginx's and Apache's error logs carry no zone: they are read as UTC,
/// the clock servers are expected to keep.
pub fn line_time(line: &str) -> Option<i64> {
    rfc3339(line)
        .or_else(|| nginx_error(line))
        .or_else(|| apache_error(line))
        .or_else(|| common_log(line))
}

fn rfc3339(line: &str) -> Option<i64> {
    let token = line.split_whitespace().next()?;
    let b = token.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let time = humantime::parse_rfc3339_weak(token.trim_end_matches('Z')).ok()?;
    let millis = time.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(millis).ok()
}

fn nginx_error(line: &str) -> Option<i64> {
    let head = line.get(..19)?;
    let b = head.as_bytes();
    if b[4] != b'/' || b[7] != b'/' || b[10] != b' ' || b[13] != b':' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| head.get(r)?.parse::<i64>().ok();
    timestamp(
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    )
}

fn apache_error(line: &str) -> Option<i64> {
    // [Wed Nov 25 10:00:00.123456 2026]
    let inner = line.strip_prefix('[')?.split(']').next()?;
    let fields: Vec<&str> = inner.split_whitespace().collect();
    let [_, month, day, clock, year] = fields[..] else {
        return None;
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let mut hms = hms.split(':').map(|f| f.parse::<i64>().ok());
    let millis = format!("{fraction:0<3}").get(..3)?.parse::<i64>().ok()?;
    let base = timestamp(
        year.parse().ok()?,
        month_number(month)?,
        day.parse().ok()?,
        hms.next()??,
        hms.next()??,
        hms.next()??,
    )?;
    Some(base + millis)
}

fn common_log(line: &str) -> Option<i64> {
    // ... [25/Nov/2026:10:00:00 +0000] "GET / ..."
    let start = line.find(" [")? + 2;
    let inner = line.get(start..)?.split(']').next()?;
    let (stamp, zone) = inner.split_once(' ')?;
    let mut parts = stamp.split(['/', ':']);
    let day = parts.next()?.parse().ok()?;
    let month = month_number(parts.next()?)?;
    let year = parts.next()?.parse().ok()?;
    let mut n = || parts.next()?.parse::<i64>().ok();
    let base = timestamp(year, month, day, n()?, n()?, n()?)?;
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hours: i64 = zone.get(1..3)?.parse().ok()?;
    let minutes: i64 = zone.get(3..5)?.parse().ok()?;
    Some(base - sign * (hours * 3600 + minutes * 60) * 1000)
}

fn month_number(name: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|m| *m == name).map(|i| i as i64 + 1)
}

/// Milliseconds since the epoch of a UTC civil time; `None` for a date or time that does not
/// exist (Feb 31, hour 24). A leap second (:60) counts as the second after :59.
fn timestamp(y: i64, m: i64, d: i64, hh: i64, mm: i64, ss: i64) -> Option<i64> {
    if !(1970..=9999).contains(&y) || !(0..=60).contains(&ss) {
        return None;
    }
    let field = |n: i64| u8::try_from(n).ok();
    let month = Month::try_from(field(m)?).ok()?;
    let date = Date::from_calendar_date(i32::try_from(y).ok()?, month, field(d)?).ok()?;
    let time = Time::from_hms(field(hh)?, field(mm)?, field(ss.min(59))?).ok()?;
    let secs = PrimitiveDateTime::new(date, time)
        .assume_utc()
        .unix_timestamp();
    Some((secs + (ss - 59).max(0)) * 1000)
}

// ---- segments ------------------------------------------------------------------------------------

/// One line of a segment with the time it is sorted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedLine {
    pub time_ms: i64,
    pub text: String,
}

/// The lines of a segment, each with its time stamp; a line without one (a traceback's
/// continuation) takes the time of the line before it, the first ones `first_ms`.
pub fn timed_lines(text: &str, first_ms: i64) -> Vec<TimedLine> {
    let mut last = first_ms;
    text.lines()
        .map(|line| {
            if let Some(time) = line_time(line) {
                last = time;
            }
            TimedLine {
                time_ms: last,
                text: line.to_owned(),
            }
        })
        .collect()
}

/// The time of a segment's first stamped line, if any.
pub fn first_time(text: &str) -> Option<i64> {
    text.lines().find_map(line_time)
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// Decompresses a segment, refusing more than `limit` bytes (a segment is a few MB).
pub fn gunzip(bytes: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "decompresses to more than {limit} bytes"
        )));
    }
    Ok(out)
}

// ---- reading -------------------------------------------------------------------------------------

/// The segments to read for lines from `since` (unix seconds) on, in the order to read them:
/// those that begin at or after `since`, and of each host's stream the last one that begins
/// before it (its lines may run past `since`).
pub fn select(mut segments: Vec<SegmentKey>, since: i64) -> Vec<SegmentKey> {
    segments.sort_by(|a, b| order(a).cmp(&order(b)));
    let mut latest_before = std::collections::BTreeMap::new();
    for (i, segment) in segments.iter().enumerate() {
        if segment.first < since {
            latest_before.insert((&segment.host, &segment.stream), i);
        }
    }
    let keep: std::collections::BTreeSet<usize> = latest_before.into_values().collect();
    segments
        .into_iter()
        .enumerate()
        .filter(|(i, s)| s.first >= since || keep.contains(i))
        .map(|(_, s)| s)
        .collect()
}

fn order(s: &SegmentKey) -> (i64, &HostName, &Stream, u64, u32, u64) {
    (s.first, &s.host, &s.stream, s.inode, s.generation, s.offset)
}

/// Puts lines of several segments in time order while they stream in: segments arrive in the
/// order of their first line's time, so once a segment that begins at `t` is next, every line
/// before `t` is final.
#[derive(Debug)]
pub struct Merge<T> {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(i64, u64, Slot<T>)>>,
    seq: u64,
}

/// A heap entry that never compares its payload (the sequence number settles ties).
#[derive(Debug)]
struct Slot<T>(T);

impl<T> PartialEq for Slot<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> Eq for Slot<T> {}
impl<T> PartialOrd for Slot<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Slot<T> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<T> Default for Merge<T> {
    fn default() -> Self {
        Merge {
            heap: std::collections::BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<T> Merge<T> {
    pub fn push(&mut self, time_ms: i64, item: T) {
        self.seq += 1;
        self.heap
            .push(std::cmp::Reverse((time_ms, self.seq, Slot(item))));
    }

    /// Takes out, in order, every item before `time_ms` (`None`: all of them).
    pub fn take_before(&mut self, time_ms: Option<i64>) -> Vec<(i64, T)> {
        let mut out = Vec::new();
        while let Some(std::cmp::Reverse((time, _, _))) = self.heap.peek() {
            if time_ms.is_some_and(|limit| *time >= limit) {
                break;
            }
            let std::cmp::Reverse((time, _, Slot(item))) = self.heap.pop().expect("peeked");
            out.push((time, item));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV_25_10H: i64 = 1_795_600_800_000; // 2026-11-25T10:00:00Z

    #[test]
    fn every_server_format_is_read_as_utc() {
        assert_eq!(
            line_time("2026-11-25T10:00:00.250000Z  INFO up to date"),
            Some(NOV_25_10H + 250)
        );
        assert_eq!(
            line_time("2026/11/25 10:00:00 [error] 12#12: *1 connect() failed"),
            Some(NOV_25_10H)
        );
        assert_eq!(
            line_time("[Wed Nov 25 10:00:00.123456 2026] [wsgi:error] [pid 7] Traceback"),
            Some(NOV_25_10H + 123)
        );
        assert_eq!(
            line_time(r#"127.0.0.1 - - [25/Nov/2026:11:00:00 +0100] "GET / HTTP/1.1" 200 5"#),
            Some(NOV_25_10H)
        );
        assert_eq!(line_time("  File \"views.py\", line 3, in index"), None);
        assert_eq!(line_time("[not a date] at all"), None);
        assert_eq!(line_time(""), None);
    }

    #[test]
    fn continuation_lines_take_the_time_before_them() {
        let text = "[Wed Nov 25 10:00:00.000000 2026] Traceback\n  File x\n";
        let lines = timed_lines(text, 7);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].time_ms, NOV_25_10H);
        assert_eq!(timed_lines("no stamp\n", 7)[0].time_ms, 7);
    }

    #[test]
    fn segment_keys_round_trip() {
        let key = SegmentKey {
            group: GroupName::new("stable").unwrap(),
            host: HostName::new("web-1.eu").unwrap(),
            stream: Stream::new(Source::Nginx, Some(AppName::new("shop").unwrap()), "access"),
            first: NOV_25_10H / 1000 + 3723,
            inode: 42,
            generation: 3,
            offset: 1024,
        };
        let text = key.key();
        assert_eq!(
            text,
            "logs/stable/web-1.eu/2026-11-25/nginx/shop/110203-access-42-3-1024.gz"
        );
        assert_eq!(SegmentKey::parse(&text), Some(key.clone()));
        let agent = SegmentKey {
            stream: Stream::new(Source::Agent, None, "agent"),
            ..key
        };
        assert_eq!(SegmentKey::parse(&agent.key()), Some(agent));
        for bad in [
            "logs/stable/web-1/2026-11-25/nginx/shop/110203-access-42-0.gz",
            "logs/stable/web-1/2026-13-25/nginx/shop/110203-access-42-0-0.gz",
            "logs/stable/web-1/2026-11-25/mail/shop/110203-access-42-0-0.gz",
            "logs/stable/web-1/2026-11-25/nginx/shop/110203-access-42-0-0.txt",
            "version.info",
        ] {
            assert_eq!(SegmentKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn reading_from_a_time_keeps_the_segment_that_runs_into_it() {
        let segment = |host: &str, file: &str, first: i64| SegmentKey {
            group: GroupName::new("g").unwrap(),
            host: HostName::new(host).unwrap(),
            stream: Stream::new(Source::Nginx, None, file),
            first,
            inode: 1,
            generation: 0,
            offset: first as u64,
        };
        let all = vec![
            segment("a", "access", 300),
            segment("a", "access", 100),
            segment("a", "access", 200),
            segment("b", "access", 150),
            segment("a", "error", 50),
        ];
        let firsts: Vec<(String, i64)> = select(all, 250)
            .into_iter()
            .map(|s| (format!("{}/{}", s.host, s.stream.file), s.first))
            .collect();
        assert_eq!(
            firsts,
            [
                ("a/error".to_owned(), 50),
                ("b/access".to_owned(), 150),
                ("a/access".to_owned(), 200),
                ("a/access".to_owned(), 300)
            ]
        );
    }

    #[test]
    fn merge_releases_lines_in_time_order() {
        let mut merge = Merge::default();
        merge.push(30, "c");
        merge.push(10, "a");
        merge.push(30, "d");
        merge.push(20, "b");
        assert_eq!(merge.take_before(Some(20)), [(10, "a")]);
        assert_eq!(merge.take_before(None), [(20, "b"), (30, "c"), (30, "d")]);
    }

    #[test]
    fn days_convert_both_ways_and_impossible_dates_are_refused() {
        for secs in [0, 86_399, 951_782_400, 1_764_064_800, 253_402_300_799] {
            let (day, hms) = split_time(secs);
            assert_eq!(join_time(&day, &hms), Some(secs), "{day} {hms}");
        }
        assert_eq!(parse_day("1970-01-02"), Some(86_400));
        assert_eq!(parse_day("2026-11-25"), Some(NOV_25_10H / 1000 - 36_000));
        assert_eq!(parse_day("2024-02-29"), Some(1_709_164_800));
        for impossible in [
            "2026-02-31",
            "2025-02-29",
            "2026-13-01",
            "2026-04-31",
            "2026-00-10",
        ] {
            assert_eq!(parse_day(impossible), None, "{impossible}");
        }
        assert_eq!(join_time("2026-11-25", "240000"), None);
        assert_eq!(line_time("2026/02/30 10:00:00 [error] 1#1: x"), None);
    }

    #[test]
    fn gzip_round_trips_and_bombs_are_refused() {
        let text = b"line\n".repeat(1000);
        let packed = gzip(&text);
        assert_eq!(gunzip(&packed, 5000).unwrap(), text);
        assert!(gunzip(&packed, 4999).is_err());
        assert!(gunzip(b"not gzip", 100).is_err());
    }
}
