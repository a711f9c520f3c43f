//! What the web stack needs to know about one release of one app.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{WebError, validate};

/// One app as the web servers see it: its names, its unpacked release and the package-provided
/// parts (WSGI file, static dir, config snippets). Paths a package gives are relative to the
/// release; [`AppSite::validate`] checks everything before any of it reaches a config, and every
/// render calls it, so an unchecked value cannot slip through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSite {
    pub name: String,
    /// Host names nginx routes to this app; the first is also Apache's `ServerName` and the
    /// `Host` of health checks (Django's `ALLOWED_HOSTS` must accept it).
    pub server_names: Vec<String>,
    /// The `Host` of health checks when it is not the first server name: an app that names none
    /// is checked as `localhost`, which a stock Django project (DEBUG on, ALLOWED_HOSTS empty)
    /// accepts, where the app's name would be refused.
    pub health_host: Option<String>,
    /// Whether requests for unknown host names go to this app rather than to a 404.
    pub default_server: bool,
    /// The unpacked release: absolute, readable by Apache's and nginx's users.
    pub release_dir: PathBuf,
    /// The release's virtualenv (absolute); `release_dir/venv` unless set otherwise.
    pub venv_dir: PathBuf,
    /// The app's WSGI file, relative to the release (`mysite/wsgi.py`).
    pub wsgi_file: PathBuf,
    /// The callable in that file (`application`).
    pub wsgi_callable: String,
    /// Collected static files, relative to the release, served by nginx at `static_url`.
    pub static_dir: Option<PathBuf>,
    pub static_url: String,
    /// Package snippets, relative to the release: included inside this app's nginx `server` block
    /// and Apache `VirtualHost` only.
    pub nginx_snippet: Option<PathBuf>,
    pub apache_snippet: Option<PathBuf>,
    /// Environment of the app's Python processes (mod_wsgi cannot pass Apache's environment on,
    /// so a generated WSGI wrapper sets these).
    pub env: BTreeMap<String, String>,
    /// A JSON object of secret variables (`cargo milky env`), readable only by Apache's user:
    /// loaded by the WSGI wrapper at start, never written into a config.
    pub secret_env_file: Option<PathBuf>,
    /// The app's persistent data dir (`MILKY_DATA_DIR`), kept across releases.
    pub data_dir: Option<PathBuf>,
    /// Where nginx serves the data dir's `media/` (uploads); `None`: not served.
    pub media_url: Option<String>,
    /// The mod_wsgi built for the app's Python and that Python's libpython (loaded first);
    /// `None`: the distribution's mod_wsgi, for the server's default Python.
    pub python: Option<crate::python::WsgiModule>,
    /// mod_wsgi daemon processes and threads per process.
    pub processes: u32,
    pub threads: u32,
    /// Where the app's TLS ends; `None`: plain HTTP only.
    pub tls: Option<SiteTls>,
}

/// How nginx serves an app over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteTls {
    /// A load balancer ends TLS: the scheme comes from a trusted proxy's `X-Forwarded-Proto`.
    Proxy,
    /// nginx answers HTTPS with the app's installed certificate (`WebStack::install_certificate`)
    /// and sends plain HTTP there, ACME challenges apart; `hsts` adds Strict-Transport-Security.
    Https { hsts: bool },
}

impl AppSite {
    /// The `Host` health checks send.
    pub fn health_host(&self) -> &str {
        self.health_host
            .as_deref()
            .or(self.server_names.first().map(String::as_str))
            .unwrap_or("localhost")
    }

    /// An app with one server name and the defaults: venv in `release_dir/venv`, static files
    /// from `static_collected/` at `/static/`, 2 processes × 8 threads, no snippets.
    pub fn new(
        name: impl Into<String>,
        server_name: impl Into<String>,
        release_dir: impl Into<PathBuf>,
        wsgi_file: impl Into<PathBuf>,
    ) -> Self {
        let release_dir = release_dir.into();
        AppSite {
            name: name.into(),
            server_names: vec![server_name.into()],
            health_host: None,
            default_server: false,
            venv_dir: release_dir.join("venv"),
            release_dir,
            wsgi_file: wsgi_file.into(),
            wsgi_callable: "application".to_owned(),
            static_dir: Some(PathBuf::from("static_collected")),
            static_url: "/static/".to_owned(),
            nginx_snippet: None,
            apache_snippet: None,
            env: BTreeMap::new(),
            secret_env_file: None,
            data_dir: None,
            media_url: None,
            python: None,
            processes: 2,
            threads: 8,
            tls: None,
        }
    }

    /// Checks every value that goes into a config; the error names the app and the value.
    pub fn validate(&self) -> Result<(), WebError> {
        let app = &self.name;
        validate::app_name(app)?;
        if let Some(file) = &self.secret_env_file {
            validate::config_path(&format!("secret env file of app {app}"), file)?;
        }
        if self.server_names.is_empty() {
            return Err(WebError::invalid(
                format!("server names of app {app}"),
                "",
                "an app needs at least one server name",
            ));
        }
        for name in self.server_names.iter().chain(&self.health_host) {
            validate::server_name(app, name)?;
        }
        validate::config_path(&format!("release dir of app {app}"), &self.release_dir)?;
        validate::config_path(&format!("venv dir of app {app}"), &self.venv_dir)?;
        if let Some(python) = &self.python {
            validate::config_path(&format!("mod_wsgi of app {app}"), &python.module)?;
            validate::config_path(&format!("libpython of app {app}"), &python.libpython)?;
        }
        validate::release_relative(&format!("WSGI file of app {app}"), &self.wsgi_file)?;
        let callable = &self.wsgi_callable;
        if callable.is_empty()
            || callable.starts_with(|c: char| c.is_ascii_digit())
            || !callable
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(WebError::invalid(
                format!("WSGI callable of app {app}"),
                callable.clone(),
                "must be a Python identifier",
            ));
        }
        if let Some(dir) = &self.static_dir {
            validate::release_relative(&format!("static dir of app {app}"), dir)?;
        }
        validate::url_path(&format!("static URL of app {app}"), &self.static_url)?;
        if !self.static_url.ends_with('/') {
            return Err(WebError::invalid(
                format!("static URL of app {app}"),
                &self.static_url,
                "must end with '/'",
            ));
        }
        if let Some(dir) = &self.data_dir {
            validate::config_path(&format!("data dir of app {app}"), dir)?;
        }
        if let Some(url) = &self.media_url {
            validate::url_path(&format!("media URL of app {app}"), url)?;
            if !url.ends_with('/') || url == "/" || *url == self.static_url {
                return Err(WebError::invalid(
                    format!("media URL of app {app}"),
                    url,
                    "must end with '/', and be neither / nor the static URL",
                ));
            }
            if self.data_dir.is_none() {
                return Err(WebError::invalid(
                    format!("media URL of app {app}"),
                    url,
                    "needs the app's data dir",
                ));
            }
        }
        if let Some(s) = &self.nginx_snippet {
            validate::release_relative(&format!("nginx snippet of app {app}"), s)?;
        }
        if let Some(s) = &self.apache_snippet {
            validate::release_relative(&format!("Apache snippet of app {app}"), s)?;
        }
        for (key, value) in &self.env {
            validate::env_key(app, key)?;
            validate::env_value(app, key, value)?;
        }
        for (what, n) in [("processes", self.processes), ("threads", self.threads)] {
            if !(1..=256).contains(&n) {
                return Err(WebError::invalid(
                    format!("mod_wsgi {what} of app {app}"),
                    n.to_string(),
                    "must be between 1 and 256",
                ));
            }
        }
        Ok(())
    }

    /// A path inside the release (for relative paths the package gave).
    pub fn in_release(&self, relative: &Path) -> PathBuf {
        self.release_dir.join(relative)
    }
}
