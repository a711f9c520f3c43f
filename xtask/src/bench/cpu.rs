//! The CPU one bench server uses: its agent and everything the agent starts (uv, the Python
//! hooks, Apache with mod_wsgi, nginx), counted by a cgroup v2 of the server's own. A cgroup
//! counts every process that ran in it, those that already exited too; summing
//! `/proc/<pid>/stat` would not: an exited child's time reaches its parent only once the parent
//! waits for it, and a daemon (Apache, nginx) is never waited for by the agent.
//!
//! No controller is enabled for these cgroups: they only count, and the scheduler shares the
//! cores among the servers' processes as it would without them (a niced process of one server
//! yields to the others').

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The CPU time (user + system, all threads) a running process has used so far: for a server
/// that is not ours to wait for (the bench's S3 servers), whose children are none.
pub fn process_usage(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which may hold spaces but ends at the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime, fields 14 and 15 of the whole line, in USER_HZ: 100 a second on Linux.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// A cgroup holding one server's processes; removed when dropped (once they have all exited).
pub struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// A new cgroup `name` beside the bench's own in the cgroup v2 hierarchy, or why there is none.
    pub fn create(name: &str) -> Result<Self, String> {
        let own = own_cgroup_dir()?;
        let dir = own.join(format!("milky-bench-{}-{name}", std::process::id()));
        if dir.exists() {
            let _ = std::fs::remove_dir(&dir);
        }
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create cgroup {}: {e}", dir.display()))?;
        let cgroup = Cgroup { dir };
        cgroup
            .usage()
            .ok_or_else(|| format!("{} has no usable cpu.stat", cgroup.dir.display()))?;
        Ok(cgroup)
    }

    /// The CPU time (user + system) of every process that has run in the cgroup.
    pub fn usage(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|n| n.trim().parse().ok())
            .map(Duration::from_micros)
    }

    /// `program` started inside the cgroup: a shell moves itself there, then becomes it, so
    /// even its first child is counted.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(self.dir.join("cgroup.procs"))
            .arg(program);
        command
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Fails while a process is left in it: then it stays, empty of anything but that.
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!("bench: cannot remove cgroup {}: {e}", self.dir.display());
        }
    }
}

/// This process's cgroup in the cgroup v2 hierarchy, as a directory.
fn own_cgroup_dir() -> Result<PathBuf, String> {
    let read = |path: &str| std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"));
    let own = read("/proc/self/cgroup")?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .ok_or("this process is in no cgroup v2 hierarchy")?;
    // mountinfo(5): ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE …
    let (root, mount) = read("/proc/self/mountinfo")?
        .lines()
        .find_map(|l| {
            let (mount, fs) = l.split_once(" - ")?;
            if fs.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let mut fields = mount.split_whitespace().skip(3);
            Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
        })
        .ok_or("no cgroup2 file system is mounted")?;
    let relative = own
        .strip_prefix(root.trim_end_matches('/'))
        .unwrap_or(&own)
        .trim_start_matches('/');
    Ok(Path::new(&mount).join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_usage_counts_the_cpu_its_threads_spend() {
        let pid = std::process::id();
        let before = process_usage(pid).expect("our own /proc/PID/stat");
        // Another thread spins until the process's time shows 50 ms more: the process's time
        // counts every thread. However busy the machine, that comes; a wrong field never does.
        let spent = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            loop {
                let spent = process_usage(pid).unwrap() - before;
                if spent >= Duration::from_millis(50) {
                    return spent;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "2 minutes of spinning counted as {spent:?}"
                );
                let spin = std::time::Instant::now();
                while spin.elapsed() < Duration::from_millis(5) {
                    std::hint::spin_loop();
                }
            }
        })
        .join()
        .unwrap();
        assert!(spent < Duration::from_secs(3600), "{spent:?}");
        assert_eq!(process_usage(u32::MAX), None, "no such process");
    }
}
