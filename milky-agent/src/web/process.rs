//! Small Linux helpers of the web stack: pid files, liveness and children through /proc,
//! waiting, signals, commands run under a time limit, and files replaced in one rename.
//!
//! The service commands start, reload and stop nginx and Apache; the one signal the agent sends
//! them itself is nginx's "reopen your logs", through rustix's `kill(2)` (no `unsafe` here, no
//! `kill` process). A command that outlives its limit is ended with its process group, the
//! same way.

use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
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

/// A command running in a process group of its own, its output read as it comes.
pub struct Limited {
    child: Child,
    stdout: Capture,
    stderr: Capture,
}

/// How a [`Limited`] command ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// It was still running at its limit: it was ended, with its process group.
    pub timed_out: bool,
    pub output: std::process::Output,
}

/// What is left in a command's process group when the command itself exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftovers {
    /// Ended: a hook's `worker &` would hold its output (and the pass) open and outlive it.
    End,
    /// Left alone: a service command that started a daemon in its group.
    Keep,
}

/// How long a command's ended process group gets to go after SIGTERM, before SIGKILL; and how
/// long its output pipes may stay open after it ended (held by a process that escaped it).
const GRACE: Duration = Duration::from_secs(2);

impl Limited {
    /// Starts `cmd` with no stdin, its output captured, as the leader of a new process group.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()?;
        Ok(Limited {
            stdout: Capture::start(child.stdout.take()),
            stderr: Capture::start(child.stderr.take()),
            child,
        })
    }

    /// Waits until the command exits or `limit` has passed since now; at the limit its whole
    /// process group is ended (SIGTERM, then SIGKILL), and so is what it left behind on exit
    /// when `leftovers` says so.
    pub fn wait(mut self, limit: Duration, leftovers: Leftovers) -> std::io::Result<Finished> {
        let deadline = Instant::now() + limit;
        let group = self.child.id();
        // Most commands end within milliseconds: look again soon at first, then every POLL.
        let mut every = Duration::from_millis(1);
        let (status, timed_out) = loop {
            if let Some(status) = self.child.try_wait()? {
                if leftovers == Leftovers::End {
                    end_process_group(group);
                }
                break (status, false);
            }
            if Instant::now() >= deadline {
                end_process_group(group);
                break (self.child.wait()?, true);
            }
            sleep(every);
            every = (every * 2).min(POLL);
        };
        let output_by = Instant::now() + GRACE;
        Ok(Finished {
            status,
            timed_out,
            output: std::process::Output {
                status,
                stdout: self.stdout.take(output_by),
                stderr: self.stderr.take(output_by),
            },
        })
    }
}

/// One output pipe, read on a thread of its own into a buffer the caller can take at any time:
/// a process that escaped the group may keep the pipe open for ever.
struct Capture {
    bytes: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Capture {
    fn start(pipe: Option<impl Read + Send + 'static>) -> Self {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (tell, done) = mpsc::channel();
        let shared = bytes.clone();
        std::thread::spawn(move || {
            if let Some(mut pipe) = pipe {
                let mut chunk = [0u8; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    shared
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&chunk[..n]);
                }
            }
            let _ = tell.send(());
        });
        Capture { bytes, done }
    }

    /// What was read, once the pipe closed or `by` passed.
    fn take(self, by: Instant) -> Vec<u8> {
        let _ = self
            .done
            .recv_timeout(by.saturating_duration_since(Instant::now()));
        std::mem::take(&mut *self.bytes.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// SIGTERM to what is left of the process group `pgid` (a command and its children), SIGKILL to
/// whatever still runs [`GRACE`] later. A process that made itself a session of its own escapes.
pub fn end_process_group(pgid: u32) {
    use rustix::process::{kill_process_group, test_kill_process_group};
    let Some(group) = i32::try_from(pgid).ok().and_then(Pid::from_raw) else {
        return;
    };
    if kill_process_group(group, Signal::TERM).is_err() {
        return; // none left
    }
    let start = Instant::now();
    // kill(2) still reaches zombies, which PID 1 here may never reap: /proc tells them apart.
    while test_kill_process_group(group).is_ok() && group_alive(pgid) {
        if start.elapsed() > GRACE {
            let _ = kill_process_group(group, Signal::KILL);
            return;
        }
        sleep(POLL);
    }
}

/// SIGKILL to every process of process group `pgid`, at once.
pub fn kill_process_group(pgid: u32) {
    if let Some(group) = i32::try_from(pgid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process_group(group, Signal::KILL);
    }
}

/// The process group of the live process `pid`.
pub fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    match stat_fields(&stat)[..] {
        [state, _, pgrp, ..] if state != "Z" && state != "X" => pgrp.parse().ok(),
        _ => None,
    }
}

/// Whether a live (not zombie) process of process group `pgid` is left.
pub fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the name: state, ppid, pgrp.
            matches!(stat_fields(&stat)[..], [state, _, pgrp, ..]
                if state != "Z" && state != "X" && pgrp.parse() == Ok(pgid))
        })
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

    /// A shell that puts a `sleep` in the background, says its pid and waits for it.
    fn sleeper(pid_file: &Path) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(format!(
            "echo started; sleep 100000 & echo $! > {}; wait",
            pid_file.display()
        ));
        cmd
    }

    #[test]
    fn a_command_past_its_limit_is_ended_with_its_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("sleep.pid");
        let running = Limited::spawn(&mut sleeper(&pid_file)).unwrap();
        let group = running.child.id();
        let finished = running
            .wait(Duration::from_millis(500), Leftovers::Keep)
            .unwrap();
        assert!(finished.timed_out);
        assert!(!finished.status.success());
        assert_eq!(
            String::from_utf8_lossy(&finished.output.stdout),
            "started\n"
        );
        let sleep_pid: u32 = fs_err::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!is_alive(sleep_pid), "the background sleep was ended too");
        assert!(!group_alive(group));
    }

    #[test]
    fn a_quick_command_keeps_or_ends_its_leftovers_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("sleep.pid");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(format!(
            "sleep 100000 >/dev/null 2>&1 & echo $! > {}; echo done >&2",
            pid_file.display()
        ));
        let running = Limited::spawn(&mut cmd).unwrap();
        let finished = running
            .wait(Duration::from_secs(60), Leftovers::Keep)
            .unwrap();
        assert!(finished.status.success() && !finished.timed_out);
        assert_eq!(String::from_utf8_lossy(&finished.output.stderr), "done\n");
        let pid: u32 = fs_err::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(is_alive(pid), "a daemon the command started is kept");
        end_process_group(pid_of_group(pid));
        assert!(!is_alive(pid));

        let running = Limited::spawn(&mut cmd).unwrap();
        running
            .wait(Duration::from_secs(60), Leftovers::End)
            .unwrap();
        let pid: u32 = fs_err::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!is_alive(pid), "a hook's leftovers are ended");
    }

    fn pid_of_group(pid: u32) -> u32 {
        let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        stat_fields(&stat)[2].parse().unwrap()
    }

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
