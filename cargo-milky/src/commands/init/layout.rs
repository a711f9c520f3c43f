//! Where a Django project keeps things: its settings modules (named by manage.py, wsgi.py and
//! asgi.py, or found as `settings.py` and `settings/*.py`), its WSGI module and its requirements
//! files, each ranked so that what production runs comes first.

use std::path::Path;

use milky_core::python::{PythonSpec, PythonVersion};

use super::python::{Settings, Value, module_file};

/// What a settings module looks like it is for, from its last name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Production,
    Plain,
    Base,
    Development,
}

impl Kind {
    fn of(name: &str) -> Kind {
        let name = name.to_lowercase();
        let words: Vec<&str> = name.split(['_', '-', '.']).collect();
        let has = |list: &[&str]| words.iter().any(|w| list.contains(w));
        if has(&["production", "prod", "live", "deploy", "deployment"]) {
            Kind::Production
        } else if has(&[
            "dev",
            "develop",
            "development",
            "local",
            "test",
            "tests",
            "testing",
            "ci",
            "debug",
            "docs",
            "lint",
        ]) {
            Kind::Development
        } else if has(&["base", "common", "default", "defaults", "shared", "core"]) {
            Kind::Base
        } else {
            Kind::Plain
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Production => "production",
            Kind::Plain => "settings",
            Kind::Base => "base",
            Kind::Development => "development",
        }
    }
}

/// A file that names a settings module in `DJANGO_SETTINGS_MODULE`, ranked: what a WSGI server
/// loads first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Wsgi,
    Asgi,
    Manage,
    Found,
}

/// A settings module the project has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsCandidate {
    pub module: String,
    pub kind: Kind,
    /// The files naming it (`manage.py`, `proj/wsgi.py`), best first; empty if only found.
    pub named_in: Vec<(Source, String)>,
}

impl SettingsCandidate {
    fn rank(&self) -> (Kind, Source) {
        (
            self.kind,
            self.named_in.first().map_or(Source::Found, |(s, _)| *s),
        )
    }

    /// "production, named in proj/wsgi.py"
    pub fn describe(&self) -> String {
        match self.named_in.first() {
            Some(_) => format!(
                "{}, named in {}",
                self.kind.label(),
                self.named_in
                    .iter()
                    .map(|(_, f)| f.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
            None => self.kind.label().to_owned(),
        }
    }
}

/// A requirements file, relative to the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    pub path: String,
    pub kind: Kind,
}

#[derive(Debug, Default)]
pub struct Layout {
    /// Best first: production settings, then plain ones, base, development.
    pub settings: Vec<SettingsCandidate>,
    /// Best first: production, plain (`requirements.txt`), base, development.
    pub requirements: Vec<Requirements>,
    /// A pyproject.toml at the top, and whether it lists `[project] dependencies`.
    pub pyproject: Option<bool>,
    /// A `uv.lock` beside that pyproject.toml.
    pub uv_lock: bool,
    /// The Python the project asks for: `.python-version`'s series, else pyproject's
    /// `requires-python`.
    pub python: Option<String>,
}

/// Directories that hold no settings package of the project.
fn skipped_dir(dir: &Path) -> bool {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    name.starts_with('.')
        || matches!(
            name.as_ref(),
            "node_modules" | "__pycache__" | "target" | "venv" | "env" | "static" | "media"
        )
        || dir.join("pyvenv.cfg").exists()
}

fn sorted_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !skipped_dir(p))
        .collect();
    dirs.sort();
    dirs
}

fn is_module_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn detect(root: &Path) -> Layout {
    let mut candidates: Vec<SettingsCandidate> = Vec::new();
    let mut add = |module: String, named: Option<(Source, String)>| {
        if !module.split('.').all(is_module_name) || module_file(root, &module).is_none() {
            return;
        }
        let index = match candidates.iter().position(|c| c.module == module) {
            Some(i) => i,
            None => {
                let kind = Kind::of(module.rsplit('.').next().unwrap_or(&module));
                candidates.push(SettingsCandidate {
                    module,
                    kind,
                    named_in: Vec::new(),
                });
                candidates.len() - 1
            }
        };
        if let Some(named) = named {
            let list = &mut candidates[index].named_in;
            if !list.contains(&named) {
                list.push(named);
                list.sort();
            }
        }
    };

    // Files that set DJANGO_SETTINGS_MODULE: manage.py, and each package's wsgi.py and asgi.py.
    let mut naming = vec![(Source::Manage, "manage.py".to_owned())];
    for dir in sorted_dirs(root) {
        let pkg = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        naming.push((Source::Wsgi, format!("{pkg}/wsgi.py")));
        naming.push((Source::Asgi, format!("{pkg}/asgi.py")));
    }
    naming.push((Source::Wsgi, "wsgi.py".to_owned()));
    for (source, rel) in naming {
        let Ok(text) = std::fs::read_to_string(root.join(&rel)) else {
            continue;
        };
        for module in settings_named_in(&text) {
            add(module, Some((source, rel.clone())));
        }
    }
    // Settings files beside them: settings.py and the modules of a settings package.
    for dir in sorted_dirs(root) {
        let pkg = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !is_module_name(&pkg) {
            continue;
        }
        if dir.join("settings.py").is_file() {
            add(format!("{pkg}.settings"), None);
        }
        let package = dir.join("settings");
        if package.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(&package)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".py") && n != "__init__.py")
                .collect();
            files.sort();
            for file in files {
                add(
                    format!("{pkg}.settings.{}", file.trim_end_matches(".py")),
                    None,
                );
            }
        }
    }
    if root.join("settings.py").is_file() {
        add("settings".to_owned(), None);
    }
    candidates.sort_by_key(SettingsCandidate::rank);

    let pyproject = std::fs::read_to_string(root.join("pyproject.toml"))
        .ok()
        .map(|text| text.parse::<toml::Table>().unwrap_or_default());
    let project = pyproject.as_ref().and_then(|t| t.get("project"));
    Layout {
        settings: candidates,
        requirements: requirements(root),
        pyproject: pyproject.as_ref().map(|_| {
            project
                .and_then(|p| p.get("dependencies"))
                .and_then(|d| d.as_array())
                .is_some_and(|d| !d.is_empty())
        }),
        uv_lock: pyproject.is_some() && root.join(milky_core::project::UV_LOCK).is_file(),
        python: python_version_file(root).or_else(|| {
            project
                .and_then(|p| p.get("requires-python"))
                .and_then(|r| r.as_str())
                .filter(|r| PythonSpec::parse(r).is_ok())
                .map(str::to_owned)
        }),
    }
}

/// The series `.python-version` names (`3.13` of `3.13.0`, `cpython-3.13`): servers run a
/// series, and a patch release pinned on a laptop would match almost none of them.
fn python_version_file(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join(".python-version")).ok()?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))?;
    let version = line
        .trim_start_matches("cpython")
        .trim_start_matches(['-', '@'])
        .trim_start_matches("python");
    let version = PythonVersion::parse(version)?;
    Some(version.short()).filter(|v| PythonSpec::parse(v).is_ok())
}

/// The dotted names a file gives `DJANGO_SETTINGS_MODULE` (`os.environ.setdefault(…)`,
/// `os.environ["…"] = …`).
fn settings_named_in(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| {
            line.contains("DJANGO_SETTINGS_MODULE") && !line.trim_start().starts_with('#')
        })
        .flat_map(quoted_strings)
        .filter(|s| s != "DJANGO_SETTINGS_MODULE" && s.contains('.') || s == "settings")
        .collect()
}

pub fn quoted_strings(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find(['"', '\'']) {
        let quote = rest[start..].chars().next().expect("found a quote");
        let after = &rest[start + 1..];
        let Some(end) = after.find(quote) else { break };
        out.push(after[..end].to_owned());
        rest = &after[end + 1..];
    }
    out
}

/// Requirements files: `requirements.txt`, `requirements-*.txt`, `requirements/*.txt`.
fn requirements(root: &Path) -> Vec<Requirements> {
    let mut found = Vec::new();
    let kind_of = |stem: &str| {
        let stem = stem
            .trim_start_matches("requirements")
            .trim_start_matches(['-', '_', '.']);
        if stem.is_empty() {
            Kind::Plain
        } else {
            Kind::of(stem)
        }
    };
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("requirements") && name.ends_with(".txt") && entry.path().is_file() {
            found.push(Requirements {
                kind: kind_of(name.trim_end_matches(".txt")),
                path: name,
            });
        }
    }
    for dir in ["requirements", "reqs", "requirements.d"] {
        for entry in std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".txt") && entry.path().is_file() {
                found.push(Requirements {
                    kind: kind_of(name.trim_end_matches(".txt")),
                    path: format!("{dir}/{name}"),
                });
            }
        }
    }
    found.retain(|r| milky_core::project::check_relative_path("requirements", &r.path).is_ok());
    // A file at the top before one in a folder, then by name.
    found.sort_by(|a, b| {
        (a.kind, a.path.contains('/'), &a.path).cmp(&(b.kind, b.path.contains('/'), &b.path))
    });
    found
}

/// The WSGI callable for `settings`: `WSGI_APPLICATION` when its module is in the project, else a
/// wsgi.py in the settings module's package or one of its parents, else one in any top package.
pub fn wsgi_for(root: &Path, module: Option<&str>, settings: Option<&Settings>) -> Option<String> {
    if let Some(Value::Str(app)) = settings
        .and_then(|s| s.get("WSGI_APPLICATION"))
        .map(Value::resolved)
        && let Some((module, attr)) = app.rsplit_once('.')
        && module_file(root, module).is_some()
    {
        return Some(format!("{module}:{attr}"));
    }
    if let Some(module) = module {
        let mut parts: Vec<&str> = module.split('.').collect();
        while parts.pop().is_some() && !parts.is_empty() {
            let package = parts.join(".");
            if root
                .join(package.replace('.', "/"))
                .join("wsgi.py")
                .is_file()
            {
                return Some(format!("{package}.wsgi:application"));
            }
        }
    }
    for dir in sorted_dirs(root) {
        let pkg = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if is_module_name(&pkg) && dir.join("wsgi.py").is_file() {
            return Some(format!("{pkg}.wsgi:application"));
        }
    }
    root.join("wsgi.py")
        .is_file()
        .then(|| "wsgi:application".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::init::python::read_settings;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_settings_package_prefers_production_over_what_manage_py_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "manage.py",
            "import os\nif __name__ == '__main__':\n    os.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"cms.settings.dev\")\n",
        );
        write(
            root,
            "cms/wsgi.py",
            "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'cms.settings.dev')\n",
        );
        write(root, "cms/__init__.py", "");
        for file in ["__init__", "base", "dev", "production"] {
            write(root, &format!("cms/settings/{file}.py"), "");
        }
        write(root, "requirements/base.txt", "Django\n");
        write(root, "requirements/dev.txt", "-r base.txt\n");
        write(root, "requirements/production.txt", "-r base.txt\n");
        write(root, "pyproject.toml", "[tool.black]\nline-length = 99\n");
        let layout = detect(root);
        let modules: Vec<&str> = layout.settings.iter().map(|c| c.module.as_str()).collect();
        assert_eq!(
            modules,
            [
                "cms.settings.production",
                "cms.settings.base",
                "cms.settings.dev"
            ]
        );
        assert_eq!(
            layout.settings[2].describe(),
            "development, named in cms/wsgi.py and manage.py"
        );
        let requirements: Vec<&str> = layout
            .requirements
            .iter()
            .map(|r| r.path.as_str())
            .collect();
        assert_eq!(
            requirements,
            [
                "requirements/production.txt",
                "requirements/base.txt",
                "requirements/dev.txt"
            ]
        );
        assert_eq!(layout.pyproject, Some(false));
        // The settings package is not where wsgi.py is: its parent package is.
        assert_eq!(
            wsgi_for(root, Some("cms.settings.production"), None).as_deref(),
            Some("cms.wsgi:application")
        );
    }

    #[test]
    fn wsgi_application_in_the_settings_wins() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        write(
            &root,
            "config/settings.py",
            "WSGI_APPLICATION = 'config.server.app'\n",
        );
        write(&root, "config/server.py", "app = None\n");
        write(&root, "config/wsgi.py", "application = None\n");
        let settings = read_settings(&root, "config.settings").unwrap();
        assert_eq!(
            wsgi_for(&root, Some("config.settings"), Some(&settings)).as_deref(),
            Some("config.server:app")
        );
    }

    #[test]
    fn the_python_comes_from_python_version_then_requires_python() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "pyproject.toml",
            "[project]\nname = \"x\"\nrequires-python = \">=3.12\"\ndependencies = [\"django\"]\n",
        );
        write(root, "uv.lock", "version = 1\n");
        let layout = detect(root);
        assert_eq!(layout.python.as_deref(), Some(">=3.12"));
        assert!(layout.uv_lock);
        write(root, ".python-version", "# pinned\ncpython-3.13.1\n");
        assert_eq!(detect(root).python.as_deref(), Some("3.13"));
        write(root, ".python-version", "pypy3.10\n");
        assert_eq!(detect(root).python.as_deref(), Some(">=3.12"));
    }

    #[test]
    fn a_plain_requirements_file_beats_base_and_dev_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "requirements.txt", "Django\n");
        write(root, "requirements-dev.txt", "pytest\n");
        write(root, "requirements/base.txt", "Django\n");
        let paths: Vec<String> = requirements(root).into_iter().map(|r| r.path).collect();
        assert_eq!(
            paths,
            [
                "requirements.txt",
                "requirements/base.txt",
                "requirements-dev.txt"
            ]
        );
    }
}
