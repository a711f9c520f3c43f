//! Reads Django settings files without running them: the module-level assignments a server would
//! see, following `from .base import *`, with just enough of Python's expressions to tell paths,
//! strings, lists, dicts and environment reads apart.
//!
//! Anything beyond that (a call we do not know, an assignment inside an `if`, a comprehension)
//! reads as [`Value::Unknown`], and the checks stay quiet about what they cannot tell.

mod assignments;
mod eval;
mod imports;
mod lexer;
mod parser;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use self::assignments::{apply_statement, assignment_targets};
use self::imports::{parse_from_import, resolve_import};
use self::lexer::{statements, tokenize};

/// A settings value as the server would see it with no environment variable of the app's set.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    None,
    /// An absolute path (`BASE_DIR / "x"`, `os.path.join(BASE_DIR, "x")`).
    Path(PathBuf),
    List(Vec<Value>),
    Dict(Vec<(String, Value)>),
    /// Read from an environment variable: its name and what the value is when it is unset.
    Env(String, Box<Value>),
    /// `Path.parents`, waiting for its index.
    Parents(PathBuf),
    Unknown,
}

impl Value {
    /// The value with any environment read replaced by what it gives when the variable is unset.
    pub fn resolved(&self) -> &Value {
        match self {
            Value::Env(_, inner) => inner.resolved(),
            other => other,
        }
    }

    /// The environment variable this value depends on, if any.
    pub fn env_var(&self) -> Option<&str> {
        match self {
            Value::Env(var, _) => Some(var),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match self.resolved() {
            Value::Dict(items) => items.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn truthy(&self) -> Option<bool> {
        Some(match self {
            Value::Str(s) => !s.is_empty(),
            Value::Int(i) => *i != 0,
            Value::Bool(b) => *b,
            Value::None => false,
            Value::Path(_) => true,
            Value::List(l) => !l.is_empty(),
            Value::Dict(d) => !d.is_empty(),
            Value::Env(_, inner) => return inner.truthy(),
            Value::Parents(_) | Value::Unknown => return None,
        })
    }
}

/// What a settings module sets, as read from its files.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub values: BTreeMap<String, Value>,
    /// The files read, the module's own first.
    pub files: Vec<PathBuf>,
}

impl Settings {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }
}

/// The file of a dotted module under `root`: `a/b.py` or `a/b/__init__.py`.
pub fn module_file(root: &Path, module: &str) -> Option<PathBuf> {
    let rel = module.replace('.', "/");
    let file = root.join(format!("{rel}.py"));
    if file.is_file() {
        return Some(file);
    }
    let init = root.join(&rel).join("__init__.py");
    init.is_file().then_some(init)
}

/// Reads the settings module `module` of the project in `root` (an absolute, canonical path).
/// None if the module's file is not in the project.
pub fn read_settings(root: &Path, module: &str) -> Option<Settings> {
    let file = module_file(root, module)?;
    let mut settings = Settings::default();
    let mut seen = BTreeSet::new();
    read_module(root, module, &file, &mut settings, &mut seen);
    Some(settings)
}

fn read_module(
    root: &Path,
    module: &str,
    file: &Path,
    settings: &mut Settings,
    seen: &mut BTreeSet<PathBuf>,
) {
    if !seen.insert(file.to_owned()) {
        return;
    }
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    settings.files.push(file.to_owned());
    let is_package = file.file_name().is_some_and(|n| n == "__init__.py");
    for statement in statements(&text) {
        let tokens = match tokenize(&statement.text) {
            Some(tokens) if !tokens.is_empty() => tokens,
            _ => continue,
        };
        if statement.indent > 0 {
            // Inside an if/try/def: it may or may not run, so what it assigns is unknown.
            if let Some(targets) = assignment_targets(&tokens) {
                for target in targets {
                    settings.values.insert(target, Value::Unknown);
                }
            }
            continue;
        }
        if let Some((from, names)) = parse_from_import(&tokens) {
            let Some(target) = resolve_import(module, is_package, &from) else {
                continue;
            };
            let Some(target_file) = module_file(root, &target) else {
                continue;
            };
            let mut imported = Settings::default();
            read_module(root, &target, &target_file, &mut imported, seen);
            settings.files.extend(imported.files);
            match names {
                None => {
                    for (name, value) in imported.values {
                        if !name.starts_with('_') {
                            settings.values.insert(name, value);
                        }
                    }
                }
                Some(names) => {
                    for (name, alias) in names {
                        if let Some(value) = imported.values.get(&name) {
                            settings.values.insert(alias, value.clone());
                        }
                    }
                }
            }
            continue;
        }
        apply_statement(&tokens, file, &mut settings.values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn project() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_startproject_settings_file_reads_as_django_sees_it() {
        let dir = project();
        let root = dir.path().canonicalize().unwrap();
        write(
            &root,
            "proj/settings.py",
            r#""""
Django settings for proj project.
"""

from pathlib import Path

# Build paths inside the project like this: BASE_DIR / 'subdir'.
BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = 'django-insecure-#x=1'

DEBUG = True

ALLOWED_HOSTS = []

DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.sqlite3',
        'NAME': BASE_DIR / 'db.sqlite3',
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {
        'NAME': 'django.contrib.auth.password_validation.UserAttributeSimilarityValidator',
    },
]

STATIC_URL = 'static/'
"#,
        );
        let settings = read_settings(&root, "proj.settings").unwrap();
        assert_eq!(settings.get("BASE_DIR"), Some(&Value::Path(root.clone())));
        assert_eq!(settings.get("DEBUG"), Some(&Value::Bool(true)));
        assert_eq!(settings.get("ALLOWED_HOSTS"), Some(&Value::List(vec![])));
        assert_eq!(settings.get("STATIC_ROOT"), None);
        let db = settings.get("DATABASES").unwrap().get("default").unwrap();
        assert_eq!(db.get("NAME"), Some(&Value::Path(root.join("db.sqlite3"))));
        assert_eq!(
            db.get("ENGINE"),
            Some(&Value::Str("django.db.backends.sqlite3".into()))
        );
    }

    #[test]
    fn a_settings_package_follows_star_imports_and_env_reads() {
        let dir = project();
        let root = dir.path().canonicalize().unwrap();
        write(&root, "cms/settings/__init__.py", "");
        write(
            &root,
            "cms/settings/base.py",
            "import os\n\
             PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\n\
             BASE_DIR = os.path.dirname(PROJECT_DIR)\n\
             STATIC_ROOT = os.path.join(BASE_DIR, 'static')\n\
             MEDIA_ROOT = os.path.join(BASE_DIR, \"media\")\n\
             ALLOWED_HOSTS = ['cms.example.org']\n\
             DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': os.path.join(BASE_DIR, 'db.sqlite3')}}\n",
        );
        write(
            &root,
            "cms/settings/production.py",
            "from .base import *  # noqa\n\
             DEBUG = os.environ.get('DJANGO_DEBUG', 'false').lower() == 'true'\n\
             ALLOWED_HOSTS += os.environ.get('EXTRA_HOSTS', 'a.org,b.org').split(',')\n\
             SECURE_SSL_REDIRECT = True\n\
             DATABASES['default']['NAME'] = '/var/lib/cms/db.sqlite3'\n\
             try:\n    from .local import *\nexcept ImportError:\n    pass\n\
             if DEBUG:\n    INTERNAL_IPS = ['127.0.0.1']\n",
        );
        let settings = read_settings(&root, "cms.settings.production").unwrap();
        assert_eq!(
            settings.get("STATIC_ROOT"),
            Some(&Value::Path(root.join("static")))
        );
        let debug = settings.get("DEBUG").unwrap();
        assert_eq!(debug.env_var(), Some("DJANGO_DEBUG"));
        assert_eq!(debug.resolved(), &Value::Bool(false));
        // `+=` of an env-derived list is not followed item by item.
        assert_eq!(settings.get("ALLOWED_HOSTS"), Some(&Value::Unknown));
        assert_eq!(
            settings.get("SECURE_SSL_REDIRECT"),
            Some(&Value::Bool(true))
        );
        assert_eq!(settings.get("INTERNAL_IPS"), Some(&Value::Unknown));
        let db = settings.get("DATABASES").unwrap().get("default").unwrap();
        assert_eq!(
            db.get("NAME"),
            Some(&Value::Str("/var/lib/cms/db.sqlite3".into()))
        );
        assert_eq!(settings.files.len(), 2);
    }

    #[test]
    fn odd_python_reads_as_unknown_not_as_a_wrong_value() {
        let dir = project();
        let root = dir.path().canonicalize().unwrap();
        write(
            &root,
            "s.py",
            "A = [x for x in range(3)]\nB = 'x' if C else 'y'\nD = f\"{A}\"\nE = some_call(1, 2)\n\
             F = (\n  'multi'\n  'line'\n)\nG = \"\"\"a\n# not a comment\nb\"\"\"\nH = 'ok' # comment\n\
             I, J = 1, 2\nK = L = 'both'\nM = ('a',)\n",
        );
        let s = read_settings(&root, "s").unwrap();
        for name in ["A", "B", "D", "E"] {
            assert_eq!(s.get(name), Some(&Value::Unknown), "{name}");
        }
        assert_eq!(s.get("F"), Some(&Value::Str("multiline".into())));
        assert_eq!(
            s.get("G"),
            Some(&Value::Str("a\n# not a comment\nb".into()))
        );
        assert_eq!(s.get("H"), Some(&Value::Str("ok".into())));
        assert_eq!(s.get("K"), Some(&Value::Str("both".into())));
        assert_eq!(s.get("L"), Some(&Value::Str("both".into())));
        assert_eq!(s.get("M"), Some(&Value::List(vec![Value::Str("a".into())])));
    }
}
