//! Small Linux helpers of the web stack: pid files, liveness and children through /proc,
//! waiting, signals, and files replaced in one rename.
//!
//! The service commands start, reload and stop nginx and Apache; the one signal the agent sends
//! them itself is nginx's "reopen your logs", through rustix's `kill(2)` (no `unsafe` here, no
//! `kill` process).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::WebError;

/// How often the stack looks again while it waits for a process or a port.
pub const POLL: Duration = Duration::from_millis(50);

/// The pid in `path`, or `None` when the file is missing or holds no number (a half-written pid
/// file after a crash means "not running" too).
pub fn read_pid(path: &Path) -> Result<Option<u32>, WebError> {
    match fs_err::read_to_string(path) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether `pid` is a live (not zombie) process.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat_fields(&stat).first(), Some(&"Z") | Some(&"X")),
        Err(_) => false,
    }
}

/// The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses):
/// `[state, ppid, …]`.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// The live children of `parent`, with their command lines (nginx puts "worker process is
/// shutting down" in the command line of workers of an old generation).
pub fn children(parent: u32) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let fields = stat_fields(&stat);
        let alive = !matches!(fields.first(), Some(&"Z") | Some(&"X"));
        if alive && fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            out.push((pid, cmdline.trim().to_owned()));
        }
    }
    out.sort();
    out
}

/// Sends `signal` to process `pid`; `what` says why, for the error.
pub fn send_signal(pid: u32, signal: Signal, what: &str) -> Result<(), WebError> {
    // rustix's Debug form is `"Signal::USR1"`, quotes included.
    let signal_name = format!("{signal:?}")
        .trim_matches('"')
        .replace("Signal::", "SIG");
    let error = |source: std::io::Error| WebError::Signal {
        what: what.to_owned(),
        signal: signal_name.clone(),
        pid,
        source,
    };
    let target = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| error(ErrorKind::InvalidInput.into()))?;
    rustix::process::kill_process(target, signal).map_err(|errno| error(errno.into()))
}

/// Polls `done` every `every` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(every);
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn listening(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// How many TCP connections to local port `port` are established, accepted or still in the
/// listen backlog (from /proc/net/tcp and tcp6). nginx opens one per proxied request and closes
/// it with the answer, so 0 on a slot's port means no request is in flight there.
pub fn established_connections(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|line| {
                    let mut fields = line.split_whitespace().skip(1);
                    let local_port = fields
                        .next()
                        .and_then(|local| local.rsplit_once(':'))
                        .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
                    // Field 4 is the state; 01 is ESTABLISHED.
                    local_port == Some(port) && fields.nth(1) == Some("01")
                })
                .count()
        })
        .sum()
}

/// The last `lines` lines of a log file, for error messages; empty when it cannot be read.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The end of a log file with its path, for error messages.
pub fn log_excerpt(path: &Path) -> String {
    format!("tail of {}:\n{}", path.display(), tail(path, 20))
}

/// Removes the file `path`; one that is already gone is fine.
pub fn remove_if_exists(path: &Path) -> Result<(), WebError> {
    match fs_err::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The entries of `dir`, none when it does not exist.
pub fn read_dir_if_exists(dir: &Path) -> Result<Vec<std::fs::DirEntry>, WebError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.flatten().collect()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Writes `contents` to `path` through a temp file in the same directory and a rename, so a
/// crash leaves either the old or the new file, never half of one.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), WebError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = fs_err::File::create(&tmp)?;
    std::io::Write::write_all(&mut file, contents.as_ref())?;
    file.sync_all()?;
    fs_err::rename(&tmp, path)?;
    Ok(())
}

/// Points the symlink `link` at `target`, replacing whatever link was there in one rename, so a
/// reader (nginx, on every request) sees the old target or the new one, never neither.
pub fn replace_symlink(target: &Path, link: &Path) -> Result<(), WebError> {
    let mut tmp = link.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = std::path::PathBuf::from(tmp);
    match fs_err::remove_file(&tmp) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    fs_err::os::unix::fs::symlink(target, &tmp)?;
    fs_err::rename(&tmp, link)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_excerpt_is_the_end_of_the_file_under_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("error.log");
        let lines: Vec<String> = (1..=30).map(|n| format!("line {n}")).collect();
        fs_err::write(&log, lines.join("\n")).unwrap();
        let excerpt = log_excerpt(&log);
        let (head, body) = excerpt.split_once('\n').unwrap();
        assert_eq!(head, format!("tail of {}:", log.display()));
        assert_eq!(body, lines[10..].join("\n"));
        // A log that is not there yet still names where it was looked for.
        let missing = dir.path().join("missing.log");
        assert_eq!(
            log_excerpt(&missing),
            format!("tail of {}:\n", missing.display())
        );
    }

    #[test]
    fn removing_and_listing_what_is_not_there_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("marker");
        fs_err::write(&file, "").unwrap();
        remove_if_exists(&file).unwrap();
        assert!(!file.exists());
        remove_if_exists(&file).unwrap();
        assert!(
            read_dir_if_exists(&dir.path().join("nope"))
                .unwrap()
                .is_empty()
        );
        assert!(read_dir_if_exists(dir.path()).unwrap().is_empty());
        // A directory is not a file: that is an error, not "already gone".
        assert!(remove_if_exists(dir.path()).is_err());
    }

    #[test]
    fn a_signal_that_cannot_be_sent_says_what_for_and_to_whom() {
        let err = send_signal(u32::MAX, Signal::USR1, "reopen nginx's logs").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("cannot reopen nginx's logs: SIGUSR1 to pid 4294967295 failed"),
            "{text}"
        );
    }

    #[test]
    fn replaced_files_and_links_hold_the_new_contents() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ports.toml");
        write_atomic(&file, "a = 1").unwrap();
        write_atomic(&file, "a = 2").unwrap();
        assert_eq!(fs_err::read_to_string(&file).unwrap(), "a = 2");
        let link = dir.path().join("live");
        replace_symlink(Path::new("../slots/a"), &link).unwrap();
        replace_symlink(Path::new("../slots/b"), &link).unwrap();
        assert_eq!(fs_err::read_link(&link).unwrap(), Path::new("../slots/b"));
        assert_eq!(
            read_dir_if_exists(dir.path()).unwrap().len(),
            2,
            "no temp file left"
        );
    }
}
