//! Agents playing servers: each with its own root under /tmp, its own nginx front port and
//! Apache slot ports on loopback, and its own `agent.toml`. Dropping one stops the nginx and
//! Apache processes it started, by the pids in its own pid files.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use milky_dev_support::{Ports, Response, Signal, http_get, pids_in, signal};

use crate::{TestContext, aws_env, bin};

/// One server of a group.
pub struct Agent {
    pub host: String,
    pub group: String,
    pub root: PathBuf,
    pub front: u16,
    pub config: PathBuf,
    env: Vec<(&'static str, String)>,
    /// The front port and the slots' range, held while the agent's servers may bind them (an
    /// Apache slot binds only when a release starts on it).
    _ports: Ports,
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
        let ports = Ports::reserve(10).expect("reserve the agent's ports");
        let front = ports.first();
        let config = root.join("agent.toml");
        let text = format!(
            "store = \"{store}\"\nendpoint_url = \"{endpoint}\"\ngroup = \"{group}\"\nhost = \"{host}\"\n\n\
             [paths]\napps = \"{root}/apps\"\nstate = \"{root}/state\"\nweb = \"{root}/web\"\ntemplates = \"{root}/templates\"\nlogs = \"{root}/logs\"\n\n\
             [web]\nlisten = \"127.0.0.1:{front}\"\nslot_ports = [{first}, {last}]\nhealth_timeout = \"8s\"\ndrain_timeout = \"10s\"\n",
            store = ctx.store(),
            endpoint = endpoint,
            root = root.display(),
            first = ports.get(1),
            last = ports.last(),
        );
        std::fs::write(&config, format!("{text}\n{extra}")).expect("write agent.toml");
        Self {
            host: host.into(),
            group: group.into(),
            root,
            front,
            config,
            env: aws_env(endpoint),
            _ports: ports,
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
        pids_in(&self.root.join("web"))
    }

    /// Stops everything this agent started, by pid, and waits for it to go.
    pub fn stop(&self) {
        milky_dev_support::stop(&self.pids(), Duration::from_secs(15));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Agents as services, as init runs them: `milky-agent run --interval 1s`, each one's stderr
/// in `service.log` in its root, stopped by pid (SIGTERM, then waited for) when dropped.
pub struct Services(Vec<Child>);

impl Services {
    /// `agents` started as services, in this order.
    pub fn run(agents: &[&Agent]) -> Self {
        let mut services = Self(Vec::new());
        for agent in agents {
            services.start(agent);
        }
        services
    }

    pub fn start(&mut self, agent: &Agent) {
        let log = std::fs::File::create(agent.root.join("service.log")).unwrap();
        self.0.push(
            agent
                .command(&["run", "--interval", "1s"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start milky-agent run"),
        );
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = signal(child.id(), Signal::TERM);
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}
