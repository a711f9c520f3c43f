//! Shipping this server's logs to the store, a little every pass.
//!
//! Every log file is followed by inode, not by name, with the offset shipped so far and its first
//! bytes (to notice a truncation) in `STATE/logs-shipped.json`. A pass ships, per file, the whole
//! lines past that offset as gzip segments ([`milky_core::logs`]) and saves the new offset after
//! each upload. The segment's key is a function of the bytes (inode, start offset, first line's
//! time), so an agent killed between an upload and saving its offset ships the same key again
//! and the store keeps one copy.
//!
//! Rotation: a file renamed away (`access.log.1`, `access.log-20261125`) keeps its inode, so it
//! is finished before the new file is started. With logrotate's `copytruncate`, the file shrinks
//! under the same inode: the copy beside it that begins with the same bytes is shipped from the
//! old offset, then the truncated file from 0.

use std::collections::BTreeSet;
use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use milky_core::logs::{self, SegmentKey, Source, Stream};
use milky_core::{AppName, Condition, GroupName, HostName, Store};
use serde::{Deserialize, Serialize};

use crate::config;
use crate::web::{LogWriter, WebLogSource, WebStack};

/// Bytes at the start of a file remembered to tell a truncated-and-rewritten file from the one
/// that was shipped.
const HEAD_BYTES: u64 = 128;

/// A log file to ship and what may be done with it once shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub stream: Stream,
    pub path: PathBuf,
    pub cut: Cut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Its writer bounds it (the agent's own logs) or holds it open (a live Apache slot).
    Never,
    /// nginx's: past the cap, renamed to `.1` and reopened by nginx.
    Nginx,
    /// Nobody writes it for now (a stopped slot): deleted past the cap.
    WhenLarge,
    /// Nobody will write it again (a removed app): deleted once shipped.
    WhenShipped,
}

/// Every log file of this server: the agent's own, each app's hooks log, and the web stack's.
pub fn discover(web: &WebStack, logs_dir: &Path) -> anyhow::Result<Vec<LogFile>> {
    let mut files = vec![LogFile {
        stream: Stream::new(Source::Agent, None, "agent"),
        path: logs_dir.join("agent.log"),
        cut: Cut::Never,
    }];
    if let Ok(entries) = std::fs::read_dir(hooks_dir(logs_dir)) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(app) = name.strip_suffix(".log").and_then(|a| a.parse().ok()) {
                files.push(LogFile {
                    stream: Stream::new(Source::Hooks, Some(app), "hooks"),
                    path: entry.path(),
                    cut: Cut::Never,
                });
            }
        }
    }
    for log in web.log_files()? {
        let source = match log.source {
            WebLogSource::Nginx => Source::Nginx,
            WebLogSource::Apache => Source::Apache,
        };
        let app: Option<AppName> = match &log.app {
            Some(app) => Some(app.parse().context("an app's log")?),
            None => None,
        };
        let cut = match log.writer {
            LogWriter::Nginx => Cut::Nginx,
            LogWriter::LiveSlot => Cut::Never,
            LogWriter::IdleSlot => Cut::WhenLarge,
            LogWriter::Retired => Cut::WhenShipped,
        };
        files.push(LogFile {
            stream: Stream::new(source, app, &log.file),
            path: log.path,
            cut,
        });
    }
    Ok(files)
}

/// Where each app's hooks write their output.
pub fn hooks_dir(logs_dir: &Path) -> PathBuf {
    logs_dir.join("hooks")
}

/// What one pass shipped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShipReport {
    pub segments: usize,
    pub bytes: u64,
    /// The per-pass cap was reached with more to ship.
    pub backlog: bool,
    /// nginx's logs were renamed and nginx must reopen them.
    pub reopen_nginx: bool,
    /// The store refused an upload: shipping stopped for this pass.
    pub store_error: Option<String>,
    pub warnings: Vec<String>,
}

/// What was shipped of each file, kept between passes.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Shipped {
    files: Vec<Tracked>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tracked {
    stream: String,
    dev: u64,
    ino: u64,
    offset: u64,
    /// Times the file was seen truncated: part of the segment keys, as offsets start over.
    #[serde(default)]
    generation: u32,
    /// Hex of the file's first bytes (up to [`HEAD_BYTES`]).
    head: String,
}

impl Shipped {
    fn find(&self, meta: &Metadata) -> Option<usize> {
        self.files
            .iter()
            .position(|t| (t.dev, t.ino) == (meta.dev(), meta.ino()))
    }
}

pub struct Shipper<'a> {
    pub store: &'a Store,
    pub group: &'a GroupName,
    pub host: &'a HostName,
    pub state_file: PathBuf,
    pub settings: &'a config::Logs,
}

/// One file to ship from in this pass.
struct Work {
    stream: Stream,
    path: PathBuf,
    tracked: usize,
    size: u64,
    /// Nobody appends any more: a last line without its newline goes too.
    finished: bool,
}

impl Shipper<'_> {
    /// Ships what is new in `files`, at most `max_bytes_per_pass`; cuts shipped web logs down.
    /// Errors of the store end shipping for this pass (the offsets stay, nothing is lost).
    pub async fn ship(&self, files: &[LogFile]) -> anyhow::Result<ShipReport> {
        let mut shipped = self.load();
        let loaded = serde_json::to_vec(&shipped)?;
        let mut report = ShipReport::default();
        let mut seen = BTreeSet::new();
        let mut work = Vec::new();
        // Several logs share a directory (nginx's): each is listed once per pass.
        let mut listings = DirListings::default();
        for file in files {
            let siblings = listings.rotated_siblings(&file.path);
            self.plan_file(
                file,
                &siblings,
                &mut shipped,
                &mut seen,
                &mut work,
                &mut report,
            );
        }
        // Forget files that are gone; every work item's entry was seen, so it keeps a place.
        let mut moved_to = vec![None; shipped.files.len()];
        let mut kept = Vec::new();
        for (i, tracked) in shipped.files.drain(..).enumerate() {
            if seen.contains(&(tracked.dev, tracked.ino)) {
                moved_to[i] = Some(kept.len());
                kept.push(tracked);
            }
        }
        shipped.files = kept;
        for w in &mut work {
            w.tracked = moved_to[w.tracked].expect("work items are of seen files");
        }
        // An idle pass (nothing new, nothing rotated) writes nothing.
        if serde_json::to_vec(&shipped)? != loaded {
            self.save(&shipped)?;
        }

        let mut budget = self.settings.max_bytes_per_pass;
        'rounds: loop {
            let mut progressed = false;
            // A stream's files are queued oldest first; a newer one waits until the older ones
            // are shipped to their end, so a rotated-away file is finished first.
            let mut unfinished: BTreeSet<&Stream> = BTreeSet::new();
            for w in &work {
                if unfinished.contains(&w.stream) {
                    continue;
                }
                let tracked = &shipped.files[w.tracked];
                let Some((bytes, first)) = self.next_segment(w, tracked.offset, budget)? else {
                    if tracked.offset < w.size && w.finished {
                        unfinished.insert(&w.stream);
                    }
                    continue;
                };
                let key = SegmentKey {
                    group: self.group.clone(),
                    host: self.host.clone(),
                    stream: w.stream.clone(),
                    first,
                    inode: tracked.ino,
                    generation: tracked.generation,
                    offset: tracked.offset,
                }
                .key();
                if let Err(err) = self
                    .store
                    .put(&key, logs::gzip(&bytes), Condition::None)
                    .await
                {
                    report.store_error = Some(format!("shipping {key}: {err}"));
                    break 'rounds;
                }
                crate::crash::point(crate::crash::LOG_SHIPPED);
                let tracked = &mut shipped.files[w.tracked];
                tracked.offset += bytes.len() as u64;
                if (tracked.head.len() as u64) < HEAD_BYTES * 2 {
                    tracked.head = read_head(&w.path, tracked.offset.min(HEAD_BYTES));
                }
                self.save(&shipped)?;
                budget = budget.saturating_sub(bytes.len() as u64);
                report.segments += 1;
                report.bytes += bytes.len() as u64;
                progressed = true;
                if shipped.files[w.tracked].offset < w.size {
                    unfinished.insert(&w.stream);
                }
            }
            if !progressed {
                break;
            }
        }
        // More left than the budget could take: the cap, not the end of the files, stopped it.
        report.backlog = report.store_error.is_none()
            && work
                .iter()
                .any(|w| w.size.saturating_sub(shipped.files[w.tracked].offset) > budget);
        if report.store_error.is_none() {
            self.cut_down(files, &shipped, &mut report);
        }
        Ok(report)
    }

    /// Finds the files of one stream (rotated ones first, oldest first), handles a
    /// copytruncate, and queues what has bytes to ship.
    fn plan_file(
        &self,
        file: &LogFile,
        siblings: &[(PathBuf, Metadata)],
        shipped: &mut Shipped,
        seen: &mut BTreeSet<(u64, u64)>,
        work: &mut Vec<Work>,
        report: &mut ShipReport,
    ) {
        let label = file.stream.label();
        let current = std::fs::metadata(&file.path).ok().filter(Metadata::is_file);
        if let Some(meta) = &current
            && let Some(i) = shipped.find(meta)
        {
            let tracked = &shipped.files[i];
            let head = read_head(&file.path, tracked.head.len() as u64 / 2);
            if tracked.stream != label || meta.len() < tracked.offset || head != tracked.head {
                // Truncated (copytruncate) or a new file on a reused inode.
                let lost = tracked.offset;
                let copy = siblings.iter().find(|(path, m)| {
                    shipped.find(m).is_none()
                        && m.len() >= tracked.offset
                        && read_head(path, tracked.head.len() as u64 / 2) == tracked.head
                });
                match copy {
                    Some((_, m)) if tracked.stream == label => {
                        let resumed = Tracked {
                            dev: m.dev(),
                            ino: m.ino(),
                            ..tracked.clone()
                        };
                        shipped.files.push(resumed);
                    }
                    _ if tracked.stream == label && lost > 0 => report.warnings.push(format!(
                        "{} was truncated and no copy of it was found: what was written after its first {lost} bytes and before the truncation was not shipped",
                        file.path.display()
                    )),
                    _ => {}
                }
                let tracked = &mut shipped.files[i];
                tracked.stream = label.clone();
                tracked.offset = 0;
                tracked.generation += 1;
                tracked.head.clear();
            }
        }
        for (path, meta) in siblings {
            if let Some(i) = shipped.find(meta) {
                seen.insert((meta.dev(), meta.ino()));
                work.push(Work {
                    stream: file.stream.clone(),
                    path: path.clone(),
                    tracked: i,
                    size: meta.len(),
                    finished: true,
                });
            }
        }
        if let Some(meta) = current {
            let i = shipped.find(&meta).unwrap_or_else(|| {
                shipped.files.push(Tracked {
                    stream: label,
                    dev: meta.dev(),
                    ino: meta.ino(),
                    offset: 0,
                    generation: 0,
                    head: String::new(),
                });
                shipped.files.len() - 1
            });
            seen.insert((meta.dev(), meta.ino()));
            work.push(Work {
                stream: file.stream.clone(),
                path: file.path.clone(),
                tracked: i,
                size: meta.len(),
                finished: matches!(file.cut, Cut::WhenLarge | Cut::WhenShipped),
            });
        }
    }

    /// The next segment of a file from `offset`: whole lines, at most one segment's and the
    /// budget's worth, with the unix time of its first stamped line.
    fn next_segment(
        &self,
        w: &Work,
        offset: u64,
        budget: u64,
    ) -> anyhow::Result<Option<(Vec<u8>, i64)>> {
        if offset >= w.size {
            return Ok(None);
        }
        let want = (w.size - offset)
            .min(self.settings.segment_bytes)
            .min(budget);
        let mut bytes = Vec::with_capacity(want as usize);
        let mut file = match File::open(&w.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", w.path.display())),
        };
        file.seek(SeekFrom::Start(offset))?;
        file.take(want).read_to_end(&mut bytes)?;
        let reaches_end = offset + bytes.len() as u64 >= w.size;
        let whole = match bytes.iter().rposition(|b| *b == b'\n') {
            _ if w.finished && reaches_end => bytes.len(),
            Some(last) => last + 1,
            // One line longer than a segment goes in pieces.
            None if bytes.len() as u64 >= self.settings.segment_bytes => bytes.len(),
            None => 0,
        };
        bytes.truncate(whole);
        if bytes.is_empty() {
            return Ok(None);
        }
        let first = logs::first_time(&String::from_utf8_lossy(&bytes))
            .map(|ms| ms.div_euclid(1000))
            .unwrap_or_else(unix_now);
        Ok(Some((bytes, first)))
    }

    /// Keeps the web stack's logs bounded once they are shipped: nginx's are renamed to `.1`
    /// (nginx is then told to reopen), stopped slots' deleted past the cap, removed apps' deleted.
    fn cut_down(&self, files: &[LogFile], shipped: &Shipped, report: &mut ShipReport) {
        let cap = self.settings.web_max_bytes;
        let fully_shipped = |path: &Path| {
            std::fs::metadata(path).ok().is_some_and(|m| {
                shipped
                    .find(&m)
                    .is_some_and(|i| shipped.files[i].offset >= m.len())
            })
        };
        for file in files {
            let Ok(meta) = std::fs::metadata(&file.path) else {
                continue;
            };
            if !fully_shipped(&file.path) {
                continue;
            }
            let large = meta.len() > cap;
            let result = match file.cut {
                Cut::Never => Ok(()),
                Cut::WhenShipped => std::fs::remove_file(&file.path),
                Cut::WhenLarge if large => std::fs::remove_file(&file.path),
                Cut::WhenLarge => Ok(()),
                Cut::Nginx if large => {
                    let older = crate::logfile::rotated(&file.path);
                    // An older file with bytes still to ship stays until they are shipped.
                    if older.exists() && !fully_shipped(&older) {
                        continue;
                    }
                    report.reopen_nginx = true;
                    std::fs::rename(&file.path, &older)
                }
                Cut::Nginx => Ok(()),
            };
            if let Err(err) = result {
                report
                    .warnings
                    .push(format!("cutting down {}: {err}", file.path.display()));
            }
        }
    }

    fn load(&self) -> Shipped {
        std::fs::read(&self.state_file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn save(&self, shipped: &Shipped) -> anyhow::Result<()> {
        let dir = self.state_file.parent().context("the state file's dir")?;
        let mut temp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut temp, &serde_json::to_vec(shipped)?)?;
        temp.as_file().sync_data()?;
        temp.persist(&self.state_file)?;
        Ok(())
    }
}

/// The names in each directory, read once per pass.
#[derive(Default)]
struct DirListings(std::collections::HashMap<PathBuf, Vec<String>>);

impl DirListings {
    /// Rotated copies of `path` beside it (`name.1`, `name-20261125`), oldest first; compressed
    /// ones are left out (their offsets mean nothing).
    fn rotated_siblings(&mut self, path: &Path) -> Vec<(PathBuf, Metadata)> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Vec::new();
        };
        let name = name.to_string_lossy();
        let names = self.0.entry(dir.to_owned()).or_insert_with(|| {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        });
        let mut siblings: Vec<(PathBuf, Metadata)> = names
            .iter()
            .filter(|other| {
                other
                    .strip_prefix(name.as_ref())
                    .is_some_and(|rest| rest.starts_with(['.', '-']))
                    && ![".gz", ".bz2", ".xz", ".zst"]
                        .iter()
                        .any(|ext| other.ends_with(ext))
            })
            .filter_map(|other| {
                let path = dir.join(other);
                let meta = std::fs::symlink_metadata(&path)
                    .ok()
                    .filter(Metadata::is_file)?;
                Some((path, meta))
            })
            .collect();
        siblings.sort_by_key(|(_, m)| (m.mtime(), m.mtime_nsec()));
        siblings
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn read_head(path: &Path, len: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(file) = File::open(path) {
        let _ = file.take(len).read_to_end(&mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
