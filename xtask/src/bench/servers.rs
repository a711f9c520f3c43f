//! Servers played by `milky-agent` on loopback, as in the end-to-end tests: each with its own
//! root, nginx front port, Apache slot ports and `agent.toml`. Everything they start (nginx,
//! Apache) is stopped by the pids in their own pid files.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use milky_dev_support::{Ports, Signal, http_get, pids_in, signal, walk};

use super::Bench;
use super::cpu::Cgroup;

pub const APP: &str = "shop";

/// Lines of an agent's log, each with the time we read it (the agent writes each line at once).
pub type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

pub struct Server {
    pub host: String,
    pub root: PathBuf,
    pub front: u16,
    config: PathBuf,
    agent: PathBuf,
    env: Vec<(&'static str, String)>,
    run: Option<Child>,
    /// Where the CPU of the agent and all it starts is counted, once [`Server::count_cpu`] made it.
    cgroup: Option<Cgroup>,
    /// The front port and the slots' range, held while nginx and Apache may bind them.
    _ports: Ports,
}

impl Server {
    /// A server of `group`; `extra` is appended to its agent.toml.
    pub fn new(bench: &Bench, group: &str, host: &str, extra: &str) -> anyhow::Result<Self> {
        let root = bench.work.join(format!("server-{host}"));
        if root.exists() {
            std::fs::remove_dir_all(&root)?;
        }
        for dir in ["apps", "state", "web", "templates"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        for dir in [&root, &root.join("apps"), &root.join("web")] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
        // Hooks (migrations) run as www-data, as the app does: its SQLite database lives in a dir
        // that user can write, never in the (root-owned) release.
        let db = root.join("db");
        std::fs::create_dir_all(&db)?;
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o777))?;
        let ports = Ports::reserve(10).context("reserving the server's ports")?;
        let base = ports.first();
        let config = root.join("agent.toml");
        let text = format!(
            "store = \"{store}\"\nendpoint_url = \"{endpoint}\"\ngroup = \"{group}\"\nhost = \"{host}\"\n\n\
             [paths]\napps = \"{root}/apps\"\nstate = \"{root}/state\"\nweb = \"{root}/web\"\ntemplates = \"{root}/templates\"\nlogs = \"{root}/logs\"\n\n\
             [web]\nlisten = \"127.0.0.1:{base}\"\nslot_ports = [{first}, {last}]\nhealth_timeout = \"120s\"\ndrain_timeout = \"10s\"\n\n\
             [env]\nMILKY_DB_PATH = \"{root}/db/db.sqlite3\"\n\n{extra}",
            store = bench.store,
            endpoint = bench.moto.endpoint,
            root = root.display(),
            first = ports.get(1),
            last = ports.last(),
        );
        std::fs::write(&config, text)?;
        Ok(Self {
            host: host.into(),
            root,
            front: base,
            config,
            agent: bench.agent.clone(),
            env: bench.aws_env(),
            run: None,
            cgroup: None,
            _ports: ports,
        })
    }

    pub fn config(&self) -> &Path {
        &self.config
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.env.clone()
    }

    /// Counts the CPU of the agents started from now on, and of all they start, in a cgroup of
    /// this server's own.
    pub fn count_cpu(&mut self) -> Result<(), String> {
        self.cgroup = Some(Cgroup::create(&self.host)?);
        Ok(())
    }

    /// The CPU time counted so far (see [`Server::count_cpu`]).
    pub fn cpu(&self) -> Option<Duration> {
        self.cgroup.as_ref()?.usage()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = match &self.cgroup {
            Some(cgroup) => cgroup.command(&self.agent),
            None => Command::new(&self.agent),
        };
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

    /// One pass; returns whether it succeeded and its log lines with the time each was read.
    pub fn sync(&self) -> anyhow::Result<(bool, Vec<(Instant, String)>)> {
        let mut child = self
            .command(&["sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting milky-agent sync")?;
        let lines = Lines::default();
        read_lines(child.stderr.take().expect("piped"), lines.clone())
            .join()
            .ok();
        let ok = child.wait()?.success();
        let lines = std::mem::take(&mut *lines.lock().expect("lines"));
        Ok((ok, lines))
    }

    /// A pass that must succeed.
    pub fn sync_ok(&self) -> anyhow::Result<()> {
        let (ok, lines) = self.sync()?;
        anyhow::ensure!(ok, "sync on {} failed:\n{}", self.host, text(&lines));
        Ok(())
    }

    /// `milky-agent run --interval …` in the background; its log goes to the returned lines.
    pub fn start_run(&mut self, interval: &str) -> anyhow::Result<Lines> {
        let mut child = self
            .command(&["run", "--interval", interval])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting milky-agent run")?;
        let lines = Lines::default();
        read_lines(child.stderr.take().expect("piped"), lines.clone());
        self.run = Some(child);
        Ok(lines)
    }

    /// Stops the `run` loop (SIGTERM, by its pid), then nginx and Apache.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.run.take() {
            let _ = signal(child.id(), Signal::TERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        milky_dev_support::stop(&self.web_pids(), Duration::from_secs(15));
    }

    /// Pids of the nginx and Apache processes this server's agent started.
    fn web_pids(&self) -> Vec<u32> {
        pids_in(&self.root.join("web"))
    }

    /// The version answering `/` through this server's nginx, if it answers 200.
    pub fn serving(&self) -> Option<String> {
        let response = http_get(self.front, APP, "/").ok()?;
        (response.status == 200)
            .then(|| response.header("X-Milky-Version"))
            .flatten()
    }

    /// The httpd.conf of the live Apache slot (from the app's live link, which points at
    /// `…/nginx/slots/APP.SLOT.PORT`).
    pub fn live_httpd_conf(&self) -> anyhow::Result<PathBuf> {
        let web = self.root.join("web");
        let link = walk(&web)
            .into_iter()
            .find(|p| p.ends_with(format!("nginx/live/{APP}")))
            .context("the app's live link")?;
        let target = std::fs::read_link(&link)?;
        let slot = target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('.').nth(1))
            .with_context(|| format!("{} points at no slot dir", link.display()))?
            .to_owned();
        walk(&web)
            .into_iter()
            .find(|p| p.ends_with(format!("apache/{APP}/{slot}/httpd.conf")))
            .context("the live slot's httpd.conf")
    }

    pub fn remove(mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_lines(stream: impl Read + Send + 'static, lines: Lines) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            lines.lock().expect("lines").push((Instant::now(), line));
        }
    })
}

pub fn text(lines: &[(Instant, String)]) -> String {
    lines
        .iter()
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}
