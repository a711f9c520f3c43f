//! Processes by pid: whether one runs, signals to one or to a process group (with `kill(2)`
//! itself, not by running `kill`), and stopping the servers a test started by the pids in their
//! pid files.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::Pid;
pub use rustix::process::Signal;

/// Whether process `pid` runs. A zombie does not count: it has exited, and PID 1 in a container
/// may never reap it.
pub fn alive(pid: u32) -> bool {
    stat_after_name(pid).is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// Whether any process of process group `pgid` runs (zombies aside, as in [`alive`]).
pub fn group_alive(pgid: u32) -> bool {
    fs_err::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            // After the name: state, ppid, pgrp.
            stat_after_name(pid).is_some_and(|rest| {
                let fields: Vec<&str> = rest.split_whitespace().take(3).collect();
                matches!(fields[..], [state, _, pgrp]
                    if state != "Z" && state != "X" && pgrp.parse() == Ok(pgid))
            })
        })
}

/// `/proc/PID/stat` after the command name, which may itself hold spaces and parentheses.
fn stat_after_name(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.trim_start().to_owned())
}

fn pid(pid: u32) -> io::Result<Pid> {
    // Never 0 or negative (from_raw refuses 0, try_from anything above i32::MAX): kill(2)
    // reads those as "my process group" and "every process".
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("not a pid: {pid}")))
}

/// Sends `signal` to process `pid`.
pub fn signal(pid_: u32, signal: Signal) -> io::Result<()> {
    rustix::process::kill_process(pid(pid_)?, signal).map_err(io::Error::from)
}

/// Sends `signal` to every process of process group `pgid`.
pub fn signal_group(pgid: u32, signal: Signal) -> io::Result<()> {
    rustix::process::kill_process_group(pid(pgid)?, signal).map_err(io::Error::from)
}

/// Stops processes: SIGTERM, up to `grace` for them to exit, then SIGKILL for those left and up
/// to `grace` again for them to go, so their ports and files are free when this returns.
pub fn stop(pids: &[u32], grace: Duration) {
    let wait = |pids: &[u32]| {
        let start = Instant::now();
        while pids.iter().any(|pid| alive(*pid)) && start.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    for sig in [Signal::TERM, Signal::KILL] {
        let running: Vec<u32> = pids.iter().copied().filter(|pid| alive(*pid)).collect();
        for pid in &running {
            // It may have exited since: then there is nothing to do.
            let _ = signal(*pid, sig);
        }
        wait(&running);
    }
}

/// The `*.pid` files under `dir` (nginx's and Apache's, in a server root), in path order.
pub fn pid_files(dir: &Path) -> Vec<PathBuf> {
    crate::walk(dir)
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "pid"))
        .collect()
}

/// The pids written in the `*.pid` files under `dir`; files that hold no pid are left out.
pub fn pids_in(dir: &Path) -> Vec<u32> {
    pid_files(dir)
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok()?.trim().parse().ok())
        .collect()
}

/// The first `name` on `PATH` that is a file.
pub fn which(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use super::*;

    #[test]
    fn signals_stop_a_process_and_alive_sees_it_go() {
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        let pid = child.id();
        assert!(alive(pid));
        signal(pid, Signal::TERM).unwrap();
        // Until it is reaped it is a zombie, which does not count as alive.
        let start = std::time::Instant::now();
        while alive(pid) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(pid), "sleep survived SIGTERM");
        assert!(!child.wait().unwrap().success());
    }

    #[test]
    fn a_process_group_is_signalled_as_a_whole() {
        use std::os::unix::process::CommandExt;
        // A shell leading its own group, with a child of its own in it.
        let mut child = Command::new("sh")
            .args(["-c", "sleep 60 & wait"])
            .process_group(0)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pgid = child.id();
        assert!(group_alive(pgid));
        signal_group(pgid, Signal::KILL).unwrap();
        child.wait().unwrap();
        let start = std::time::Instant::now();
        while group_alive(pgid) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!group_alive(pgid), "a process of group {pgid} survived");
    }

    #[test]
    fn stop_ends_what_ignores_sigterm() {
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; while :; do sleep 1; done"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Reaped on a thread of its own, so it does not linger as a zombie `stop` waits on.
        let reaper = std::thread::spawn(move || child.wait().unwrap());
        stop(&[pid], Duration::from_millis(300));
        assert!(!alive(pid));
        assert!(!reaper.join().unwrap().success());
    }

    #[test]
    fn zero_is_not_a_pid() {
        assert!(signal(0, Signal::TERM).is_err());
        assert!(signal_group(0, Signal::TERM).is_err());
    }

    #[test]
    fn pid_files_are_read_under_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("nginx")).unwrap();
        std::fs::create_dir_all(dir.path().join("apache/shop/blue")).unwrap();
        std::fs::write(dir.path().join("nginx/nginx.pid"), "123\n").unwrap();
        std::fs::write(dir.path().join("apache/shop/blue/httpd.pid"), "456").unwrap();
        std::fs::write(dir.path().join("apache/shop/blue/empty.pid"), "").unwrap();
        std::fs::write(dir.path().join("nginx/nginx.conf"), "789").unwrap();
        let mut pids = pids_in(dir.path());
        pids.sort_unstable();
        assert_eq!(pids, [123, 456]);
        assert_eq!(pid_files(dir.path()).len(), 3);
        assert!(pids_in(&dir.path().join("missing")).is_empty());
    }
}
