//! s3s-fs, the second S3-compatible server the tests and the benchmarks run on loopback: a
//! multi-threaded Rust server that serves a directory (bucket `b`, key `k` is the file
//! `ROOT/b/k`), checks request signatures, and checks write conditions without a lock. The
//! store-truth tests use it as a store whose conditional writes race; benchmark 7 reads reports
//! from it to measure what `status` does when the server is not the bottleneck, which moto (a
//! Python server) is. Killed by its pid when dropped.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{Ports, alive, tail, wait_for_port};

/// s3s-fs's server: `MILKY_TEST_S3S_FS` (`cargo xtask test` sets it to the one it installed),
/// else `s3s-fs` on `PATH`.
pub fn s3s_fs_program() -> Option<PathBuf> {
    std::env::var_os("MILKY_TEST_S3S_FS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| crate::which("s3s-fs"))
}

pub struct S3sFs {
    pub endpoint: String,
    /// The directory it serves: one subdirectory per bucket.
    pub root: PathBuf,
    child: Child,
    /// Held while it runs, so nothing else is handed its port.
    _ports: Ports,
}

impl S3sFs {
    /// Starts `program` over `dir/root` with `credentials` (access key, secret) and an empty
    /// `bucket`, its log in `dir/s3s-fs.log`; waits until it listens.
    pub fn start(
        program: &Path,
        dir: &Path,
        bucket: &str,
        credentials: (&str, &str),
    ) -> anyhow::Result<Self> {
        let root = dir.join("root");
        std::fs::create_dir_all(root.join(bucket))?;
        let log = dir.join("s3s-fs.log");
        let ports = Ports::one().context("reserving a port for s3s-fs")?;
        let port = ports.first();
        let log_file = File::create(&log)?;
        let child = Command::new(program)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", credentials.0, "--secret-key", credentials.1])
            .arg(&root)
            // Errors only.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let server = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
            child,
            _ports: ports,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if !wait_for_port(addr, Duration::from_secs(30)) {
            let state = if alive(server.child.id()) {
                "did not listen"
            } else {
                "exited"
            };
            bail!("s3s-fs {state} on {addr}: {}", tail(&log, 20));
        }
        Ok(server)
    }

    /// The server's pid (its CPU time is read from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where s3s-fs keeps `key` of `bucket`: writing a file there makes the object.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// An object's bytes, read from the directory s3s-fs serves.
    pub fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.object_path(bucket, key)).ok()
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
