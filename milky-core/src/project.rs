//! A Django project's own `milky.toml`: how to package the app, and (apart from that) where the
//! controller deploys it.
//!
//! ```toml
//! [app]                      # packed into every release as its manifest
//! name = "myapp"
//! wsgi = "mysite.wsgi:application"
//! settings = "mysite.settings"
//! python = "3.13"            # or a specifier, ">=3.12"; unset: the server's default Python
//!
//! [deploy]                   # the controller's settings; never packed
//! store = "s3://my-bucket/milky"
//! group = "stable"
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::names::{AppName, GroupName};

/// The file name of both the project's settings and the manifest inside a package.
pub const FILE_NAME: &str = "milky.toml";

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("{path}: no milky.toml here; run `cargo milky init` in the project first")]
    Missing { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// What the app is and how servers run it. Packed unchanged into each release's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    pub name: AppName,
    /// The WSGI callable, `module:attribute`.
    pub wsgi: String,
    /// `DJANGO_SETTINGS_MODULE`, if it is a Django project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<String>,
    /// Where collectstatic puts files (relative to the project), served by nginx at `/static/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_dir: Option<String>,
    /// The path servers check before they switch to a release.
    #[serde(default = "default_health")]
    pub health: String,
    /// Host names nginx answers for this app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
    /// What servers install the dependencies from, relative to the project: a pip requirements
    /// file, or `uv.lock` (beside `pyproject.toml`), installed exactly as locked.
    #[serde(default = "default_requirements")]
    pub requirements: String,
    /// The Python the app runs on: a version (`"3.13"`) or a PEP 440 specifier (`">=3.12"`).
    /// Unset: the server's default Python.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    /// The URL path at which nginx serves the app's uploads (`MEDIA_URL`, e.g. `/media/`) from
    /// the `media/` folder of its persistent data dir (`MILKY_DATA_DIR`). Unset: not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_url: Option<String>,
    /// How the app's visitors get HTTPS; unset, servers answer plain HTTP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsMode>,
    /// With `tls = "acme"` or `"provided"`: send `Strict-Transport-Security` (one year), so
    /// browsers never ask over plain HTTP again. Opt-in: it cannot be taken back for a year.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hsts: bool,
}

/// Where the app's TLS ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Servers get a certificate for the server names from an ACME CA, once per group, and
    /// renew it. Designed (templates, challenge files, status) but not built yet: refused.
    Acme,
    /// Servers use the certificate and key given with `cargo milky tls set`.
    Provided,
    /// A load balancer in front ends TLS; servers take its `X-Forwarded-Proto` (and the
    /// client address) only from the `[web] trusted_proxies` of their agent settings.
    Proxy,
}

impl TlsMode {
    /// Whether the servers themselves answer HTTPS with a certificate.
    pub fn terminates_here(self) -> bool {
        matches!(self, TlsMode::Acme | TlsMode::Provided)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Acme => "acme",
            TlsMode::Provided => "provided",
            TlsMode::Proxy => "proxy",
        }
    }
}

/// Commands run on servers, from the release dir with the release's venv first on PATH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Run once per group and version, by one server, before any server switches (migrations).
    #[serde(default)]
    pub once: Vec<String>,
    /// Run on every server after unpacking, before the switch (collectstatic).
    #[serde(default)]
    pub server: Vec<String>,
    /// Run once per group ever, by one server, after the `once` hooks of the first release
    /// that has them (seed data, fixtures, the first admin); never again for later versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first: Vec<String>,
}

/// Config snippets the package adds inside its own nginx server block and Apache vhost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snippets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apache: Option<String>,
}

/// How `cargo milky package` builds the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSettings {
    /// Extra gitignore-style patterns left out of the package (on top of .gitignore/.milkyignore).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Vendor every requirement as a wheel into `wheels/`, so servers install offline.
    #[serde(default)]
    pub wheels: bool,
}

/// The controller's settings: which store and which group by default. Never packed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupName>,
    /// The secret key `upload` signs with (`cargo milky keygen`); relative to this file's dir,
    /// or `~/…` under the home dir.
    /// Keep it outside the project: `upload` refuses a key inside the directory it packs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<PathBuf>,
    /// Write to a store that fails the conditional-write probe (`cargo milky doctor`), at your
    /// risk: edits are confirmed by reading them back, but two writers can still both win.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unsafe_store: bool,
    /// How many days a group's signed state stays valid (default 30): refresh it before then
    /// (`cargo milky sign-state`, or any edit of the group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_expiry_days: Option<u32>,
}

/// The whole project file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub app: AppSettings,
    #[serde(default = "Hooks::django_defaults")]
    pub hooks: Hooks,
    #[serde(default, skip_serializing_if = "is_default")]
    pub snippets: Snippets,
    #[serde(default)]
    pub package: PackageSettings,
    #[serde(default)]
    pub deploy: DeploySettings,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn default_health() -> String {
    "/".into()
}

fn default_requirements() -> String {
    "requirements.txt".into()
}

/// The file name that makes `[app] requirements` a uv lock rather than a pip requirements file.
pub const UV_LOCK: &str = "uv.lock";

impl AppSettings {
    /// Whether the dependencies come from a uv lock (with `pyproject.toml` in the same dir).
    pub fn uses_uv_lock(&self) -> bool {
        Path::new(&self.requirements).file_name() == Some(std::ffi::OsStr::new(UV_LOCK))
    }
}

impl Hooks {
    /// Migrate once per group, collect static files on every server.
    pub fn django_defaults() -> Self {
        Self {
            once: vec!["python manage.py migrate --noinput".into()],
            server: vec!["python manage.py collectstatic --noinput".into()],
            first: Vec::new(),
        }
    }
}

impl AppSettings {
    /// Checks what reaches server paths and configs: the WSGI entry, module names, paths.
    pub fn validate(&self) -> Result<(), String> {
        let (module, attr) = self.wsgi.split_once(':').ok_or_else(|| {
            format!(
                "app.wsgi {:?} should be module:callable, e.g. mysite.wsgi:application",
                self.wsgi
            )
        })?;
        check_dotted("app.wsgi module", module)?;
        check_dotted("app.wsgi callable", attr)?;
        if let Some(settings) = &self.settings {
            check_dotted("app.settings", settings)?;
        }
        if let Some(dir) = &self.static_dir {
            check_relative_path("app.static_dir", dir)?;
        }
        check_relative_path("app.requirements", &self.requirements)?;
        if let Some(python) = &self.python {
            crate::python::PythonSpec::parse(python)?;
        }
        if let Some(url) = &self.media_url {
            let ok = url.starts_with('/')
                && url.ends_with('/')
                && url.len() > 1
                && url
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
                && !url.split('/').any(|part| part == "..");
            if !ok {
                return Err(format!(
                    "app.media_url {url:?} should be a plain URL path that starts and ends with '/', such as /media/"
                ));
            }
        }
        if !self.health.starts_with('/')
            || !self.health.chars().all(|c| c.is_ascii_graphic())
            || self.health.contains(['"', '\'', ';', '{', '}', '\\'])
        {
            return Err(format!(
                "app.health {:?} should be a plain URL path such as /health",
                self.health
            ));
        }
        if self.hsts && !self.tls.is_some_and(TlsMode::terminates_here) {
            return Err(
                "app.hsts needs app.tls = \"acme\" or \"provided\" (servers that answer HTTPS)"
                    .into(),
            );
        }
        // HTTP-01 proves one name at a time; a wildcard needs DNS-01, which servers cannot answer.
        if self.tls == Some(TlsMode::Acme)
            && let Some(wildcard) = self.server_names.iter().find(|n| n.starts_with("*."))
        {
            return Err(format!(
                "app.tls = \"acme\" cannot get a certificate for {wildcard}: ACME's HTTP-01 challenge proves one host name at a time; list the names, or use \"provided\""
            ));
        }
        if self.tls.is_some_and(TlsMode::terminates_here) && self.server_names.is_empty() {
            return Err("app.tls needs app.server_names: a certificate names hosts".into());
        }
        for name in &self.server_names {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*' | '_'));
            if !ok {
                return Err(format!("app.server_names: {name:?} is not a host name"));
            }
        }
        Ok(())
    }
}

fn check_dotted(what: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.split('.').all(|part| {
            part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {value:?} is not a Python dotted name"))
    }
}

/// A path inside the project: relative, no `..`, no characters that could break a config line.
pub fn check_relative_path(what: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && !value.starts_with('/')
        && value
            .split('/')
            .all(|part| !part.is_empty() && part != ".." && part != ".")
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {value:?} should be a relative path inside the project (letters, digits, . _ - /)"
        ))
    }
}

impl ProjectConfig {
    /// Reads and checks `DIR/milky.toml`.
    pub fn load(dir: &Path) -> Result<Self, ProjectError> {
        let path = dir.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ProjectError::Missing { path });
            }
            Err(source) => return Err(ProjectError::Io { path, source }),
        };
        Self::parse(&text).map_err(|message| ProjectError::Invalid { path, message })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        config.app.validate()?;
        for (what, snippet) in [
            ("snippets.nginx", &config.snippets.nginx),
            ("snippets.apache", &config.snippets.apache),
        ] {
            if let Some(path) = snippet {
                check_relative_path(what, path)?;
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_project_file_gets_django_defaults() {
        let config =
            ProjectConfig::parse("[app]\nname = \"myapp\"\nwsgi = \"mysite.wsgi:application\"\n")
                .unwrap();
        assert_eq!(config.hooks, Hooks::django_defaults());
        assert_eq!(config.app.health, "/");
        assert_eq!(config.app.requirements, "requirements.txt");
        assert_eq!(config.deploy, DeploySettings::default());
        assert_eq!(config.app.python, None);
        assert_eq!(config.app.tls, None);
    }

    #[test]
    fn the_app_declares_its_python() {
        let config =
            ProjectConfig::parse("[app]\nname = \"myapp\"\nwsgi = \"a:b\"\npython = \">=3.12\"\n")
                .unwrap();
        assert_eq!(config.app.python.as_deref(), Some(">=3.12"));
    }

    #[test]
    fn the_three_tls_modes_read_as_words() {
        for (word, mode) in [
            ("acme", TlsMode::Acme),
            ("provided", TlsMode::Provided),
            ("proxy", TlsMode::Proxy),
        ] {
            let config = ProjectConfig::parse(&format!(
                "[app]\nname = \"a\"\nwsgi = \"a:b\"\nserver_names = [\"a.example\"]\ntls = \"{word}\"\n"
            ))
            .unwrap();
            assert_eq!(config.app.tls, Some(mode));
            assert_eq!(mode.as_str(), word);
        }
    }

    #[test]
    fn values_that_could_break_a_server_config_are_refused() {
        let base = "[app]\nname = \"myapp\"\n";
        for (extra, needle) in [
            ("wsgi = \"mysite.wsgi\"\n", "module:callable"),
            ("wsgi = \"my site.wsgi:app\"\n", "dotted"),
            ("wsgi = \"a:b\"\nstatic_dir = \"../etc\"\n", "relative path"),
            ("wsgi = \"a:b\"\nhealth = \"/x;rm\"\n", "URL path"),
            (
                "wsgi = \"a:b\"\nserver_names = [\"a.com; evil\"]\n",
                "host name",
            ),
            ("wsgi = \"a:b\"\nsurprise = 1\n", "surprise"),
            ("wsgi = \"a:b\"\npython = \"3.x\"\n", "app.python"),
            ("wsgi = \"a:b\"\ntls = \"https\"\n", "unknown variant"),
            ("wsgi = \"a:b\"\ntls = \"provided\"\n", "server_names"),
            ("wsgi = \"a:b\"\nhsts = true\n", "app.hsts"),
            ("wsgi = \"a:b\"\ntls = \"acme\"\n", "server_names"),
            (
                "wsgi = \"a:b\"\ntls = \"acme\"\nserver_names = [\"*.a.example\"]\n",
                "HTTP-01",
            ),
        ] {
            let err = ProjectConfig::parse(&format!("{base}{extra}")).unwrap_err();
            assert!(err.contains(needle), "{extra}: {err}");
        }
        let err = ProjectConfig::parse("[app]\nname = \"My App\"\nwsgi = \"a:b\"\n").unwrap_err();
        assert!(err.contains("invalid app name"), "{err}");
    }
}
