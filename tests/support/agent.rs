//! Agents playing servers: each with its own root under /tmp, its own nginx front port and
//! Apache slot ports on loopback, and its own `agent.toml`. Dropping one stops the nginx and
//! Apache processes it started, by the pids in its own pid files.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::{TestContext, aws_env, bin};

/// One server of a group.
pub struct Agent {
    pub host: String,
    pub group: String,
    pub root: PathBuf,
    pub front: u16,
    pub config: PathBuf,
    env: Vec<(&'static str, String)>,
}

/// `count` consecutive free loopback ports, different for every agent of this process, below
/// the kernel's ephemeral range (32768 and up): an outgoing connection's local port must never
/// take a port an Apache slot binds only later.
fn port_range(count: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let spread = (std::process::id() % 997) as u16;
    loop {
        let slot = NEXT.fetch_add(1, Ordering::Relaxed);
        let base =
            20_000 + ((spread.wrapping_mul(37).wrapping_add(slot.wrapping_mul(11))) % 1_270) * 10;
        if (base..base + count).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
}

impl Agent {
    pub fn new(ctx: &TestContext, group: &str, host: &str) -> Self {
        Self::with_settings(ctx, group, host, &ctx.endpoint, "")
    }

    /// An agent talking to the store through `endpoint`, with `extra` TOML tables appended to
    /// its agent.toml (e.g. `[env]`, `[releases]`).
    pub fn with_settings(
        ctx: &TestContext,
        group: &str,
        host: &str,
        endpoint: &str,
        extra: &str,
    ) -> Self {
        let root = ctx.dir.path().join(format!("server-{host}"));
        for dir in ["apps", "state", "web", "templates"] {
            std::fs::create_dir_all(root.join(dir)).expect("create agent dirs");
        }
        // Apache runs as www-data and nginx's workers as nobody: every dir on the way must be
        // enterable by them (temp dirs are 0700).
        for dir in [
            ctx.dir.path(),
            root.as_path(),
            &root.join("apps"),
            &root.join("web"),
        ] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        // Hooks (migrations) run as www-data, as the app does: the database the fixture uses
        // unless a test names its own lives in a dir of www-data's (never in the release,
        // which only root may write).
        let db_dir = root.join("db");
        std::fs::create_dir_all(&db_dir).expect("create the db dir");
        let chown = Command::new("chown")
            .args(["www-data:www-data"])
            .arg(&db_dir)
            .status()
            .expect("run chown");
        assert!(chown.success(), "chown www-data {}", db_dir.display());
        let db_line = format!(
            "MILKY_DB_PATH = \"{}\"\n",
            db_dir.join("db.sqlite3").display()
        );
        let extra = if extra.contains("MILKY_DB_PATH") {
            extra.to_owned()
        } else if extra.contains("[env]\n") {
            extra.replacen("[env]\n", &format!("[env]\n{db_line}"), 1)
        } else {
            format!("[env]\n{db_line}\n{extra}")
        };
        let base = port_range(10);
        let front = base;
        let config = root.join("agent.toml");
        let text = format!(
            "store = \"{store}\"\nendpoint_url = \"{endpoint}\"\ngroup = \"{group}\"\nhost = \"{host}\"\n\n\
             [paths]\napps = \"{root}/apps\"\nstate = \"{root}/state\"\nweb = \"{root}/web\"\ntemplates = \"{root}/templates\"\nlogs = \"{root}/logs\"\n\n\
             [web]\nlisten = \"127.0.0.1:{front}\"\nslot_ports = [{first}, {last}]\nhealth_timeout = \"8s\"\ndrain_timeout = \"10s\"\n",
            store = ctx.store(),
            endpoint = endpoint,
            root = root.display(),
            first = base + 1,
            last = base + 9,
        );
        std::fs::write(&config, format!("{text}\n{extra}")).expect("write agent.toml");
        Self {
            host: host.into(),
            group: group.into(),
            root,
            front,
            config,
            env: aws_env(endpoint),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("milky-agent"));
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("RUST_LOG");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// One pass, as cron runs it.
    pub fn sync(&self) -> Output {
        self.command(&["sync"])
            .output()
            .expect("run milky-agent sync")
    }

    /// A GET through this server's nginx front.
    pub fn get(&self, host: &str, path: &str) -> Response {
        http_get(self.front, host, path)
            .unwrap_or_else(|e| panic!("GET http://{host}{path} on {}: {e}", self.host))
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn release_dir(&self, app: &str, version: &str) -> PathBuf {
        self.root
            .join("apps")
            .join(app)
            .join("releases")
            .join(version)
    }

    /// Pids of the nginx and Apache processes this agent started.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for entry in walk(&self.root.join("web")) {
            if entry.extension().is_some_and(|e| e == "pid")
                && let Ok(text) = std::fs::read_to_string(&entry)
                && let Ok(pid) = text.trim().parse()
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Stops everything this agent started, by pid, and waits for it to go.
    pub fn stop(&self) {
        let pids = self.pids();
        for pid in &pids {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let start = Instant::now();
        while pids.iter().any(|pid| alive(*pid)) && start.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in pids.iter().filter(|pid| alive(**pid)) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Whether a process runs (a zombie does not count).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// A plain HTTP/1.0 GET to 127.0.0.1:port with a Host header.
pub fn http_get(port: u16, host: &str, path: &str) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))?;
    Ok(Response {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
    })
}
