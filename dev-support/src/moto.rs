//! moto, the S3-compatible server the tests and the benchmarks run on loopback: one way to start
//! it, on a reserved port, and to be sure it stops.
//!
//! moto runs under a small shell that waits on a pipe from us and kills moto (by its pid) when
//! the pipe closes: when the [`Moto`] is dropped, and also when our process ends however it
//! ends, even killed. A test process keeps its moto in a static, which is never dropped; xtask
//! may be interrupted. A parent-death signal would not do: it fires when the *thread* that
//! started moto ends, and a test's thread ends long before the process.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Ports, Signal, alive, signal, tail};

/// How long moto may take to listen; a Python server on a busy 2-core machine is slow to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs moto (`$1`) on port `$2` in the background, says its pid, and kills it once stdin
/// closes. moto's stdout goes nowhere, so it never holds our pipe; its stderr (the request log)
/// is the shell's.
const GUARD_SCRIPT: &str = r#""$1" -H 127.0.0.1 -p "$2" >/dev/null & pid=$!; echo "$pid"; read -r _; kill "$pid"; wait "$pid""#;

/// moto's server: `MILKY_TEST_MOTO` (`cargo xtask test` sets it to the one it installed), else
/// `moto_server` on `PATH`.
pub fn moto_program() -> Option<PathBuf> {
    std::env::var_os("MILKY_TEST_MOTO")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| crate::which("moto_server"))
}

/// A moto server on 127.0.0.1, stopped when dropped.
#[derive(Debug)]
pub struct Moto {
    /// `http://127.0.0.1:PORT`: a forwarder that passes requests to moto one at a time, so that
    /// its conditional writes are atomic (see `serial.rs`).
    pub endpoint: String,
    pid: u32,
    /// Closing it tells the shell to kill moto.
    stdin: Option<ChildStdin>,
    shell: Child,
    /// Held while moto runs, so no other test is handed its port.
    ports: Ports,
}

/// How to start moto: [`Moto::builder`].
#[derive(Debug, Clone)]
pub struct MotoBuilder {
    program: PathBuf,
    log: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
}

impl Moto {
    /// Starts `program` (moto's `moto_server`) and waits until it listens.
    pub fn start(program: &Path) -> anyhow::Result<Self> {
        Self::builder(program).start()
    }

    pub fn builder(program: &Path) -> MotoBuilder {
        MotoBuilder {
            program: program.to_owned(),
            log: None,
            env: Vec::new(),
        }
    }

    pub fn port(&self) -> u16 {
        self.ports.first()
    }

    /// moto's own pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl MotoBuilder {
    /// Writes moto's request log (its stderr) to `path`.
    pub fn log(mut self, path: &Path) -> Self {
        self.log = Some(path.to_owned());
        self
    }

    /// Sets an environment variable of moto's (e.g. `INITIAL_NO_AUTH_ACTION_COUNT`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts moto on a reserved port and waits until it listens. Should moto exit first (its
    /// port taken by something that does not reserve ports), it starts again on another port.
    pub fn start(&self) -> anyhow::Result<Moto> {
        let mut failure = String::new();
        for _ in 0..3 {
            let mut moto = self.spawn()?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, moto.port()));
            let start = Instant::now();
            loop {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    moto.endpoint = crate::serial::one_at_a_time(addr.to_string())
                        .context("starting the one-at-a-time forwarder")?;
                    return Ok(moto);
                }
                if !alive(moto.pid) {
                    failure = format!("moto exited before it listened on {addr}");
                    break;
                }
                if start.elapsed() > START_TIMEOUT {
                    bail!(
                        "moto did not listen on {addr} within {} s{}",
                        START_TIMEOUT.as_secs(),
                        self.log_tail()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        bail!("{failure}{}", self.log_tail())
    }

    fn spawn(&self) -> anyhow::Result<Moto> {
        let ports = Ports::one().context("reserving a port for moto")?;
        let stderr = match &self.log {
            Some(log) => Stdio::from(fs_err::File::create(log)?.into_file()),
            None => Stdio::null(),
        };
        let mut shell = Command::new("sh")
            .args(["-c", GUARD_SCRIPT, "sh"])
            .arg(&self.program)
            .arg(ports.first().to_string())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        let stdin = shell.stdin.take();
        let mut line = String::new();
        BufReader::new(shell.stdout.take().expect("piped"))
            .read_line(&mut line)
            .context("reading moto's pid")?;
        let pid = line
            .trim()
            .parse()
            .with_context(|| format!("moto's pid, not {line:?}"))?;
        Ok(Moto {
            endpoint: format!("http://127.0.0.1:{}", ports.first()),
            pid,
            stdin,
            shell,
            ports,
        })
    }

    fn log_tail(&self) -> String {
        self.log
            .as_deref()
            .map(|log| format!("; the end of {}:\n{}", log.display(), tail(log, 20)))
            .unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.shell.wait();
        // Only if the shell was killed before it could kill moto.
        if alive(self.pid) {
            let _ = signal(self.pid, Signal::KILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program() -> PathBuf {
        moto_program().expect("moto_server is installed (cargo xtask test installs it)")
    }

    #[test]
    fn moto_answers_s3_and_stops_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let moto = Moto::builder(&program()).log(&log).start().unwrap();
        let (port, pid) = (moto.port(), moto.pid());
        assert_ne!(
            moto.endpoint,
            format!("http://127.0.0.1:{port}"),
            "the forwarder's"
        );
        assert!(
            Ports::try_reserve_at(port, 1).unwrap().is_none(),
            "moto's port is reserved while it runs"
        );
        // ListBuckets: moto checks no signature unless told to.
        let response = crate::http_get(port, "127.0.0.1", "/").unwrap();
        assert_eq!(response.status, 200, "{}", response.body);
        assert!(
            response.body.contains("ListAllMyBucketsResult"),
            "{}",
            response.body
        );
        drop(moto);
        assert!(!alive(pid), "moto runs after drop");
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        assert!(
            std::fs::read_to_string(&log).unwrap().contains("GET / "),
            "moto logged the request"
        );
    }

    #[test]
    fn moto_stops_when_its_owner_dies() {
        let mut moto = Moto::start(&program()).unwrap();
        let pid = moto.pid();
        // What the end of the owning process does, however it ends: its end of the pipe closes.
        // The shell is not waited for, as nothing would wait for it then.
        drop(moto.stdin.take());
        let start = Instant::now();
        while alive(pid) && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!alive(pid), "moto outlived its pipe");
    }
}
