//! s3s-fs, a second real S3-compatible server: it serves a directory, checks request
//! signatures, and checks write conditions without a lock. `cargo xtask test` installs it and
//! names it in `MILKY_TEST_S3S_FS`.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use milky_dev_support::Ports;

/// An s3s-fs server on loopback, serving one bucket from a directory; killed by pid when dropped.
pub struct S3sFs {
    pub endpoint: String,
    root: PathBuf,
    child: Child,
    _ports: Ports,
}

impl S3sFs {
    /// Starts s3s-fs over `root` with the test credentials (see [`crate::aws_env`]), with an
    /// empty `bucket`.
    pub fn start(root: &Path, bucket: &str) -> Self {
        let program = std::env::var_os("MILKY_TEST_S3S_FS")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!("s3s-fs is not installed: run `cargo xtask test`, which installs it (cargo install s3s-fs --version 0.14.1 --features binary), or set MILKY_TEST_S3S_FS to its path")
            });
        std::fs::create_dir_all(root.join(bucket)).expect("the bucket's dir");
        let ports = Ports::one().expect("a port for s3s-fs");
        let port = ports.first();
        let child = Command::new(&program)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "milkytest", "--secret-key", "milkytest"])
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let server = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            root: root.to_owned(),
            child,
            _ports: ports,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "s3s-fs did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// An object's bytes, read from the directory s3s-fs serves.
    pub fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.join(bucket).join(key)).ok()
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
