//! Log files the agent writes itself (its own log, the hooks' output), bounded in size: past
//! `max_bytes` the file is renamed to `<name>.1` (replacing the one before) and a new one begun,
//! so a server that runs for years holds at most twice the cap. The shipper follows the rename
//! by inode, so a rotation loses nothing that reached the store in time.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The `tracing` target of messages every pass repeats (up to date, not verifying): shown on
/// stderr (cron's mail, the journal) but kept out of the log file, so an idle server's log does
/// not grow and it ships nothing.
pub const QUIET: &str = "milky_agent::quiet";

#[derive(Debug)]
pub struct BoundedLog {
    path: PathBuf,
    max_bytes: u64,
    file: Mutex<Option<File>>,
}

impl BoundedLog {
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64) -> Self {
        BoundedLog {
            path: path.into(),
            max_bytes,
            file: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes` (whole lines), rotating first when they would take the file past the cap.
    /// Another process (an overlapping pass) may append and rotate too: the file is re-opened
    /// whenever the path no longer names the one this handle writes.
    pub fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let current = std::fs::metadata(&self.path).ok();
        let stale = match (&*guard, &current) {
            (Some(file), Some(meta)) => {
                let ours = file.metadata()?;
                (ours.dev(), ours.ino()) != (meta.dev(), meta.ino())
            }
            _ => true,
        };
        if current
            .as_ref()
            .is_some_and(|m| m.len() > 0 && m.len() + bytes.len() as u64 > self.max_bytes)
        {
            std::fs::rename(&self.path, rotated(&self.path))?;
            *guard = None;
        } else if stale {
            *guard = None;
        }
        if guard.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            *guard = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        guard.as_mut().expect("opened above").write_all(bytes)
    }
}

/// Where a rotated file goes.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".1");
    path.with_file_name(name)
}

/// A `tracing` writer into a [`BoundedLog`]: the fmt layer writes each event in one call.
pub struct LogWriter<'a>(&'a BoundedLog);

impl Write for LogWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BoundedLog {
    type Writer = LogWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_stays_under_its_cap_and_rotates_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = BoundedLog::new(dir.path().join("logs/agent.log"), 100);
        for i in 0..50 {
            log.append(format!("line {i:02}\n").as_bytes()).unwrap();
        }
        let current = std::fs::read_to_string(log.path()).unwrap();
        let previous = std::fs::read_to_string(rotated(log.path())).unwrap();
        assert!(current.len() <= 100 && previous.len() <= 100);
        assert!(current.ends_with("line 49\n"), "{current}");
        // Nothing between the two files went missing.
        let first_current: usize = current[5..7].parse().unwrap();
        assert!(previous.ends_with(&format!("line {:02}\n", first_current - 1)));
        assert_eq!(
            std::fs::read_dir(dir.path().join("logs")).unwrap().count(),
            2
        );
    }

    #[test]
    fn a_rotation_by_someone_else_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let log = BoundedLog::new(dir.path().join("agent.log"), 1 << 20);
        log.append(b"before\n").unwrap();
        std::fs::rename(log.path(), rotated(log.path())).unwrap();
        log.append(b"after\n").unwrap();
        assert_eq!(std::fs::read_to_string(log.path()).unwrap(), "after\n");
    }
}
