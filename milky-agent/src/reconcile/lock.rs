//! The run lock: one pass at a time on a server. It is an flock(2) on `STATE/agent.lock`, so
//! the kernel releases it when its holder dies, however it dies: the next pass takes over, and
//! there is no stale lock to clean up. Rust opens files close-on-exec, so no hook or daemon a
//! pass starts inherits it. The holder writes its pid into the file; the file's mtime says
//! since when it holds the lock, which is how a blocked pass tells a stuck pass from a long one.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use anyhow::anyhow;

/// What trying the lock found.
pub(super) enum Lock {
    /// This pass holds it until the value is dropped.
    Held(#[allow(dead_code)] fs_err::File),
    /// Another pass holds it.
    Busy(Holder),
}

/// The pass that holds the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Holder {
    pub pid: Option<u32>,
    pub since: SystemTime,
}

/// Takes the lock at `path` if no other pass holds it.
pub(super) fn take(path: &Path) -> anyhow::Result<Lock> {
    // Not truncated on open: the holder's pid stays readable for the passes it blocks.
    let mut file = fs_err::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match file.file().try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
            Ok(Lock::Held(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = fs_err::read_to_string(path)
                .ok()
                .and_then(|text| text.trim().parse().ok());
            let since = file.metadata()?.modified()?;
            Ok(Lock::Busy(Holder { pid, since }))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(anyhow!("locking {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_pass_sees_the_holder_and_takes_the_lock_once_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.lock");
        let before = SystemTime::now() - std::time::Duration::from_secs(1);
        let held = take(&path).unwrap();
        assert!(matches!(held, Lock::Held(_)));
        match take(&path).unwrap() {
            Lock::Busy(holder) => {
                assert_eq!(holder.pid, Some(std::process::id()));
                assert!(holder.since >= before, "{holder:?}");
            }
            Lock::Held(_) => panic!("the lock was taken twice"),
        }
        drop(held);
        assert!(matches!(take(&path).unwrap(), Lock::Held(_)));
    }
}
