//! [`WebStack`]: the nginx front and the Apache slots of every app on this server.
//!
//! Layout under the root (all state is in files, so a restarted agent reads back what runs):
//! ```text
//! ROOT/nginx/                 nginx prefix: nginx.conf, nginx.pid, logs/, tmp/
//! ROOT/nginx/apps/APP.conf    one app's server block; its first line records whether it is the default
//! ROOT/nginx/live/APP         symlink to the live slot's dir below: the record of which slot is live
//! ROOT/nginx/slots/APP.SLOT.PORT   what nginx needs of a slot: its port (in the name), `static` link
//! ROOT/nginx/snippets/APP.HASH.conf   the package's nginx snippet, named by its content
//! ROOT/nginx/reload-pending   exists while an app file changed but nginx has not reloaded yet
//! ROOT/apache/APP/SLOT/       httpd.conf, wsgi.py, slot.toml, run/ (pid, sockets), logs/
//! ROOT/ports.toml             slot ports handed out to apps (unless fixed in the settings)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::commands::{CommandLine, ServiceCommands, combined};
use super::process::{
    children, established_connections, is_alive, listening, read_pid, replace_symlink, tail,
    wait_until, write_atomic,
};
use super::templates::{APACHE_SLOT, APACHE_WSGI, NGINX_APP, NGINX_MAIN, Templates};
use super::{AppSite, Slot, WebError, validate};

/// The header line the agent (not the template) puts first in every app's nginx file.
const SITE_HEADER: &str = "# milky-site:";
/// The header of files written before slots were switched by link, which named the live slot
/// (`# milky-live: slot=blue port=8101 default=false`); read back until the next switch.
const LEGACY_HEADER: &str = "# milky-live:";
const POLL: Duration = Duration::from_millis(50);

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
    /// A graceful stop of a slot (also its `GracefulShutdownTimeout`), before the hard stop.
    pub stop: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            start: Duration::from_secs(30),
            health: Duration::from_secs(30),
            drain: Duration::from_secs(30),
            stop: Duration::from_secs(30),
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

/// What the agent recorded when it started a slot (`slot.toml`): which release it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub app: String,
    pub slot: Slot,
    pub port: u16,
    pub release_dir: PathBuf,
    /// `Host` header of health checks.
    pub server_name: String,
}

/// What a passing health check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub url: String,
    pub status: u16,
    pub version: Option<String>,
    pub attempts: u32,
    pub elapsed: Duration,
}

/// The nginx front and the Apache slots of all apps of this server.
///
/// Every operation is idempotent and leaves files in a state the next run can read back, so the
/// agent may be killed at any point. It assumes one caller at a time (the agent's run lock).
#[derive(Debug, Clone)]
pub struct WebStack {
    settings: WebSettings,
    templates: Templates,
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
            stack.nginx_prefix().join("live"),
            stack.nginx_slots_dir(),
            stack.nginx_snippets_dir(),
            stack.nginx_prefix().join("logs"),
            stack.nginx_prefix().join("tmp"),
            stack.settings.root.join("apache"),
        ] {
            fs_err::create_dir_all(&dir)?;
        }
        Ok(stack)
    }

    pub fn settings(&self) -> &WebSettings {
        &self.settings
    }

    // ---- paths -------------------------------------------------------------------------------

    pub fn nginx_prefix(&self) -> PathBuf {
        self.settings.root.join("nginx")
    }

    pub fn nginx_conf(&self) -> PathBuf {
        self.nginx_prefix().join("nginx.conf")
    }

    pub fn nginx_error_log(&self) -> PathBuf {
        self.nginx_prefix().join("logs/error.log")
    }

    fn nginx_logs_dir(&self) -> PathBuf {
        self.nginx_prefix().join("logs")
    }

    /// nginx's log of one app's server block: `kind` is `access` or `error`.
    pub fn nginx_app_log(&self, app: &str, kind: &str) -> PathBuf {
        self.nginx_logs_dir().join(format!("{app}.{kind}.log"))
    }

    /// Logs of removed apps' slots, kept until the agent has shipped them.
    fn retired_logs_dir(&self) -> PathBuf {
        self.settings.root.join("retired-logs")
    }

    fn nginx_apps_dir(&self) -> PathBuf {
        self.nginx_prefix().join("apps")
    }

    /// The nginx file of `app` (present while the app is served).
    pub fn nginx_app_file(&self, app: &str) -> PathBuf {
        self.nginx_apps_dir().join(format!("{app}.conf"))
    }

    /// The link nginx resolves on every request of `app` to find its live slot: switching slots
    /// replaces it, and needs no reload.
    pub fn nginx_live_link(&self, app: &str) -> PathBuf {
        self.nginx_prefix().join("live").join(app)
    }

    /// nginx's view of one slot, where the live link points while the slot is live: the name
    /// ends in the slot's port (read by the `$milky_live_port` map of the main config) and its
    /// `static` link leads to the static files of the slot's release.
    fn nginx_slot_dir(&self, app: &str, slot: Slot, port: u16) -> PathBuf {
        self.nginx_slots_dir().join(format!("{app}.{slot}.{port}"))
    }

    fn nginx_slots_dir(&self) -> PathBuf {
        self.nginx_prefix().join("slots")
    }

    fn nginx_snippets_dir(&self) -> PathBuf {
        self.nginx_prefix().join("snippets")
    }

    fn nginx_pid_file(&self) -> PathBuf {
        self.settings
            .nginx_pid_file
            .clone()
            .unwrap_or_else(|| self.nginx_prefix().join("nginx.pid"))
    }

    fn reload_marker(&self) -> PathBuf {
        self.nginx_prefix().join("reload-pending")
    }

    fn app_dir(&self, app: &str) -> PathBuf {
        self.settings.root.join("apache").join(app)
    }

    /// The config root of one slot.
    pub fn slot_dir(&self, app: &str, slot: Slot) -> PathBuf {
        self.app_dir(app).join(slot.as_str())
    }

    pub fn slot_conf(&self, app: &str, slot: Slot) -> PathBuf {
        self.slot_dir(app, slot).join("httpd.conf")
    }

    pub fn slot_error_log(&self, app: &str, slot: Slot) -> PathBuf {
        self.slot_dir(app, slot).join("logs/error.log")
    }

    fn slot_pid_file(&self, app: &str, slot: Slot) -> PathBuf {
        self.slot_dir(app, slot).join("run/httpd.pid")
    }

    fn ports_file(&self) -> PathBuf {
        self.settings.root.join("ports.toml")
    }

    fn nginx_vars(&self, conf: &Path) -> [(&'static str, String); 3] {
        [
            ("prefix", self.nginx_prefix().display().to_string()),
            ("conf", conf.display().to_string()),
            ("error_log", self.nginx_error_log().display().to_string()),
        ]
    }

    // ---- state read back ---------------------------------------------------------------------

    /// The slot nginx sends `app`'s requests to, read from the app's live link; `None` when the
    /// app is not served (it has no nginx file).
    pub fn live_slot(&self, app: &str) -> Result<Option<Slot>, WebError> {
        validate::app_name(app)?;
        let Some(header) = self.read_site_header(&self.nginx_app_file(app))? else {
            return Ok(None);
        };
        // A file from an older agent routes to the slot its header names; the next switch
        // replaces it.
        if header.legacy_slot.is_some() {
            return Ok(header.legacy_slot);
        }
        let link = self.nginx_live_link(app);
        let target = match fs_err::read_link(&link) {
            Ok(target) => target,
            // Lost (nginx fails the app's requests meanwhile): the next deploy makes a new one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        target
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.split('.').nth(1))
            .and_then(|slot| slot.parse().ok())
            .map(Some)
            .ok_or_else(|| WebError::State {
                path: link,
                reason: format!(
                    "points at {}, not at a slot dir named APP.SLOT.PORT",
                    target.display()
                ),
            })
    }

    /// The pid of a slot's Apache, if it runs.
    pub fn slot_pid(&self, app: &str, slot: Slot) -> Result<Option<u32>, WebError> {
        validate::app_name(app)?;
        Ok(read_pid(&self.slot_pid_file(app, slot))?.filter(|pid| is_alive(*pid)))
    }

    /// Whether a slot's Apache runs (from its pid file and /proc).
    pub fn is_running(&self, app: &str, slot: Slot) -> Result<bool, WebError> {
        Ok(self.slot_pid(app, slot)?.is_some())
    }

    /// The pid of the nginx master, if it runs.
    pub fn nginx_pid(&self) -> Result<Option<u32>, WebError> {
        Ok(read_pid(&self.nginx_pid_file())?.filter(|pid| is_alive(*pid)))
    }

    /// What was recorded when the slot was last started (the release it runs).
    pub fn slot_info(&self, app: &str, slot: Slot) -> Result<Option<SlotInfo>, WebError> {
        validate::app_name(app)?;
        let path = self.slot_dir(app, slot).join("slot.toml");
        let text = match fs_err::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| WebError::State {
                path,
                reason: e.to_string(),
            })
    }

    /// Apps this stack knows of: served by nginx or with an Apache slot dir. A reconcile loop
    /// removes those the index no longer lists.
    pub fn known_apps(&self) -> Result<BTreeSet<String>, WebError> {
        let mut apps: BTreeSet<String> = self.served_apps()?.into_keys().collect();
        for entry in fs_err::read_dir(self.settings.root.join("apache"))? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str()
                && validate::app_name(name).is_ok()
            {
                apps.insert(name.to_owned());
            }
        }
        Ok(apps)
    }

    /// Apps with an nginx file, and whether each is the default server.
    fn served_apps(&self) -> Result<BTreeMap<String, bool>, WebError> {
        let mut apps = BTreeMap::new();
        for entry in fs_err::read_dir(self.nginx_apps_dir())? {
            let path = entry?.path();
            let Some(app) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".conf"))
            else {
                continue;
            };
            if validate::app_name(app).is_err() {
                continue;
            }
            let default = self
                .read_site_header(&path)?
                .is_some_and(|h| h.default_server);
            apps.insert(app.to_owned(), default);
        }
        Ok(apps)
    }

    fn read_site_header(&self, path: &Path) -> Result<Option<SiteHeader>, WebError> {
        let text = match fs_err::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        SiteHeader::parse(&text)
            .map(Some)
            .ok_or_else(|| WebError::State {
                path: path.to_owned(),
                reason: format!("first line is not a `{SITE_HEADER} default=…` header"),
            })
    }

    // ---- ports -------------------------------------------------------------------------------

    /// The loopback port of a slot: fixed in the settings, or handed out once from the range and
    /// recorded in `ROOT/ports.toml`.
    pub fn slot_port(&self, app: &str, slot: Slot) -> Result<u16, WebError> {
        validate::app_name(app)?;
        let ports = &self.settings.slot_ports;
        if let Some(pair) = ports.fixed.get(app) {
            return Ok(pair[slot.index()]);
        }
        let mut given = self.read_ports()?;
        if let Some(pair) = given.get(app) {
            return Ok(pair[slot.index()]);
        }
        let used: BTreeSet<u16> = given
            .values()
            .chain(ports.fixed.values())
            .flatten()
            .copied()
            .collect();
        let pair = (ports.first..ports.last)
            .step_by(2)
            .map(|p| [p, p + 1])
            .find(|pair| pair.iter().all(|p| !used.contains(p) && !listening(*p)))
            .ok_or_else(|| WebError::NoSlotPorts {
                app: app.to_owned(),
                first: ports.first,
                last: ports.last,
            })?;
        given.insert(app.to_owned(), pair);
        self.write_ports(&given)?;
        Ok(pair[slot.index()])
    }

    fn read_ports(&self) -> Result<BTreeMap<String, [u16; 2]>, WebError> {
        let path = self.ports_file();
        match fs_err::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| WebError::State {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e.into()),
        }
    }

    fn write_ports(&self, ports: &BTreeMap<String, [u16; 2]>) -> Result<(), WebError> {
        let text = toml::to_string(ports).map_err(|e| WebError::State {
            path: self.ports_file(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.ports_file(), &text)
    }

    // ---- rendering ---------------------------------------------------------------------------

    /// The httpd.conf of `site` on `slot` (checked first).
    pub fn render_apache(&self, site: &AppSite, slot: Slot) -> Result<String, WebError> {
        site.validate()?;
        let dir = self.slot_dir(&site.name, slot);
        let wsgi_script = dir.join("wsgi.py");
        self.templates.render(
            APACHE_SLOT,
            json!({
                "app": site.name,
                "slot": slot,
                "slot_dir": dir,
                "run_dir": dir.join("run"),
                "log_dir": dir.join("logs"),
                "port": self.slot_port(&site.name, slot)?,
                "modules_dir": self.settings.apache_modules_dir,
                "user": self.settings.apache_user,
                "group": self.settings.apache_group,
                "shutdown_timeout_secs": self.settings.timeouts.stop.as_secs().max(1),
                "server_names": site.server_names,
                "process_group": format!("{}-{}", site.name, slot),
                "venv_dir": site.venv_dir,
                "release_dir": site.release_dir,
                "processes": site.processes,
                "threads": site.threads,
                "wsgi_script": wsgi_script,
                "wsgi_script_name": "wsgi.py",
                "apache_snippet": site.apache_snippet.as_ref().map(|s| site.in_release(s)),
            }),
        )
    }

    /// The WSGI wrapper of `site` on `slot`: sets the app's environment, then runs its WSGI file.
    pub fn render_wsgi(&self, site: &AppSite, slot: Slot) -> Result<String, WebError> {
        site.validate()?;
        let mut env = site.env.clone();
        env.insert("MILKY_APP".to_owned(), site.name.clone());
        env.insert("MILKY_SLOT".to_owned(), slot.to_string());
        // JSON strings and objects of strings are valid Python literals.
        let wsgi_file = site.in_release(&site.wsgi_file);
        self.templates.render(
            APACHE_WSGI,
            json!({
                "app": site.name,
                "slot": slot,
                "env_json": serde_json::to_string(&env).unwrap_or_default(),
                "wsgi_file_json": serde_json::to_string(&wsgi_file).unwrap_or_default(),
                "callable_json": serde_json::to_string(&site.wsgi_callable).unwrap_or_default(),
                "secret_env_json": serde_json::to_string(&site.secret_env_file).unwrap_or_default(),
            }),
        )
    }

    /// The nginx file of `site`, header line included. It names no slot or release (requests
    /// find the live slot through the live link), so a switch between releases that agree on
    /// server names, static URL and nginx snippet leaves it unchanged: then nginx does not reload.
    pub fn render_nginx_app(&self, site: &AppSite) -> Result<String, WebError> {
        site.validate()?;
        let snippet = self.nginx_snippet(site)?.map(|(path, _)| path);
        self.render_site(site, snippet.as_deref())
    }

    fn render_site(&self, site: &AppSite, snippet: Option<&Path>) -> Result<String, WebError> {
        let live = self.nginx_live_link(&site.name);
        let body = self.templates.render(
            NGINX_APP,
            json!({
                "app": site.name,
                "live_link": live,
                "listen": self.settings.front.to_string(),
                "default_server": site.default_server,
                "server_names": site.server_names,
                "static_dir": site.static_dir.as_ref().map(|_| live.join("static")),
                "static_url": site.static_url,
                "nginx_snippet": snippet,
                "access_log": self.nginx_app_log(&site.name, "access"),
                "error_log": self.nginx_app_log(&site.name, "error"),
            }),
        )?;
        let header = SiteHeader {
            default_server: site.default_server,
            legacy_slot: None,
        };
        Ok(format!("{}\n{body}", header.line()))
    }

    /// The package's nginx snippet and where the agent keeps its copy: named by its contents, so
    /// the app's file changes (and nginx reloads) exactly when the snippet does.
    fn nginx_snippet(&self, site: &AppSite) -> Result<Option<(PathBuf, Vec<u8>)>, WebError> {
        let Some(snippet) = &site.nginx_snippet else {
            return Ok(None);
        };
        let text = fs_err::read(site.in_release(snippet))?;
        let digest = hex::encode(&Sha256::digest(&text)[..8]);
        let path = self
            .nginx_snippets_dir()
            .join(format!("{}.{digest}.conf", site.name));
        Ok(Some((path, text)))
    }

    /// nginx's main config including `includes` (app files); `default_app` says whether one of
    /// them is the default server (then there is no catch-all 404 server).
    pub fn render_nginx_main(
        &self,
        includes: &[PathBuf],
        default_app: bool,
    ) -> Result<String, WebError> {
        self.templates.render(
            NGINX_MAIN,
            json!({
                "user": self.settings.nginx_user,
                "worker_processes": self.settings.nginx_worker_processes.max(1),
                "prefix": self.nginx_prefix(),
                "pid_file": self.nginx_pid_file(),
                "error_log": self.nginx_error_log(),
                "shutdown_timeout_secs": self.settings.timeouts.drain.as_secs().max(1),
                "mime_types": self.settings.mime_types,
                "listen": self.settings.front.to_string(),
                "app_is_default": default_app,
                "includes": includes,
            }),
        )
    }

    // ---- Apache slots ------------------------------------------------------------------------

    /// Starts `site`'s release on `slot`: renders its config, tests it (on failure nothing is
    /// started and the error carries Apache's output), starts Apache and waits until it listens.
    /// An idle slot that still runs (an older release, a crashed run) is stopped first; the live
    /// slot is never restarted while it runs.
    pub fn start_slot(&self, site: &AppSite, slot: Slot) -> Result<SlotInfo, WebError> {
        site.validate()?;
        let app = site.name.as_str();
        if self.live_slot(app)? == Some(slot) && self.is_running(app, slot)? {
            return Err(WebError::SlotIsLive {
                app: app.to_owned(),
                slot,
                action: "restarting",
            });
        }
        self.stop_slot_now(app, slot)?;
        let port = self.slot_port(app, slot)?;
        // Checked once our own instance is stopped: anything still there is someone else.
        if listening(port) {
            return Err(WebError::PortInUse {
                app: app.to_owned(),
                slot,
                port,
            });
        }
        let dir = self.slot_dir(app, slot);
        for sub in ["run", "logs"] {
            fs_err::create_dir_all(dir.join(sub))?;
        }
        let conf = self.slot_conf(app, slot);
        let candidate = dir.join("httpd.conf.new");
        write_atomic(&dir.join("wsgi.py"), &self.render_wsgi(site, slot)?)?;
        write_atomic(&candidate, &self.render_apache(site, slot)?)?;
        let candidate_str = candidate.display().to_string();
        let (command, output) =
            self.settings
                .commands
                .apache_test
                .run(&slot_vars(&candidate_str, app, slot, &dir))?;
        if !output.status.success() {
            fs_err::remove_file(&candidate)?;
            return Err(WebError::ApacheConfigTest {
                app: app.to_owned(),
                slot,
                command,
                output: combined(&output),
            });
        }
        fs_err::rename(&candidate, &conf)?;
        let info = SlotInfo {
            app: app.to_owned(),
            slot,
            port,
            release_dir: site.release_dir.clone(),
            server_name: site.server_names[0].clone(),
        };
        let info_text = toml::to_string(&info).map_err(|e| WebError::State {
            path: dir.join("slot.toml"),
            reason: e.to_string(),
        })?;
        write_atomic(&dir.join("slot.toml"), &info_text)?;
        remove_if_exists(&self.slot_pid_file(app, slot))?;
        let conf_str = conf.display().to_string();
        tracing::info!(app, %slot, port, release = %site.release_dir.display(), "starting Apache slot");
        self.settings.commands.apache_start.run_ok(
            &format!("start Apache of app {app} slot {slot}"),
            &slot_vars(&conf_str, app, slot, &dir),
        )?;
        let up = wait_until(self.settings.timeouts.start, POLL, || {
            self.is_running(app, slot).unwrap_or(false) && listening(port)
        });
        if !up {
            // Do not leave a half-started instance behind; the error below says why it failed.
            let _ = self.stop_slot_now(app, slot);
            return Err(WebError::SlotStart {
                app: app.to_owned(),
                slot,
                port,
                timeout: self.settings.timeouts.start,
                log: log_excerpt(&self.slot_error_log(app, slot)),
            });
        }
        Ok(info)
    }

    /// GETs `path` directly from the slot (not through nginx), with the app's first server name as
    /// `Host`, retrying until `Timeouts::health`. Passes on a 2xx whose `X-Milky-Version` header
    /// equals `expected_version` (when given): a version check, so an answer from some other
    /// release can never pass for the new one.
    pub fn health_check(
        &self,
        app: &str,
        slot: Slot,
        path: &str,
        expected_version: Option<&str>,
    ) -> Result<HealthReport, WebError> {
        validate::url_path("health check path", path)?;
        let info = self
            .slot_info(app, slot)?
            .ok_or_else(|| WebError::SlotNotRunning {
                app: app.to_owned(),
                slot,
            })?;
        let url = format!("http://127.0.0.1:{}{path}", info.port);
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .redirects(0)
            .build();
        let started = Instant::now();
        let mut attempts = 0;
        let last = loop {
            if !self.is_running(app, slot)? {
                break "Apache is not running".to_owned();
            }
            attempts += 1;
            let failure = match agent.get(&url).set("Host", &info.server_name).call() {
                Ok(resp) if (200..300).contains(&resp.status()) => {
                    let version = resp.header("X-Milky-Version").map(str::to_owned);
                    match expected_version {
                        Some(want) if version.as_deref() != Some(want) => {
                            format!("answered version {version:?}, expected {want:?}")
                        }
                        _ => {
                            return Ok(HealthReport {
                                url,
                                status: resp.status(),
                                version,
                                attempts,
                                elapsed: started.elapsed(),
                            });
                        }
                    }
                }
                Ok(resp) => format!("HTTP {}", resp.status()),
                Err(ureq::Error::Status(code, resp)) => {
                    let body = resp.into_string().unwrap_or_default();
                    let excerpt: String = body.chars().take(300).collect();
                    format!("HTTP {code}: {}", excerpt.trim())
                }
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= self.settings.timeouts.health {
                break failure;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        Err(WebError::Unhealthy {
            app: app.to_owned(),
            slot,
            url,
            attempts,
            elapsed: started.elapsed(),
            last,
            log: log_excerpt(&self.slot_error_log(app, slot)),
        })
    }

    /// Stops a slot that nginx no longer sends requests to: first waits until no request can still
    /// be on its way there (nginx's old workers gone after a reload, no connection open to the
    /// slot's port), then stops Apache gracefully and waits for its pid to go. Refuses the live
    /// slot.
    pub fn stop_slot(&self, app: &str, slot: Slot) -> Result<(), WebError> {
        validate::app_name(app)?;
        if self.live_slot(app)? == Some(slot) {
            return Err(WebError::SlotIsLive {
                app: app.to_owned(),
                slot,
                action: "stopping",
            });
        }
        if !self.is_running(app, slot)? {
            return Ok(());
        }
        self.drain_nginx()?;
        let port = match self.slot_info(app, slot)? {
            Some(info) => info.port,
            None => self.slot_port(app, slot)?,
        };
        self.wait_for_requests_to_end(app, slot, port);
        self.stop_slot_now(app, slot)
    }

    /// Waits until no connection to `port` is open. nginx opens one for each request it proxies
    /// and closes it with the answer, so then no request is in flight on the slot that a stop
    /// could cut short, nor one in Apache's listen backlog that a stop would reset. It must be
    /// seen quiet twice in a row: a request that read the live link just before the switch may
    /// still be connecting. After the drain timeout the slot is stopped anyway (a client that
    /// talks to the slot directly must not hold up a deploy).
    fn wait_for_requests_to_end(&self, app: &str, slot: Slot, port: u16) {
        let mut quiet = 0;
        let drained = wait_until(self.settings.timeouts.drain, POLL, || {
            quiet = if established_connections(port) == 0 {
                quiet + 1
            } else {
                0
            };
            quiet >= 2
        });
        if !drained {
            tracing::warn!(app, %slot, port, "connections to the slot still open after the drain timeout; stopping it anyway");
        }
    }

    /// Graceful stop, then a hard stop if it takes too long; no drain, no live check.
    fn stop_slot_now(&self, app: &str, slot: Slot) -> Result<(), WebError> {
        let Some(pid) = self.slot_pid(app, slot)? else {
            return remove_if_exists(&self.slot_pid_file(app, slot));
        };
        let dir = self.slot_dir(app, slot);
        let conf = self.slot_conf(app, slot).display().to_string();
        let vars = slot_vars(&conf, app, slot, &dir);
        tracing::info!(app, %slot, pid, "stopping Apache slot");
        let commands = &self.settings.commands;
        commands
            .apache_stop
            .run_ok(&format!("stop Apache of app {app} slot {slot}"), &vars)?;
        let timeouts = &self.settings.timeouts;
        // Apache's own GracefulShutdownTimeout is `stop`; give it a moment beyond that.
        if !wait_until(timeouts.stop + Duration::from_secs(2), POLL, || {
            !is_alive(pid)
        }) {
            tracing::warn!(app, %slot, pid, "graceful stop timed out, stopping hard");
            let _ = commands.apache_force_stop.run(&vars)?;
            if !wait_until(Duration::from_secs(10), POLL, || !is_alive(pid)) {
                return Err(WebError::SlotStop {
                    app: app.to_owned(),
                    slot,
                    pid,
                    timeout: timeouts.stop,
                });
            }
        }
        remove_if_exists(&self.slot_pid_file(app, slot))
    }

    // ---- nginx -------------------------------------------------------------------------------

    /// Points nginx at `slot` for `site`. The slot's nginx dir gets a `static` link to the
    /// release's static files. When the app's nginx file stays as it is (the usual case: the
    /// releases agree on server names, static URL and nginx snippet), replacing the live link is
    /// the whole switch: nginx follows it from the next request on, and no reload closes the
    /// clients' kept-alive connections. Otherwise the new file is tested with the whole config
    /// (on failure the previous file and link stay and other apps are untouched), link and file
    /// are put in place and nginx starts or reloads; then this returns once the old workers are
    /// gone. The slot must be running (and should have passed its health check).
    pub fn switch_nginx(&self, site: &AppSite, slot: Slot) -> Result<(), WebError> {
        site.validate()?;
        let app = site.name.as_str();
        if !self.is_running(app, slot)? {
            return Err(WebError::SlotNotRunning {
                app: app.to_owned(),
                slot,
            });
        }
        let snippet = self.nginx_snippet(site)?;
        let rendered = self.render_site(site, snippet.as_ref().map(|(path, _)| path.as_path()))?;
        let slot_dir = self.prepare_nginx_slot(site, slot)?;
        if let Some((path, text)) = &snippet
            && !path.exists()
        {
            write_atomic(path, text)?;
        }
        let unchanged = fs_err::read_to_string(self.nginx_app_file(app))
            .is_ok_and(|current| current == rendered);
        if unchanged && !self.reload_marker().exists() && self.nginx_pid()?.is_some() {
            tracing::info!(app, %slot, "switching nginx by its live link (config unchanged, no reload)");
            return self.point_live_link(app, &slot_dir);
        }
        tracing::info!(app, %slot, "switching nginx (config changed: test, then reload)");
        let result = self.apply_nginx(
            app,
            Some((rendered, site.default_server)),
            Some(&slot_dir),
            true,
        );
        self.prune_snippets(app)?;
        result
    }

    /// Makes the slot's nginx dir (named by its port) with a `static` link to the release's
    /// static files, replacing an older release's link. Only done for a slot that is not live or
    /// not running, so no request sees the change before the switch.
    fn prepare_nginx_slot(&self, site: &AppSite, slot: Slot) -> Result<PathBuf, WebError> {
        let port = self.slot_port(&site.name, slot)?;
        let dir = self.nginx_slot_dir(&site.name, slot, port);
        fs_err::create_dir_all(&dir)?;
        let link = dir.join("static");
        match &site.static_dir {
            Some(static_dir) => replace_symlink(&site.in_release(static_dir), &link)?,
            None => remove_if_exists(&link)?,
        }
        Ok(dir)
    }

    /// Points `app`'s live link at a slot's nginx dir (relative, so the root may move).
    fn point_live_link(&self, app: &str, slot_dir: &Path) -> Result<(), WebError> {
        let name = slot_dir.file_name().unwrap_or_default();
        replace_symlink(
            &Path::new("../slots").join(name),
            &self.nginx_live_link(app),
        )?;
        crate::crash::point("nginx:live-link-replaced");
        Ok(())
    }

    /// Removes copies of `app`'s nginx snippet that its nginx file does not include (older ones,
    /// or one whose config test failed).
    fn prune_snippets(&self, app: &str) -> Result<(), WebError> {
        let current = fs_err::read_to_string(self.nginx_app_file(app)).unwrap_or_default();
        for entry in read_dir_if_exists(&self.nginx_snippets_dir())? {
            let path = entry.path();
            let ours = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.strip_prefix(app).is_some_and(|r| r.starts_with('.')));
            if ours && !current.contains(&*path.to_string_lossy()) {
                remove_if_exists(&path)?;
            }
        }
        Ok(())
    }

    /// Makes nginx run the config on disk: starts it when it is down (e.g. after a reboot) and
    /// reloads it when an earlier run changed a file but was interrupted before the reload.
    pub fn ensure_nginx(&self) -> Result<(), WebError> {
        let running = self.nginx_pid()?.is_some();
        if running && !self.reload_marker().exists() {
            return Ok(());
        }
        if !self.nginx_conf().exists() {
            let apps = self.served_apps()?;
            self.write_main_conf(&apps, None)?;
        }
        self.reload_or_start(true)?;
        remove_if_exists(&self.reload_marker())
    }

    /// Changes `app`'s nginx file (`Some`: new contents; `None`: remove it), tests, applies; with
    /// `live`, the app's live link is pointed at that slot dir once the test passed.
    fn apply_nginx(
        &self,
        app: &str,
        new: Option<(String, bool)>,
        live: Option<&Path>,
        start: bool,
    ) -> Result<(), WebError> {
        let final_file = self.nginx_app_file(app);
        let candidate_file = self.nginx_apps_dir().join(format!("{app}.conf.new"));
        let mut apps = self.served_apps()?;
        match &new {
            Some((text, default)) => {
                write_atomic(&candidate_file, text)?;
                apps.insert(app.to_owned(), *default);
            }
            None => {
                apps.remove(app);
            }
        }
        let defaults: Vec<&String> = apps.iter().filter(|(_, d)| **d).map(|(a, _)| a).collect();
        if let [first, second, ..] = defaults.as_slice() {
            remove_if_exists(&candidate_file)?;
            return Err(WebError::TwoDefaultServers {
                first: (*first).clone(),
                second: (*second).clone(),
            });
        }

        // Test the exact config nginx would load, with the candidate in place of the live file.
        let test_conf = self.nginx_prefix().join("nginx.test.conf");
        let candidate = new.as_ref().map(|_| (app, candidate_file.as_path()));
        self.write_main_conf_to(&test_conf, &apps, candidate)?;
        let vars = self.nginx_vars(&test_conf);
        let (command, output) = self.settings.commands.nginx_test.run(&vars)?;
        remove_if_exists(&test_conf)?;
        if !output.status.success() {
            remove_if_exists(&candidate_file)?;
            return Err(WebError::NginxConfigTest {
                app: app.to_owned(),
                command,
                output: combined(&output),
            });
        }

        // From here until the reload is done, the marker tells a later run to finish the job.
        write_atomic(&self.reload_marker(), app)?;
        if let Some(slot_dir) = live {
            self.point_live_link(app, slot_dir)?;
        }
        match new {
            Some(_) => fs_err::rename(&candidate_file, &final_file)?,
            None => remove_if_exists(&final_file)?,
        }
        self.write_main_conf(&apps, None)?;
        crate::crash::point("nginx:file-changed");
        if self.reload_or_start(start)? {
            remove_if_exists(&self.reload_marker())?;
        }
        Ok(())
    }

    fn write_main_conf(
        &self,
        apps: &BTreeMap<String, bool>,
        candidate: Option<(&str, &Path)>,
    ) -> Result<(), WebError> {
        self.write_main_conf_to(&self.nginx_conf(), apps, candidate)
    }

    fn write_main_conf_to(
        &self,
        path: &Path,
        apps: &BTreeMap<String, bool>,
        candidate: Option<(&str, &Path)>,
    ) -> Result<(), WebError> {
        let includes: Vec<PathBuf> = apps
            .keys()
            .map(|a| match candidate {
                Some((c, file)) if c == a => file.to_owned(),
                _ => self.nginx_app_file(a),
            })
            .collect();
        let default_app = apps.values().any(|d| *d);
        write_atomic(path, &self.render_nginx_main(&includes, default_app)?)
    }

    /// Reloads a running nginx and waits until its old workers have exited; starts it if it is
    /// down and `start` is set. Returns whether nginx now runs the config on disk.
    fn reload_or_start(&self, start: bool) -> Result<bool, WebError> {
        let vars = self.nginx_vars(&self.nginx_conf());
        let commands = &self.settings.commands;
        let timeouts = &self.settings.timeouts;
        match self.nginx_pid()? {
            Some(master) => {
                let old: BTreeSet<u32> = children(master).into_iter().map(|(p, _)| p).collect();
                commands.nginx_reload.run_ok("reload nginx", &vars)?;
                // Old workers exit only once the master has loaded the new config and they have
                // finished their requests; a new worker shows the master took the reload.
                let done = wait_until(timeouts.drain + Duration::from_secs(5), POLL, || {
                    let now: BTreeSet<u32> = children(master).into_iter().map(|(p, _)| p).collect();
                    now.is_disjoint(&old) && !now.is_empty()
                });
                if !done {
                    return Err(WebError::Nginx {
                        what: "did not finish reloading (old workers still running or no new ones)",
                        timeout: timeouts.drain,
                        log: log_excerpt(&self.nginx_error_log()),
                    });
                }
                Ok(true)
            }
            None if start => {
                commands.nginx_start.run_ok("start nginx", &vars)?;
                let front = self.settings.front;
                let up = wait_until(timeouts.start, POLL, || {
                    self.nginx_pid().ok().flatten().is_some()
                        && TcpStream::connect_timeout(&front, Duration::from_millis(200)).is_ok()
                });
                if !up {
                    return Err(WebError::Nginx {
                        what: "did not start",
                        timeout: timeouts.start,
                        log: log_excerpt(&self.nginx_error_log()),
                    });
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Waits until no nginx worker of an older generation is left (they may still be sending
    /// requests to a slot that is about to stop); finishes an interrupted reload first.
    fn drain_nginx(&self) -> Result<(), WebError> {
        if self.reload_marker().exists() {
            self.ensure_nginx()?;
        }
        let Some(master) = self.nginx_pid()? else {
            return Ok(());
        };
        let timeout = self.settings.timeouts.drain + Duration::from_secs(5);
        let drained = wait_until(timeout, POLL, || {
            !children(master)
                .iter()
                .any(|(_, cmd)| cmd.contains("shutting down"))
        });
        if drained {
            Ok(())
        } else {
            Err(WebError::Nginx {
                what: "workers of an older config did not exit",
                timeout,
                log: log_excerpt(&self.nginx_error_log()),
            })
        }
    }

    // ---- apps --------------------------------------------------------------------------------

    /// Takes `app` off this server: removes its nginx file and reloads (the front then answers
    /// 404 for its names), stops both slots once drained, removes its configs and frees its ports.
    pub fn remove_app(&self, app: &str) -> Result<(), WebError> {
        validate::app_name(app)?;
        tracing::info!(app, "removing app");
        if self.nginx_app_file(app).exists() {
            self.apply_nginx(app, None, None, false)?;
        }
        crate::crash::point("remove:nginx-done");
        if Slot::ALL
            .iter()
            .any(|s| self.is_running(app, *s).unwrap_or(false))
        {
            self.drain_nginx()?;
        }
        for slot in Slot::ALL {
            self.stop_slot_now(app, slot)?;
        }
        crate::crash::point("remove:slots-stopped");
        self.retire_slot_logs(app)?;
        // nginx's records first: while the Apache dir is left, a run cut short here is seen as
        // an app to remove, and finished.
        remove_if_exists(&self.nginx_live_link(app))?;
        for entry in read_dir_if_exists(&self.nginx_slots_dir())? {
            if entry.file_name().to_str().and_then(|n| n.split('.').next()) == Some(app) {
                fs_err::remove_dir_all(entry.path())?;
            }
        }
        self.prune_snippets(app)?;
        let dir = self.app_dir(app);
        if dir.exists() {
            fs_err::remove_dir_all(&dir)?;
        }
        let mut ports = self.read_ports()?;
        if ports.remove(app).is_some() {
            self.write_ports(&ports)?;
        }
        Ok(())
    }
}

// ---- logs ------------------------------------------------------------------------------------

/// A log file the web stack writes, for the agent to ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebLog {
    pub source: WebLogSource,
    /// `None` for nginx's own logs (requests no app claimed, nginx itself).
    pub app: Option<String>,
    /// `access` or `error` for nginx; the slot (`blue`, `green`) for Apache.
    pub file: String,
    pub path: PathBuf,
    pub writer: LogWriter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebLogSource {
    Nginx,
    Apache,
}

/// Who writes a log file, which says how it may be cut down once shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogWriter {
    /// nginx: rename it and have nginx reopen its logs ([`WebStack::reopen_nginx_logs`]).
    Nginx,
    /// A running Apache slot: it keeps its file open until the slot stops.
    LiveSlot,
    /// A stopped slot: nobody writes until it starts again.
    IdleSlot,
    /// Nobody, ever again (a removed app): once shipped it may go.
    Retired,
}

impl WebStack {
    /// Every log file of this stack that exists now.
    pub fn log_files(&self) -> Result<Vec<WebLog>, WebError> {
        let mut logs = Vec::new();
        let nginx = |app: Option<&str>, file: &str, path: PathBuf, served: bool| WebLog {
            source: WebLogSource::Nginx,
            app: app.map(str::to_owned),
            file: file.to_owned(),
            path,
            writer: if served {
                LogWriter::Nginx
            } else {
                LogWriter::Retired
            },
        };
        logs.push(nginx(
            None,
            "access",
            self.nginx_logs_dir().join("access.log"),
            true,
        ));
        logs.push(nginx(None, "error", self.nginx_error_log(), true));
        for entry in read_dir_if_exists(&self.nginx_logs_dir())? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((app, file)) = name
                .strip_suffix(".log")
                .and_then(|stem| stem.split_once('.'))
            else {
                continue;
            };
            if validate::app_name(app).is_ok() && matches!(file, "access" | "error") {
                let served = self.nginx_app_file(app).exists();
                logs.push(nginx(Some(app), file, entry.path(), served));
            }
        }
        for app in self.known_apps()? {
            for slot in Slot::ALL {
                let writer = if self.is_running(&app, slot)? {
                    LogWriter::LiveSlot
                } else {
                    LogWriter::IdleSlot
                };
                logs.push(WebLog {
                    source: WebLogSource::Apache,
                    app: Some(app.clone()),
                    file: slot.to_string(),
                    path: self.slot_error_log(&app, slot),
                    writer,
                });
            }
        }
        // <app>.<slot>.<unix time>.log, left by remove_app.
        for entry in read_dir_if_exists(&self.retired_logs_dir())? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut parts = name.split('.');
            if let (Some(app), Some(slot)) = (parts.next(), parts.next())
                && validate::app_name(app).is_ok()
                && slot.parse::<Slot>().is_ok()
            {
                logs.push(WebLog {
                    source: WebLogSource::Apache,
                    app: Some(app.to_owned()),
                    file: slot.to_owned(),
                    path: entry.path(),
                    writer: LogWriter::Retired,
                });
            }
        }
        logs.retain(|log| log.path.exists());
        Ok(logs)
    }

    /// Tells nginx to reopen its log files (after they were renamed), as logrotate does.
    pub fn reopen_nginx_logs(&self) -> Result<(), WebError> {
        let Some(master) = self.nginx_pid()? else {
            return Ok(());
        };
        let kill = CommandLine::new(&["kill", "-USR1", &master.to_string()]);
        kill.run_ok("reopen nginx's logs", &[])?;
        Ok(())
    }

    /// Moves the slots' error logs out of an app's dir before it is deleted, so the agent can
    /// still ship them (same inode: the shipper carries on where it was).
    fn retire_slot_logs(&self, app: &str) -> Result<(), WebError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for slot in Slot::ALL {
            let log = self.slot_error_log(app, slot);
            if fs_err::metadata(&log).is_ok_and(|m| m.len() > 0) {
                let dir = self.retired_logs_dir();
                fs_err::create_dir_all(&dir)?;
                fs_err::rename(&log, dir.join(format!("{app}.{slot}.{stamp}.log")))?;
            }
        }
        Ok(())
    }
}

fn read_dir_if_exists(dir: &Path) -> Result<Vec<std::fs::DirEntry>, WebError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.flatten().collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

fn slot_vars(conf: &str, app: &str, slot: Slot, dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("conf", conf.to_owned()),
        ("app", app.to_owned()),
        ("slot", slot.to_string()),
        ("dir", dir.display().to_string()),
    ]
}

/// The end of a log file with its path, for error messages.
fn log_excerpt(path: &Path) -> String {
    format!("tail of {}:\n{}", path.display(), tail(path, 20))
}

fn remove_if_exists(path: &Path) -> Result<(), WebError> {
    match fs_err::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The first line of an app's nginx file: `# milky-site: default=false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SiteHeader {
    default_server: bool,
    /// The live slot, named only by the header of an older agent's file (`# milky-live: slot=…`).
    legacy_slot: Option<Slot>,
}

impl SiteHeader {
    fn line(&self) -> String {
        format!("{SITE_HEADER} default={}", self.default_server)
    }

    fn parse(text: &str) -> Option<SiteHeader> {
        let first = text.lines().next()?;
        let (rest, legacy) = match first.strip_prefix(SITE_HEADER) {
            Some(rest) => (rest, false),
            None => (first.strip_prefix(LEGACY_HEADER)?, true),
        };
        let mut header = SiteHeader {
            default_server: false,
            legacy_slot: None,
        };
        for pair in rest.split_whitespace() {
            match pair.split_once('=')? {
                ("slot", v) if legacy => header.legacy_slot = Some(v.parse().ok()?),
                ("default", v) => header.default_server = v == "true",
                _ => {}
            }
        }
        (!legacy || header.legacy_slot.is_some()).then_some(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_header_round_trips_and_reads_the_legacy_one() {
        let h = SiteHeader {
            default_server: true,
            legacy_slot: None,
        };
        assert_eq!(
            SiteHeader::parse(&format!("{}\nserver …", h.line())),
            Some(h)
        );
        assert_eq!(SiteHeader::parse("upstream x {}"), None);
        assert_eq!(
            SiteHeader::parse("# milky-live: slot=green port=8102 default=false\n"),
            Some(SiteHeader {
                default_server: false,
                legacy_slot: Some(Slot::Green),
            })
        );
        assert_eq!(
            SiteHeader::parse("# milky-live: port=8102 default=false"),
            None
        );
    }
}
