//! The settings checked as Django would see them on a server, where the release is root's and
//! read-only to the app and its hooks, the health check sends the first server name as `Host`
//! straight to the app over plain HTTP, and the agent gives the app a data dir that outlives
//! releases in `MILKY_DATA_DIR`.
//!
//! Each problem says what fails and how to fix it; the fixes that can be applied go into one
//! overlay module that imports the project's settings and sets only what needs fixing.

use std::fmt::Write as _;
use std::path::Path;

use super::python::{Settings, Value};

/// Where the overlay puts collected static files when the settings have no usable STATIC_ROOT.
pub const DEFAULT_STATIC_DIR: &str = "static_collected";

/// A change the overlay settings module can make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// `STATIC_ROOT` inside the project, where the hook may write and nginx serves from.
    StaticRoot,
    /// Add the health check's host to `ALLOWED_HOSTS`.
    AllowHost(String),
    /// Keep these SQLite databases (alias, file name) in `MILKY_DATA_DIR` on servers.
    SqliteInDataDir(Vec<(String, String)>),
    /// Trust nginx's `X-Forwarded-Proto` and let the health check's path through unredirected.
    ProxySsl {
        health: String,
    },
    DebugOff,
    /// Uploads in the app's data dir (`MILKY_MEDIA_DIR`), served by nginx at `url`.
    MediaInDataDir {
        url: Option<String>,
    },
}

impl Fix {
    /// Safe fixes only make a deploy work and change nothing that already works on a server:
    /// `--yes` applies them. The others change what the app does; they are offered on a terminal.
    pub fn is_safe(&self) -> bool {
        matches!(
            self,
            Fix::StaticRoot
                | Fix::AllowHost(_)
                | Fix::SqliteInDataDir(_)
                | Fix::MediaInDataDir { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What fails on a server, and why.
    pub message: String,
    /// The fix to make by hand (when `fix` is None) or what the overlay does.
    pub remedy: String,
    pub fix: Option<Fix>,
}

/// What the checks found out besides problems.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub problems: Vec<Problem>,
    /// STATIC_ROOT relative to the project, when it is inside it.
    pub static_dir: Option<String>,
    /// MEDIA_ROOT relative to the project, when it is inside it.
    pub media_dir: Option<String>,
    /// SQLite files inside the project, relative to it.
    pub sqlite_files: Vec<String>,
}

/// What the checks need to know about the deploy.
pub struct Deploy<'a> {
    /// The project root, absolute and canonical (the paths settings compute are under it).
    pub root: &'a Path,
    /// The `Host` the health check sends.
    pub host: &'a str,
    pub health: &'a str,
    pub collectstatic: bool,
}

/// A settings path as a path relative to the project, if it is inside it. A relative string is
/// relative to the release dir, where the hooks run.
fn inside(root: &Path, value: &Value) -> Option<String> {
    let rel = match value {
        Value::Path(p) => p.strip_prefix(root).ok()?.to_string_lossy().into_owned(),
        Value::Str(s) if s.starts_with('/') => Path::new(s)
            .strip_prefix(root)
            .ok()?
            .to_string_lossy()
            .into_owned(),
        Value::Str(s) => s.trim_start_matches("./").to_owned(),
        _ => return None,
    };
    let rel = rel.trim_end_matches('/').to_owned();
    Some(if rel.is_empty() { ".".into() } else { rel })
}

fn unless_set(value: &Value) -> String {
    value
        .env_var()
        .map(|var| format!(" (while {var} is not set on the server)"))
        .unwrap_or_default()
}

/// Django's `validate_host`: `*`, `.example.com` (the domain and its subdomains), or the name.
pub fn host_allowed(host: &str, patterns: &[String]) -> bool {
    let host = host.to_lowercase();
    patterns.iter().any(|p| {
        let p = p.to_lowercase();
        p == "*" || p == host || (p.starts_with('.') && (host.ends_with(&p) || host == p[1..]))
    })
}

/// ALLOWED_HOSTS as a list of strings, when it can be told.
pub fn allowed_hosts(settings: Option<&Settings>) -> Option<Vec<String>> {
    let Some(value) = settings.and_then(|s| s.get("ALLOWED_HOSTS")) else {
        // Django's default.
        return Some(Vec::new());
    };
    match value.resolved() {
        Value::List(items) => items
            .iter()
            .map(|v| match v.resolved() {
                Value::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        Value::Str(s) => Some(vec![s.clone()]),
        _ => None,
    }
}

pub fn check(settings: Option<&Settings>, deploy: &Deploy) -> Findings {
    let mut findings = Findings::default();
    let Some(settings) = settings else {
        return findings;
    };
    let root = deploy.root;
    let problems = &mut findings.problems;

    if let Some(media) = settings.get("MEDIA_ROOT") {
        findings.media_dir = inside(root, media.resolved()).filter(|d| d != ".");
        if let Some(dir) = &findings.media_dir
            && media.env_var().is_none()
        {
            // A plain URL path nginx can serve; anything else (a CDN URL) is left to the app.
            let url = match settings.get("MEDIA_URL").map(Value::resolved) {
                Some(Value::Str(url))
                    if url.starts_with('/') && url.ends_with('/') && url.len() > 1 =>
                {
                    Some(url.clone())
                }
                _ => None,
            };
            problems.push(Problem {
                message: format!(
                    "MEDIA_ROOT is {dir} inside the project: on a server uploads would go into the release, which is read-only to the app and replaced by every version"
                ),
                remedy: format!(
                    "MEDIA_ROOT = os.environ.get(\"MILKY_MEDIA_DIR\", MEDIA_ROOT): the media/ folder of the app's data dir, kept across releases{}",
                    url.as_ref()
                        .map(|u| format!(", and media_url = \"{u}\" under [app] in milky.toml so nginx serves it"))
                        .unwrap_or_default()
                ),
                fix: Some(Fix::MediaInDataDir { url }),
            });
        }
    }

    let static_root = settings.get("STATIC_ROOT");
    match static_root.map(Value::resolved) {
        Some(v @ (Value::Path(_) | Value::Str(_))) => match inside(root, v) {
            Some(rel) if rel != "." => findings.static_dir = Some(rel),
            _ => {
                if deploy.collectstatic {
                    problems.push(Problem {
                        message: format!(
                            "STATIC_ROOT is {}{}, not a dir inside the project: on a server the collectstatic hook may write only into the release's static dir, which nginx serves",
                            show(v),
                            unless_set(static_root.expect("matched"))
                        ),
                        remedy: format!(
                            "STATIC_ROOT = BASE_DIR / \"{DEFAULT_STATIC_DIR}\" in the settings the servers use"
                        ),
                        fix: Some(Fix::StaticRoot),
                    });
                }
            }
        },
        Some(Value::Unknown) if deploy.collectstatic => problems.push(Problem {
            message: format!(
                "cannot tell from the settings where STATIC_ROOT points{}",
                unless_set(static_root.expect("matched"))
            ),
            remedy: "set [app] static_dir in milky.toml to that dir, relative to the project (nginx serves it at /static/)".into(),
            fix: None,
        }),
        None | Some(Value::None) if deploy.collectstatic => problems.push(Problem {
            message: format!(
                "STATIC_ROOT is not set{}: the collectstatic hook fails (\"You're using the staticfiles app without having set the STATIC_ROOT setting\")",
                static_root.map(unless_set).unwrap_or_default()
            ),
            remedy: format!(
                "STATIC_ROOT = BASE_DIR / \"{DEFAULT_STATIC_DIR}\" in the settings the servers use"
            ),
            fix: Some(Fix::StaticRoot),
        }),
        _ => {}
    }

    match allowed_hosts(Some(settings)) {
        Some(hosts) if !host_allowed(deploy.host, &hosts) => problems.push(Problem {
            message: format!(
                "ALLOWED_HOSTS = {hosts:?}{} rejects Host: {}, which the health check sends (the first of server_names): Django answers 400 Invalid HTTP_HOST header and the deploy fails",
                settings.get("ALLOWED_HOSTS").map(unless_set).unwrap_or_default(),
                deploy.host
            ),
            remedy: format!("add \"{}\" to ALLOWED_HOSTS", deploy.host),
            fix: Some(Fix::AllowHost(deploy.host.to_owned())),
        }),
        Some(_) => {}
        None => problems.push(Problem {
            message: format!(
                "cannot tell from the settings whether ALLOWED_HOSTS accepts Host: {}, which the health check sends",
                deploy.host
            ),
            remedy: format!(
                "make sure ALLOWED_HOSTS on the servers includes \"{}\"",
                deploy.host
            ),
            fix: None,
        }),
    }

    let mut fixable = Vec::new();
    if let Some(Value::Dict(databases)) = settings.get("DATABASES").map(Value::resolved) {
        for (alias, db) in databases {
            let is_sqlite = matches!(
                db.get("ENGINE").map(Value::resolved),
                Some(Value::Str(engine)) if engine.contains("sqlite3")
            );
            let Some(name) = db.get("NAME") else { continue };
            if !is_sqlite {
                continue;
            }
            let Some(rel) = inside(root, name.resolved()).filter(|r| r != ":memory:") else {
                continue;
            };
            let file = Path::new(&rel)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| "db.sqlite3".into());
            findings.sqlite_files.push(rel.clone());
            let message = format!(
                "DATABASES[{alias:?}] is the SQLite file {rel} inside the project{}: on a server that is inside the release, which is root's and read-only to the hooks and the app, so migrate cannot open it (and each release would have its own database)",
                unless_set(name)
            );
            match name.env_var() {
                Some(var) => problems.push(Problem {
                    message,
                    remedy: format!(
                        "set {var} on the servers (cargo milky env set GROUP APP {var}=/path/outside/the/release), or make its default os.path.join(os.environ.get(\"MILKY_DATA_DIR\", BASE_DIR), \"{file}\")"
                    ),
                    fix: None,
                }),
                None => {
                    fixable.push((alias.clone(), file.clone()));
                    problems.push(Problem {
                        message,
                        remedy: format!(
                            "NAME = os.path.join(os.environ.get(\"MILKY_DATA_DIR\", BASE_DIR), \"{file}\"): MILKY_DATA_DIR is the app's data dir on a server, kept across releases"
                        ),
                        fix: None,
                    });
                }
            }
        }
    }
    if !fixable.is_empty() {
        // One fix for every SQLite database, on the last of their problems.
        let last = problems
            .iter_mut()
            .rev()
            .find(|p| p.message.starts_with("DATABASES["))
            .expect("pushed above");
        last.fix = Some(Fix::SqliteInDataDir(fixable));
    }

    let redirect = settings.get("SECURE_SSL_REDIRECT");
    let proxy_header = settings.get("SECURE_PROXY_SSL_HEADER").map(Value::resolved);
    if redirect.map(Value::resolved) == Some(&Value::Bool(true))
        && matches!(proxy_header, None | Some(Value::None))
    {
        problems.push(Problem {
            message: format!(
                "SECURE_SSL_REDIRECT = True{} without SECURE_PROXY_SSL_HEADER: behind nginx every request looks like plain HTTP to Django and is redirected to https forever, and the health check (plain HTTP to the app) gets a 301 and fails",
                unless_set(redirect.expect("matched"))
            ),
            remedy: format!(
                "SECURE_PROXY_SSL_HEADER = (\"HTTP_X_FORWARDED_PROTO\", \"https\") (nginx sets that header on every request it passes on), and exempt the health check's path {} from the redirect (SECURE_REDIRECT_EXEMPT) or give it a path of its own",
                deploy.health
            ),
            fix: Some(Fix::ProxySsl {
                health: deploy.health.to_owned(),
            }),
        });
    }

    if let Some(debug) = settings.get("DEBUG")
        && debug.resolved() == &Value::Bool(true)
    {
        problems.push(Problem {
            message: format!(
                "DEBUG = True{}: error pages show the settings and code to anyone",
                unless_set(debug)
            ),
            remedy: "DEBUG = False in the settings the servers use".into(),
            fix: Some(Fix::DebugOff),
        });
    }
    findings
}

fn show(value: &Value) -> String {
    match value {
        Value::Path(p) => p.display().to_string(),
        Value::Str(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

/// The overlay's module name and file for the settings module `module` (file `module_file`,
/// relative to the project): `proj.settings` → `proj.settings_milky` in `proj/settings_milky.py`.
pub fn overlay_module(module: &str, module_file: &Path) -> (String, std::path::PathBuf) {
    let leaf = module.rsplit('.').next().unwrap_or(module);
    let overlay = format!("{leaf}_milky");
    let name = match module.rsplit_once('.') {
        Some((package, _)) => format!("{package}.{overlay}"),
        None => overlay.clone(),
    };
    // A settings package (`proj/settings/__init__.py`) gets its overlay beside the package.
    let dir = if module_file.file_name().is_some_and(|n| n == "__init__.py") {
        module_file.parent().and_then(Path::parent)
    } else {
        module_file.parent()
    }
    .unwrap_or(Path::new(""));
    (name, dir.join(format!("{overlay}.py")))
}

/// The first line of every overlay, so init knows a file it may overwrite.
pub const OVERLAY_MARKER: &str = "# Written by `cargo milky init`";

/// The overlay module: the project's settings, then only the fixes.
pub fn render_overlay(module: &str, overlay_file: &Path, fixes: &[Fix]) -> String {
    // parents[N] of the overlay file is the project root.
    let depth = overlay_file.components().count().saturating_sub(1);
    let mut text = format!(
        "{OVERLAY_MARKER}: the settings the servers use (milky.toml's [app] settings):\n\
         # {module}, with only what would fail a deploy changed.\n\
         # Delete a fix to drop it; change everything else in {module} itself.\n\
         import os\n\
         from pathlib import Path\n\
         \n\
         from {module} import *  # noqa: F401,F403\n\
         \n\
         _PROJECT_DIR = Path(__file__).resolve().parents[{depth}]\n"
    );
    for fix in fixes {
        text.push('\n');
        match fix {
            Fix::StaticRoot => {
                let _ = write!(
                    text,
                    "# collectstatic writes here, the one dir of a release it may write to on a\n\
                     # server; nginx serves it at STATIC_URL (milky.toml's static_dir).\n\
                     STATIC_ROOT = _PROJECT_DIR / \"{DEFAULT_STATIC_DIR}\"\n"
                );
            }
            Fix::AllowHost(host) => {
                let _ = write!(
                    text,
                    "# The health check sends Host: {host} (the first of milky.toml's server_names).\n\
                     ALLOWED_HOSTS = [*globals().get(\"ALLOWED_HOSTS\", []), {host:?}]\n"
                );
            }
            Fix::SqliteInDataDir(databases) => {
                text.push_str(
                    "# On a server the release is read-only: SQLite lives in the app's data dir, kept\n\
                     # across releases. Run elsewhere (no MILKY_DATA_DIR), the file stays where it was.\n\
                     if os.environ.get(\"MILKY_DATA_DIR\"):\n    DATABASES = {\n        **DATABASES,\n",
                );
                for (alias, file) in databases {
                    let _ = writeln!(
                        text,
                        "        {alias:?}: {{\n            **DATABASES[{alias:?}],\n            \"NAME\": os.path.join(os.environ[\"MILKY_DATA_DIR\"], {file:?}),\n        }},"
                    );
                }
                text.push_str("    }\n");
            }
            Fix::ProxySsl { health } => {
                let exempt = format!("^{}$", regex_escape(health.trim_start_matches('/')));
                let _ = write!(
                    text,
                    "# nginx passes requests on over plain HTTP and says the client's scheme in\n\
                     # X-Forwarded-Proto (set on every request, so clients cannot forge it).\n\
                     SECURE_PROXY_SSL_HEADER = (\"HTTP_X_FORWARDED_PROTO\", \"https\")\n\
                     # The health check asks the app directly over plain HTTP: not redirected.\n\
                     SECURE_REDIRECT_EXEMPT = [*globals().get(\"SECURE_REDIRECT_EXEMPT\", []), r\"{exempt}\"]\n"
                );
            }
            Fix::DebugOff => {
                text.push_str("DEBUG = False\n");
            }
            Fix::MediaInDataDir { .. } => {
                text.push_str(
                    "# Uploads go to the media/ folder of the app's data dir on a server, kept across\n\
                     # releases (nginx serves it at milky.toml's media_url); elsewhere, where they were.\n\
                     MEDIA_ROOT = os.environ.get(\"MILKY_MEDIA_DIR\", MEDIA_ROOT)\n",
                );
            }
        }
    }
    text
}

fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::init::python::read_settings;

    fn settings(text: &str) -> (tempfile::TempDir, std::path::PathBuf, Settings) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("proj")).unwrap();
        std::fs::write(root.join("proj/settings.py"), text).unwrap();
        let settings = read_settings(&root, "proj.settings").unwrap();
        (dir, root, settings)
    }

    fn deploy<'a>(root: &'a Path, host: &'a str) -> Deploy<'a> {
        Deploy {
            root,
            host,
            health: "/",
            collectstatic: true,
        }
    }

    #[test]
    fn a_startproject_app_has_three_deploy_failures_and_debug() {
        let (_dir, root, s) = settings(
            "from pathlib import Path\nBASE_DIR = Path(__file__).resolve().parent.parent\nDEBUG = True\nALLOWED_HOSTS = []\n\
             DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': BASE_DIR / 'db.sqlite3'}}\nSTATIC_URL = 'static/'\n",
        );
        let findings = check(Some(&s), &deploy(&root, "localhost"));
        let fixes: Vec<Fix> = findings
            .problems
            .iter()
            .filter_map(|p| p.fix.clone())
            .collect();
        assert_eq!(
            fixes,
            [
                Fix::StaticRoot,
                Fix::AllowHost("localhost".into()),
                Fix::SqliteInDataDir(vec![("default".into(), "db.sqlite3".into())]),
                Fix::DebugOff,
            ]
        );
        assert_eq!(findings.sqlite_files, ["db.sqlite3"]);
        assert_eq!(findings.static_dir, None);
        let overlay = render_overlay("proj.settings", Path::new("proj/settings_milky.py"), &fixes);
        assert!(overlay.contains("parents[1]"), "{overlay}");
        assert!(overlay.contains("from proj.settings import *"), "{overlay}");
        assert!(
            overlay.contains("\"default\": {\n            **DATABASES[\"default\"],"),
            "{overlay}"
        );
    }

    #[test]
    fn settings_that_deploy_report_nothing() {
        let (_dir, root, s) = settings(
            "import os\nfrom pathlib import Path\nBASE_DIR = Path(__file__).resolve().parent.parent\nDEBUG = False\n\
             ALLOWED_HOSTS = ['.example.com']\nSTATIC_ROOT = BASE_DIR / 'static'\nMEDIA_ROOT = '/srv/shop-media'\n\
             DATABASES = {'default': {'ENGINE': 'django.db.backends.postgresql', 'NAME': 'shop'}}\n\
             SECURE_SSL_REDIRECT = True\nSECURE_PROXY_SSL_HEADER = ('HTTP_X_FORWARDED_PROTO', 'https')\n",
        );
        let findings = check(Some(&s), &deploy(&root, "www.example.com"));
        assert_eq!(findings.problems, []);
        assert_eq!(findings.static_dir.as_deref(), Some("static"));
        assert_eq!(findings.media_dir, None);
    }

    #[test]
    fn media_inside_the_project_moves_to_the_data_dir_and_is_served() {
        let (_dir, root, s) = settings(
            "from pathlib import Path\nBASE_DIR = Path(__file__).resolve().parent.parent\n\
             ALLOWED_HOSTS = ['*']\nSTATIC_ROOT = BASE_DIR / 'static'\n\
             MEDIA_ROOT = BASE_DIR / 'uploads'\nMEDIA_URL = '/uploads/'\n",
        );
        let findings = check(Some(&s), &deploy(&root, "shop"));
        assert_eq!(findings.media_dir.as_deref(), Some("uploads"));
        assert_eq!(findings.problems.len(), 1, "{:?}", findings.problems);
        let problem = &findings.problems[0];
        assert!(
            problem.message.contains("MEDIA_ROOT"),
            "{}",
            problem.message
        );
        let fix = problem.fix.clone().unwrap();
        assert!(fix.is_safe());
        assert_eq!(
            fix,
            Fix::MediaInDataDir {
                url: Some("/uploads/".into())
            }
        );
        let overlay = render_overlay("proj.settings", Path::new("proj/settings_milky.py"), &[fix]);
        assert!(
            overlay.contains("MEDIA_ROOT = os.environ.get(\"MILKY_MEDIA_DIR\", MEDIA_ROOT)"),
            "{overlay}"
        );
    }

    #[test]
    fn ssl_redirect_without_the_proxy_header_is_reported_not_fixed_by_default() {
        let (_dir, root, s) =
            settings("ALLOWED_HOSTS = ['*']\nSTATIC_ROOT = 'static'\nSECURE_SSL_REDIRECT = True\n");
        let findings = check(Some(&s), &deploy(&root, "shop"));
        assert_eq!(findings.problems.len(), 1, "{:?}", findings.problems);
        let problem = &findings.problems[0];
        assert!(problem.message.contains("SECURE_PROXY_SSL_HEADER"));
        assert!(!problem.fix.as_ref().unwrap().is_safe());
    }

    #[test]
    fn an_env_driven_database_path_is_reported_with_its_variable() {
        let (_dir, root, s) = settings(
            "import os\nfrom pathlib import Path\nBASE_DIR = Path(__file__).resolve().parent.parent\nALLOWED_HOSTS = ['*']\nSTATIC_ROOT = BASE_DIR / 's'\n\
             DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': os.environ.get('DB_PATH', str(BASE_DIR / 'db.sqlite3'))}}\n",
        );
        let findings = check(Some(&s), &deploy(&root, "shop"));
        assert_eq!(findings.problems.len(), 1);
        assert!(findings.problems[0].message.contains("DB_PATH is not set"));
        assert_eq!(findings.problems[0].fix, None);
    }

    #[test]
    fn hosts_match_as_django_matches_them() {
        let hosts = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(host_allowed("a.example.com", &hosts(&[".example.com"])));
        assert!(host_allowed("example.com", &hosts(&[".example.com"])));
        assert!(host_allowed("Shop", &hosts(&["shop"])));
        assert!(host_allowed("x", &hosts(&["*"])));
        assert!(!host_allowed("proj", &hosts(&[])));
        assert!(!host_allowed("badexample.com", &hosts(&[".example.com"])));
    }

    #[test]
    fn overlays_sit_beside_the_settings() {
        assert_eq!(
            overlay_module("proj.settings", Path::new("proj/settings.py")),
            (
                "proj.settings_milky".into(),
                "proj/settings_milky.py".into()
            )
        );
        assert_eq!(
            overlay_module(
                "cms.settings.production",
                Path::new("cms/settings/production.py")
            ),
            (
                "cms.settings.production_milky".into(),
                "cms/settings/production_milky.py".into()
            )
        );
        assert_eq!(
            overlay_module("cms.settings", Path::new("cms/settings/__init__.py")),
            ("cms.settings_milky".into(), "cms/settings_milky.py".into())
        );
    }
}
