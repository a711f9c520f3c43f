//! Loopback ports reserved for as long as a value lives, across every process of a test run.
//!
//! Picking a port by checking that it binds, and handing the number to a server that binds it
//! later, leaves a gap in which another test (in this process or in another nextest process)
//! picks the same port: a full run once failed with nginx's `bind() … Address already in use`.
//! So a port is handed out only under a lock, `/tmp/milky-test-ports/PORT.lock`, held with
//! `flock` for the life of the [`Ports`] value:
//!
//! - `flock` locks belong to an open file, not to a process, so two reservations in one
//!   process exclude each other just as two in different processes do; no list in memory is
//!   needed beside it.
//! - The kernel drops the lock when the file closes: on drop, or when the process dies however
//!   it dies, so a crashed run leaves no port reserved.
//! - Files are opened close-on-exec, so a server started meanwhile (nginx, Apache, moto) does
//!   not inherit the lock and keep the port reserved after the test.
//! - A lock file is never deleted: unlinking it while another process has it open but not yet
//!   locked would let two processes lock two different files for the same port.
//!
//! A locked port is then checked to bind on 127.0.0.1, which skips ports that something outside
//! this scheme listens on.
//!
//! Ports come from below the kernel's ephemeral range (32768–60999 by default). The local port
//! of an outgoing connection is taken from that range without regard to our locks, and a
//! server may bind its port long after it is reserved (an Apache slot binds when a release
//! starts on it, and again after a restart): an ephemeral port could be taken in between.

use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;

/// Where the lock files live: one directory for every checkout and test process on the machine.
const LOCK_DIR: &str = "/tmp/milky-test-ports";

/// The range ports are reserved from, below the ephemeral range.
const FIRST: u16 = 12_000;
const END: u16 = 32_000;

/// Consecutive loopback ports, reserved until this value is dropped.
#[derive(Debug)]
pub struct Ports {
    first: u16,
    count: u16,
    /// One locked file per port; closing them (on drop) ends the reservation.
    _locks: Vec<File>,
}

impl Ports {
    /// Reserves `count` consecutive ports that nothing listens on and no other reservation
    /// holds. An agent needs a block: its front port and the range its slots take ports from.
    pub fn reserve(count: u16) -> io::Result<Self> {
        assert!(
            (1..=100).contains(&count),
            "reserve between 1 and 100 ports, not {count}"
        );
        let blocks = (END - FIRST) / count;
        // A random first block per call, so concurrent processes rarely try the same ports.
        let start = RandomState::new().hash_one(std::process::id()) % u64::from(blocks);
        for i in 0..u64::from(blocks) {
            let block = u16::try_from((start + i) % u64::from(blocks)).expect("below `blocks`");
            if let Some(ports) = Self::try_reserve_at(FIRST + block * count, count)? {
                return Ok(ports);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no {count} consecutive free ports in {FIRST}..{END}"),
        ))
    }

    /// Reserves `first..first + count` if no other reservation holds any of them and each binds.
    pub(crate) fn try_reserve_at(first: u16, count: u16) -> io::Result<Option<Self>> {
        let dir = Path::new(LOCK_DIR);
        fs_err::create_dir_all(dir)?;
        let mut locks = Vec::with_capacity(usize::from(count));
        for port in first..first + count {
            let file = fs_err::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("{port}.lock")))?
                .into_file();
            match file.try_lock() {
                Ok(()) => locks.push(file),
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            // The listener closes at once: the port is left for the server it is meant for.
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
                return Ok(None);
            }
        }
        Ok(Some(Self {
            first,
            count,
            _locks: locks,
        }))
    }

    /// Reserves one port.
    pub fn one() -> io::Result<Self> {
        Self::reserve(1)
    }

    pub fn first(&self) -> u16 {
        self.first
    }

    pub fn last(&self) -> u16 {
        self.first + self.count - 1
    }

    /// The `i`th port of the block.
    pub fn get(&self, i: u16) -> u16 {
        assert!(i < self.count, "port {i} of a block of {}", self.count);
        self.first + i
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + use<> {
        self.first..self.first + self.count
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::Ports;

    /// Set for the child process of `another_process_cannot_reserve_a_held_port`.
    const TRY_PORT: &str = "MILKY_DEV_SUPPORT_TRY_PORT";

    #[test]
    fn reservations_never_share_a_port() {
        let blocks: Vec<Ports> = (0..20).map(|_| Ports::reserve(10).unwrap()).collect();
        let singles: Vec<Ports> = (0..50).map(|_| Ports::one().unwrap()).collect();
        let mut all: Vec<u16> = blocks
            .iter()
            .chain(&singles)
            .flat_map(Ports::iter)
            .collect();
        assert_eq!(all.len(), 250);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 250, "a port was handed out twice");
        assert!(all.iter().all(|p| (super::FIRST..super::END).contains(p)));
        for block in &blocks {
            assert_eq!(block.last() - block.first(), 9);
            assert_eq!(block.get(3), block.first() + 3);
        }
    }

    #[test]
    fn a_reserved_port_is_free_again_after_drop() {
        let ports = Ports::reserve(3).unwrap();
        let first = ports.first();
        assert!(
            Ports::try_reserve_at(first, 3).unwrap().is_none(),
            "held ports were reserved again"
        );
        drop(ports);
        let again = Ports::try_reserve_at(first, 3).unwrap();
        assert_eq!(again.map(|p| p.first()), Some(first));
    }

    #[test]
    fn a_port_something_listens_on_is_not_reserved() {
        let ports = Ports::one().unwrap();
        let port = ports.first();
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        drop(ports);
        assert!(Ports::try_reserve_at(port, 1).unwrap().is_none());
        drop(listener);
        assert!(Ports::try_reserve_at(port, 1).unwrap().is_some());
    }

    /// Another process (this test binary again, running `child_tries_the_port`) cannot reserve a
    /// port this one holds, and can once it is dropped.
    #[test]
    fn another_process_cannot_reserve_a_held_port() {
        let ports = Ports::one().unwrap();
        let try_in_child = |port: u16| {
            let out = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "ports::tests::child_tries_the_port",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(TRY_PORT, port.to_string())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "the child failed: {text}");
            if text.contains("child: reserved") {
                true
            } else {
                assert!(text.contains("child: taken"), "the child said: {text}");
                false
            }
        };
        let port = ports.first();
        assert!(!try_in_child(port), "another process reserved a held port");
        drop(ports);
        assert!(try_in_child(port), "the port stayed reserved after drop");
    }

    /// Runs only as the child of `another_process_cannot_reserve_a_held_port`.
    #[test]
    #[ignore = "the child half of another_process_cannot_reserve_a_held_port"]
    fn child_tries_the_port() {
        let port: u16 = std::env::var(TRY_PORT)
            .expect("run by another_process_cannot_reserve_a_held_port")
            .parse()
            .unwrap();
        match Ports::try_reserve_at(port, 1).unwrap() {
            Some(_) => println!("child: reserved"),
            None => println!("child: taken"),
        }
    }
}
