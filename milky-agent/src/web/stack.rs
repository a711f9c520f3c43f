//! [`WebStack`]: the nginx front and the Apache slots of every app on this server, and the
//! settings it runs with. What it does is spread by concern over `impl WebStack` blocks in the
//! sibling files: `paths.rs` (the layout of the root), `ports.rs`, `apache.rs` (slots),
//! `nginx.rs` (render, test, reload, switch, drain), `health.rs`, `served.rs` (what runs, read
//! back), `remove.rs` and `logs.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::service_commands::ServiceCommands;
use super::templates::Templates;
use super::{WebError, validate};

/// How long the agent waits for each kind of event before it calls it a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// From `apache2 -k start` (or `nginx`) to listening.
    pub start: Duration,
    /// Health check retries (connection refused, non-2xx, wrong version) end after this.
    pub health: Duration,
    /// Requests on their way to a slot that is no longer live finishing: old nginx workers after
    /// a reload (also nginx's `worker_shutdown_timeout`, so nginx itself enforces it), and
    /// connections open to the slot's port after a switch by link.
    pub drain: Duration,
    /// A graceful stop of a slot (also its `GracefulShutdownTimeout`), before the hard stop; for
    /// the old slot after a switch, the bound of its whole stop (requests in flight finishing,
    /// then the graceful stop), past which its processes are killed.
    pub stop: Duration,
    /// Each service command (`apache2 -k start`, `nginx -t`, `nginx -s reload`…): one still
    /// running after this is ended with its process group.
    pub command: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            start: Duration::from_secs(30),
            health: Duration::from_secs(30),
            drain: Duration::from_secs(30),
            stop: Duration::from_secs(30),
            command: Duration::from_secs(120),
        }
    }
}

/// Loopback ports of the two Apache slots of each app. Apps listed in `fixed` use those ports;
/// the others get a pair from `first..=last`, recorded in `ROOT/ports.toml` so it stays stable
/// across agent runs (the nginx files name them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotPorts {
    pub fixed: BTreeMap<String, [u16; 2]>,
    pub first: u16,
    pub last: u16,
}

impl Default for SlotPorts {
    fn default() -> Self {
        SlotPorts {
            fixed: BTreeMap::new(),
            first: 8100,
            last: 8999,
        }
    }
}

/// Everything the web stack needs from the agent's config. Plain data: the binary builds it from
/// `/etc/milky/agent.toml`, the tests build it by hand.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Where configs, pid files, logs and the web state live (must be reachable by www-data).
    pub root: PathBuf,
    /// nginx's front address, shared by all apps (told apart by server name).
    pub front: SocketAddr,
    /// nginx's HTTPS address, for apps whose TLS ends here; bound only while one is served.
    pub https: SocketAddr,
    /// Proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` nginx believes.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub slot_ports: SlotPorts,
    pub commands: ServiceCommands,
    /// nginx's pid file; `ROOT/nginx/nginx.pid` unless the service manager wants another.
    pub nginx_pid_file: Option<PathBuf>,
    /// nginx's `user` directive; unset, a root master runs its workers as `nobody`.
    pub nginx_user: Option<String>,
    pub nginx_worker_processes: u32,
    pub mime_types: PathBuf,
    pub apache_user: String,
    pub apache_group: String,
    pub apache_modules_dir: PathBuf,
    /// A directory whose files replace the embedded templates of the same name.
    pub template_dir: Option<PathBuf>,
    pub timeouts: Timeouts,
}

impl WebSettings {
    /// Settings for Debian's nginx and Apache, run directly with their own config roots.
    pub fn new(root: impl Into<PathBuf>, front: SocketAddr) -> Self {
        WebSettings {
            root: root.into(),
            front,
            https: SocketAddr::new(front.ip(), 443),
            trusted_proxies: Vec::new(),
            slot_ports: SlotPorts::default(),
            commands: ServiceCommands::default(),
            nginx_pid_file: None,
            nginx_user: None,
            nginx_worker_processes: 2,
            mime_types: PathBuf::from("/etc/nginx/mime.types"),
            apache_user: "www-data".to_owned(),
            apache_group: "www-data".to_owned(),
            apache_modules_dir: PathBuf::from("/usr/lib/apache2/modules"),
            template_dir: None,
            timeouts: Timeouts::default(),
        }
    }
}

/// The nginx front and the Apache slots of all apps of this server.
///
/// Every operation is idempotent and leaves files in a state the next run can read back, so the
/// agent may be killed at any point. It assumes one caller at a time (the agent's run lock).
#[derive(Debug, Clone)]
pub struct WebStack {
    pub(super) settings: WebSettings,
    pub(super) templates: Templates,
}

impl WebStack {
    /// Checks the settings, loads the templates (with the server's overrides) and creates the
    /// directories of the root.
    pub fn new(settings: WebSettings) -> Result<Self, WebError> {
        validate::config_path("web root", &settings.root)?;
        validate::config_path("Apache modules dir", &settings.apache_modules_dir)?;
        validate::config_path("nginx mime.types", &settings.mime_types)?;
        if let Some(pid) = &settings.nginx_pid_file {
            validate::config_path("nginx pid file", pid)?;
        }
        validate::account("Apache user", &settings.apache_user)?;
        validate::account("Apache group", &settings.apache_group)?;
        if let Some(user) = &settings.nginx_user {
            validate::account("nginx user", user)?;
        }
        let templates = match &settings.template_dir {
            Some(dir) => Templates::with_overrides(dir)?,
            None => Templates::embedded(),
        };
        let stack = WebStack {
            settings,
            templates,
        };
        for dir in [
            stack.nginx_apps_dir(),
            stack.nginx_live_dir(),
            stack.nginx_slots_dir(),
            stack.nginx_snippets_dir(),
            stack.nginx_logs_dir(),
            stack.nginx_prefix().join("tmp"),
            stack.apache_dir(),
        ] {
            fs_err::create_dir_all(&dir)?;
        }
        stack.make_tls_dirs()?;
        Ok(stack)
    }

    pub fn settings(&self) -> &WebSettings {
        &self.settings
    }
}

/// A stack on a fresh temp root, for the unit tests of its parts (nothing is started).
#[cfg(test)]
pub(super) fn test_stack() -> (tempfile::TempDir, WebStack) {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = WebSettings::new(dir.path(), "127.0.0.1:9".parse().expect("address"));
    let stack = WebStack::new(settings).expect("a stack on a temp root");
    (dir, stack)
}
