//! The agent's settings, `/etc/milky/agent.toml`.
//!
//! ```toml
//! store = "s3://my-bucket/milky"
//! group = "stable"
//! # host = "web-1"                      # default: this machine's host name
//! # endpoint_url = "http://10.0.0.5:9000"
//! # allow_unsafe_store = false           # run once hooks on a store that fails the probe
//!
//! [web]
//! listen = "0.0.0.0:80"
//!
//! [limits]
//! once_hooks = "30m"
//!
//! [python]
//! interpreters = ["/opt/python3.13/bin/python3.13"]
//! # https_listen = "0.0.0.0:443"       # apps with tls = "acme" or "provided"
//! # trusted_proxies = ["10.0.0.0/8"]   # load balancers whose X-Forwarded-* nginx believes
//!
//! [acme]                               # apps with tls = "acme"
//! # directory = "https://acme-v02.api.letsencrypt.org/directory"
//! # contact = ["mailto:ops@example.com"]
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use milky_core::{GroupName, HostName, StoreUrl};
use serde::Deserialize;

use crate::web::{ServiceCommands, SlotPorts, Timeouts, WebSettings};

pub const DEFAULT_PATH: &str = "/etc/milky/agent.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// `s3://BUCKET/PREFIX` or `file:///PATH`, as for the controller.
    pub store: String,
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Run once hooks even on a store that fails the conditional-write probe, at your risk: two
    /// servers may then run a group's migrations at once.
    #[serde(default)]
    pub allow_unsafe_store: bool,
    pub group: GroupName,
    /// This server's name in status reports; the machine's host name by default.
    #[serde(default)]
    pub host: Option<HostName>,
    #[serde(default)]
    pub paths: Paths,
    #[serde(default)]
    pub web: Web,
    #[serde(default)]
    pub commands: ServiceCommands,
    #[serde(default)]
    pub releases: Releases,
    #[serde(default)]
    pub logs: Logs,
    /// Environment of every app's processes and hooks on this server (e.g. a database URL
    /// that differs per server); the app's own settings come first.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub signing: Signing,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub python: Python,
    #[serde(default)]
    pub acme: Acme,
}

/// Certificates from an ACME CA for apps with `tls = "acme"`: one server of the group orders
/// them (under a lease in the store), every server answers the CA's HTTP-01 challenges.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Acme {
    /// The CA's directory URL: Let's Encrypt by default (its staging directory,
    /// `https://acme-staging-v02.api.letsencrypt.org/directory`, for trials).
    pub directory: String,
    /// Contact addresses for the group's account, e.g. `["mailto:ops@example.com"]`.
    pub contact: Vec<String>,
    /// PEM file of the roots to trust for the CA's own HTTPS instead of the system's (a test
    /// CA such as Pebble).
    pub ca_roots: Option<PathBuf>,
    /// How long the ordering server waits for the group's other live servers to serve the
    /// challenge answers before it asks the CA to validate anyway: longer than the servers'
    /// time between passes (cron: 5 minutes), since each answers on its next pass.
    #[serde(with = "humantime_serde_opt")]
    pub challenge_wait: Duration,
    /// How long the ordering lease lasts without renewal: a dead orderer blocks renewals this long.
    #[serde(with = "humantime_serde_opt")]
    pub lease: Duration,
    /// How long one order may take, from the lease to the certificate, before it fails.
    #[serde(with = "humantime_serde_opt")]
    pub order_timeout: Duration,
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

impl Default for Acme {
    fn default() -> Self {
        Self {
            directory: LETS_ENCRYPT.into(),
            contact: Vec::new(),
            ca_roots: None,
            challenge_wait: Duration::from_secs(6 * 60),
            lease: Duration::from_secs(2 * 60),
            order_timeout: Duration::from_secs(10 * 60),
        }
    }
}

/// How long each kind of step may run. A step still running at its limit is ended with every
/// process of its group and fails (reported with its output), so nothing that hangs holds the
/// server, or its group, for ever.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Each once or first-deploy hook (migrations). The once-hooks lease is not renewed past it.
    #[serde(with = "humantime_serde_opt")]
    pub once_hooks: Duration,
    /// Each per-server hook (collectstatic).
    #[serde(with = "humantime_serde_opt")]
    pub server_hooks: Duration,
    /// Making a release's venv, and installing its requirements.
    #[serde(with = "humantime_serde_opt")]
    pub install: Duration,
    /// Each nginx or Apache command (`nginx -t`, `nginx -s reload`, `apache2 -k start`…).
    #[serde(with = "humantime_serde_opt")]
    pub service_commands: Duration,
    /// A pass that has held the run lock longer than this is reported as stuck, by the passes
    /// it keeps from running.
    #[serde(with = "humantime_serde_opt")]
    pub stuck_pass: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        const MINUTE: u64 = 60;
        Self {
            once_hooks: Duration::from_secs(30 * MINUTE),
            server_hooks: Duration::from_secs(10 * MINUTE),
            install: Duration::from_secs(30 * MINUTE),
            service_commands: Duration::from_secs(2 * MINUTE),
            stuck_pass: Duration::from_secs(2 * 60 * MINUTE),
        }
    }
}

/// The Pythons apps may run on (`[app] python`), besides `[releases] python`, the default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Python {
    /// Interpreters to offer, e.g. `["/opt/python3.13/bin/python3.13"]`
    /// (`install_server.sh --python 3.13` adds them here).
    pub interpreters: Vec<PathBuf>,
    /// Also look for CPython installs in /usr/bin, /usr/local/bin, /opt/*/bin and
    /// uv-managed dirs under /opt.
    pub discover: bool,
    /// The uv that makes venvs and installs; unset: `tools/bin/uv` in the state dir, where
    /// install_server.sh puts one. Without a uv, venvs and pip are used (and uv.lock cannot be).
    pub uv: Option<PathBuf>,
    /// uv's cache, shared by every release, so a release whose packages are cached installs
    /// offline; unset: `uv-cache` in the state dir.
    pub cache: Option<PathBuf>,
    /// Where the mod_wsgi built for each Python other than the default is kept (one build per
    /// interpreter); unset: `python/mod_wsgi` in the state dir.
    pub mod_wsgi_dir: Option<PathBuf>,
}

impl Default for Python {
    fn default() -> Self {
        Self {
            interpreters: Vec::new(),
            discover: true,
            uv: None,
            cache: None,
            mod_wsgi_dir: None,
        }
    }
}

/// Package signatures: with trusted keys, only packages signed by one of them are installed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Signing {
    /// Public key lines, `milky-ed25519 <key-id> <key>`, as `cargo milky keygen` prints them.
    pub trusted_keys: Vec<milky_core::signing::PublicKey>,
    /// A file of public key lines (`#` comments), read at every pass. If it is set but cannot
    /// be read, nothing is installed.
    pub trusted_keys_file: Option<PathBuf>,
    /// Install only what the group's state, signed by a trusted key, names (`cargo milky
    /// sign-state`): refuses rolled-back, expired and mixed-up group state. Unset: required
    /// whenever trusted or root keys are configured; `false` turns it off (while a store's
    /// groups get their first state).
    pub require_signed_state: Option<bool>,
    /// Root keys (offline): with them, a group state must be signed by a deploy key on the
    /// newest list one of them signed (`cargo milky keys`), not by any trusted key.
    pub root_keys: Vec<milky_core::signing::PublicKey>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// `APPS/<app>/releases/<version>/` and `APPS/<app>/current`.
    pub apps: PathBuf,
    /// What the agent remembers between passes: the run lock, the index cache, failures.
    pub state: PathBuf,
    /// nginx's prefix and the Apache slots' roots.
    pub web: PathBuf,
    /// Files here replace the embedded templates of the same name.
    pub templates: PathBuf,
    /// The agent's own log (`agent.log`) and the hooks' output (`hooks/<app>.log`).
    pub logs: PathBuf,
    /// Each app's persistent data dir, `DATA/<app>/` (`MILKY_DATA_DIR`, with `media/` inside):
    /// kept across releases and when the app is removed. Default: `data/` beside `apps`.
    pub data: Option<PathBuf>,
}

impl Paths {
    /// Where the apps' data dirs are.
    pub fn data_root(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| match self.apps.parent() {
                Some(parent) if parent != Path::new("") => parent.join("data"),
                _ => self.apps.join(".data"),
            })
    }
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            apps: "/srv/milky/apps".into(),
            state: "/var/lib/milky".into(),
            web: "/var/lib/milky/web".into(),
            templates: "/etc/milky/templates".into(),
            logs: "/var/log/milky".into(),
            data: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Web {
    /// nginx's front address, shared by every app (told apart by server name).
    pub listen: SocketAddr,
    /// nginx's HTTPS address, for apps with `tls = "acme"` or `"provided"`; nginx listens on it
    /// only while such an app is served.
    pub https_listen: SocketAddr,
    /// Load balancers (CIDRs) in front of this server: nginx takes the client address
    /// (`X-Forwarded-For`) and, for apps with `tls = "proxy"`, the scheme (`X-Forwarded-Proto`)
    /// from connections that come from them, and from nothing else.
    #[serde(deserialize_with = "cidrs")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The loopback port range handed out to Apache slots, two per app.
    pub slot_ports: [u16; 2],
    pub apache_user: String,
    pub apache_group: String,
    /// The account hooks (collectstatic, migrations) run as; `apache_user` when unset. Never root.
    pub hook_user: Option<String>,
    pub nginx_user: Option<String>,
    pub nginx_workers: u32,
    #[serde(with = "humantime_serde_opt")]
    pub start_timeout: Duration,
    #[serde(with = "humantime_serde_opt")]
    pub health_timeout: Duration,
    #[serde(with = "humantime_serde_opt")]
    pub drain_timeout: Duration,
    /// The longest the old slot's stop takes after a switch: its requests in flight finishing
    /// (at most `drain_timeout` of it), then Apache's graceful stop. Past it the slot's
    /// processes are killed, cutting off what still runs, with a warning.
    #[serde(with = "humantime_serde_opt")]
    pub stop_timeout: Duration,
}

impl Default for Web {
    fn default() -> Self {
        let timeouts = Timeouts::default();
        Self {
            listen: ([0, 0, 0, 0], 80).into(),
            https_listen: ([0, 0, 0, 0], 443).into(),
            trusted_proxies: Vec::new(),
            slot_ports: [8100, 8999],
            apache_user: "www-data".into(),
            apache_group: "www-data".into(),
            hook_user: None,
            nginx_user: None,
            nginx_workers: 2,
            start_timeout: timeouts.start,
            health_timeout: timeouts.health,
            drain_timeout: timeouts.drain,
            stop_timeout: timeouts.stop,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Releases {
    /// The default Python: apps that name none run on it, with the distribution's mod_wsgi,
    /// which must be built for it (Debian's libapache2-mod-wsgi-py3: /usr/bin/python3).
    pub python: PathBuf,
    /// Releases kept on disk per app (the live one included), so switching back needs no download.
    pub keep: usize,
    /// Caps against decompression bombs.
    pub max_unpacked_bytes: u64,
    pub max_entries: u64,
    /// How long a once-hooks lease lasts without renewal: a dead leader blocks its group this long.
    #[serde(with = "humantime_serde_opt")]
    pub once_lease: Duration,
    /// How long one pass waits for another server's once hooks before it moves on.
    #[serde(with = "humantime_serde_opt")]
    pub once_wait: Duration,
}

impl Default for Releases {
    fn default() -> Self {
        let limits = milky_core::package::UnpackLimits::default();
        Self {
            python: "/usr/bin/python3".into(),
            keep: 3,
            max_unpacked_bytes: limits.max_bytes,
            max_entries: limits.max_entries,
            once_lease: Duration::from_secs(60),
            once_wait: Duration::from_secs(60),
        }
    }
}

/// Shipping this server's logs to the store, and how much of them it keeps itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logs {
    /// Ship nginx's, Apache's, the hooks' and the agent's logs to `logs/<group>/<host>/`.
    pub ship: bool,
    /// Bytes shipped per pass at most (before compression): a backlog after an outage goes out
    /// over several passes instead of holding up the next deploy.
    pub max_bytes_per_pass: u64,
    /// The largest segment (before compression).
    pub segment_bytes: u64,
    /// The agent's log and each app's hooks log are rotated past this size (one old file kept).
    pub local_max_bytes: u64,
    /// nginx's logs and those of stopped Apache slots are cut down past this size once shipped.
    pub web_max_bytes: u64,
}

impl Default for Logs {
    fn default() -> Self {
        const MIB: u64 = 1 << 20;
        Self {
            ship: true,
            max_bytes_per_pass: 32 * MIB,
            segment_bytes: 8 * MIB,
            local_max_bytes: 16 * MIB,
            web_max_bytes: 64 * MIB,
        }
    }
}

/// CIDRs such as `10.0.0.0/8`; a lone address must say `/32` (or `/128`), so that a typo
/// cannot trust a whole network or nothing without saying so.
fn cidrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .map(|net| net.trunc())
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{text:?} is not a network in CIDR form, such as 10.0.0.0/8 or 192.0.2.7/32"
                    ))
                })
        })
        .collect()
}

/// Durations written as "30s", "2m".
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

impl AgentConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = fs_err::read_to_string(path).with_context(|| {
            format!(
                "reading the agent's settings (write {} or pass --config)",
                path.display()
            )
        })?;
        let config: Self =
            toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
        config.store_url()?;
        Ok(config)
    }

    pub fn store_url(&self) -> anyhow::Result<StoreUrl> {
        Ok(self.store.parse()?)
    }

    /// The configured host name, else the machine's.
    pub fn host(&self) -> anyhow::Result<HostName> {
        if let Some(host) = &self.host {
            return Ok(host.clone());
        }
        let name = fs_err::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| fs_err::read_to_string("/etc/hostname"))
            .context("reading this machine's host name; set `host` in the agent's settings")?;
        HostName::new(name.trim())
            .context("this machine's host name cannot be used; set `host` in the agent's settings")
    }

    /// The account hooks run as.
    pub fn hook_user(&self) -> &str {
        self.web
            .hook_user
            .as_deref()
            .unwrap_or(&self.web.apache_user)
    }

    pub fn web_settings(&self) -> WebSettings {
        let mut web = WebSettings::new(&self.paths.web, self.web.listen);
        web.https = self.web.https_listen;
        web.trusted_proxies = self.web.trusted_proxies.clone();
        web.slot_ports = SlotPorts {
            first: self.web.slot_ports[0],
            last: self.web.slot_ports[1],
            ..SlotPorts::default()
        };
        web.commands = self.commands.clone();
        web.apache_user = self.web.apache_user.clone();
        web.apache_group = self.web.apache_group.clone();
        web.nginx_user = self.web.nginx_user.clone();
        web.nginx_worker_processes = self.web.nginx_workers;
        web.template_dir = self
            .paths
            .templates
            .is_dir()
            .then(|| self.paths.templates.clone());
        web.timeouts.start = self.web.start_timeout;
        web.timeouts.health = self.web.health_timeout;
        web.timeouts.drain = self.web.drain_timeout;
        web.timeouts.stop = self.web.stop_timeout;
        web.timeouts.command = self.limits.service_commands;
        web
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_line_config_is_enough() {
        let config: AgentConfig =
            toml::from_str("store = \"s3://b/p\"\ngroup = \"stable\"\n").unwrap();
        assert_eq!(config.paths.apps, PathBuf::from("/srv/milky/apps"));
        assert_eq!(config.releases.keep, 3);
        assert_eq!(config.web.listen.port(), 80);
        assert!(config.python.discover && config.python.interpreters.is_empty());
        let web = config.web_settings();
        assert_eq!(web.slot_ports.first, 8100);
        assert_eq!(web.timeouts.command, Duration::from_secs(120));
        assert_eq!(config.limits.once_hooks, Duration::from_secs(30 * 60));
        assert_eq!(config.limits.server_hooks, Duration::from_secs(10 * 60));
    }

    #[test]
    fn limits_are_durations_per_kind() {
        let config: AgentConfig = toml::from_str(
            "store = \"s3://b\"\ngroup = \"g\"\n[limits]\nonce_hooks = \"3s\"\nservice_commands = \"1m 30s\"\n",
        )
        .unwrap();
        assert_eq!(config.limits.once_hooks, Duration::from_secs(3));
        assert_eq!(config.limits.install, Duration::from_secs(30 * 60));
        assert_eq!(
            config.web_settings().timeouts.command,
            Duration::from_secs(90)
        );
        let err = toml::from_str::<AgentConfig>(
            "store = \"s3://b\"\ngroup = \"g\"\n[limits]\nhooks = \"3s\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `hooks`"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(
            toml::from_str::<AgentConfig>("store = \"s3://b\"\ngroup = \"stable\"\nsurprise = 1\n")
                .is_err()
        );
        assert!(
            toml::from_str::<AgentConfig>("store = \"s3://b\"\ngroup = \"Bad Group\"\n").is_err()
        );
        let err = toml::from_str::<AgentConfig>(
            "store = \"s3://b\"\ngroup = \"g\"\n[web]\nhealth_timeout = \"soon\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("health_timeout"), "{err}");
        let err = toml::from_str::<AgentConfig>(
            "store = \"s3://b\"\ngroup = \"g\"\n[signing]\ntrusted_keys = [\"milky-ed25519 00 AAAA\"]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("trusted_keys"), "{err}");
        assert!(err.to_string().contains("not 16 hex digits"), "{err}");
        for bad in ["10.0.0.0", "10.0.0.0/33", "proxy.example"] {
            let err = toml::from_str::<AgentConfig>(&format!(
                "store = \"s3://b\"\ngroup = \"g\"\n[web]\ntrusted_proxies = [\"{bad}\"]\n"
            ))
            .unwrap_err();
            assert!(err.to_string().contains("CIDR form"), "{bad}: {err}");
        }
    }

    #[test]
    fn trusted_proxies_are_networks() {
        let config: AgentConfig = toml::from_str(
            "store = \"s3://b\"\ngroup = \"g\"\n[web]\nhttps_listen = \"127.0.0.1:8443\"\n\
             trusted_proxies = [\"10.1.2.3/8\", \"2001:db8::/32\", \"127.0.0.1/32\"]\n",
        )
        .unwrap();
        let web = config.web_settings();
        let nets: Vec<String> = web.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.0.0.0/8", "2001:db8::/32", "127.0.0.1/32"]);
        assert_eq!(web.https.port(), 8443);
    }

    #[test]
    fn acme_defaults_to_lets_encrypt() {
        let config: AgentConfig = toml::from_str("store = \"s3://b\"\ngroup = \"g\"\n").unwrap();
        assert_eq!(config.acme.directory, LETS_ENCRYPT);
        let config: AgentConfig = toml::from_str(
            "store = \"s3://b\"\ngroup = \"g\"\n[acme]\ndirectory = \"https://127.0.0.1:14000/dir\"\n\
             contact = [\"mailto:ops@example.com\"]\nca_roots = \"/tmp/roots.pem\"\nchallenge_wait = \"20s\"\n",
        )
        .unwrap();
        assert_eq!(config.acme.challenge_wait, Duration::from_secs(20));
        assert_eq!(config.acme.ca_roots, Some(PathBuf::from("/tmp/roots.pem")));
        assert!(
            toml::from_str::<AgentConfig>(
                "store = \"s3://b\"\ngroup = \"g\"\n[acme]\nemail = \"x\"\n"
            )
            .is_err()
        );
    }
}
