//! The Pythons of this server: `[releases] python` (the default, served by the distribution's
//! mod_wsgi), `[python] interpreters`, and CPython installs found in the usual places. Each is
//! asked once what it is (version, shared libpython, headers); the answer is cached in the
//! state dir until the executable changes. An app's `[app] python` picks one of them.

mod mod_wsgi;
mod run;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use milky_core::python::{PythonSpec, PythonVersion};
use serde::{Deserialize, Serialize};

pub use mod_wsgi::{MOD_WSGI, WsgiModule, module_for};

/// Directories whose `python3.X` executables are offered when `[python] discover` is on; `*`
/// is one directory level (`/opt/python3.13/bin`, uv's `/opt/…/cpython-3.13.0-linux-…/bin`).
const DISCOVERED: &[&str] = &["/usr/bin", "/usr/local/bin", "/opt/*/bin", "/opt/*/*/bin"];

/// What an interpreter says about itself. Its base prefix, not the paths baked in at build
/// time, locates libpython and the headers: a relocated copy (pyenv's, copied out of a home
/// dir) still names the old place in sysconfig.
const PROBE: &str = r#"
import json, os, platform, sys, sysconfig
v = sysconfig.get_config_vars()
name = v.get("INSTSONAME") or ""
libs = [os.path.join(d, name) for d in (os.path.join(sys.base_prefix, "lib"), v.get("LIBDIR") or "")]
include = os.path.join(sys.base_prefix, "include", "python" + sysconfig.get_python_version() + (getattr(sys, "abiflags", "") or ""))
print(json.dumps({
    "implementation": sys.implementation.name,
    "version": platform.python_version(),
    "libpython": next((l for l in libs if name.endswith((".so", ".so.1.0")) and os.path.isfile(l)), None),
    "headers": os.path.isfile(os.path.join(include, "Python.h")) or os.path.isfile(os.path.join(sysconfig.get_path("include"), "Python.h")),
}))
"#;

/// One interpreter, as it answered the probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interpreter {
    /// As configured or found (what venvs are made with).
    pub path: PathBuf,
    pub version: PythonVersion,
    /// The shared libpython mod_wsgi links against; `None`: built without `--enable-shared`.
    pub libpython: Option<PathBuf>,
    /// Whether `Python.h` is there (building mod_wsgi needs it).
    pub headers: bool,
}

impl Interpreter {
    /// `3.13.0 (/opt/python3.13/bin/python3.13)`.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.version, self.path.display())
    }
}

/// The interpreters one pass knows of.
#[derive(Debug, Clone, Default)]
pub struct Interpreters {
    /// `[releases] python`, if it answered.
    pub default: Option<Interpreter>,
    /// Every other one, newest first.
    pub others: Vec<Interpreter>,
}

/// The interpreter an app runs on, and whether the distribution's mod_wsgi serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub interpreter: Interpreter,
    pub is_default: bool,
}

impl Interpreters {
    /// Probes the default, the configured and (with `discover`) the usual places' interpreters,
    /// answering from `cache_file` for executables that did not change.
    pub fn find(
        default: &Path,
        configured: &[PathBuf],
        discover: bool,
        cache_file: &Path,
    ) -> Interpreters {
        let mut cache = Cache::load(cache_file);
        let mut found = Interpreters {
            default: cache.probe(default),
            others: Vec::new(),
        };
        let mut candidates = configured.to_vec();
        if discover {
            candidates.extend(DISCOVERED.iter().flat_map(|pattern| executables(pattern)));
        }
        let real = |path: &Path| fs_err::canonicalize(path).ok();
        let mut seen: Vec<PathBuf> = found.default.iter().filter_map(|i| real(&i.path)).collect();
        for path in candidates {
            let Some(real_path) = real(&path) else {
                if configured.contains(&path) {
                    tracing::warn!(python = %path.display(), "[python] interpreters names a file that does not exist");
                }
                continue;
            };
            if seen.contains(&real_path) {
                continue;
            }
            seen.push(real_path);
            if let Some(interpreter) = cache.probe(&path) {
                found.others.push(interpreter);
            }
        }
        found.others.sort_by_key(|i| std::cmp::Reverse(i.version));
        cache.save(cache_file);
        found
    }

    /// The interpreter for an app asking for `spec`: the default when it fits (or nothing is
    /// asked), else the newest that fits. The error names what the app needs, what the server
    /// has, and how to add one.
    pub fn choose(&self, app: &str, spec: Option<&PythonSpec>) -> anyhow::Result<Choice> {
        let default = self.default.as_ref();
        let Some(spec) = spec else {
            let interpreter = default
                .cloned()
                .context("the default Python ([releases] python) does not run")?;
            return Ok(Choice {
                interpreter,
                is_default: true,
            });
        };
        if let Some(interpreter) = default.filter(|i| spec.matches(i.version)) {
            return Ok(Choice {
                interpreter: interpreter.clone(),
                is_default: true,
            });
        }
        if let Some(interpreter) = self.others.iter().find(|i| spec.matches(i.version)) {
            return Ok(Choice {
                interpreter: interpreter.clone(),
                is_default: false,
            });
        }
        let has: Vec<String> = self
            .default
            .iter()
            .chain(&self.others)
            .map(Interpreter::describe)
            .collect();
        let suggest = spec
            .lowest_series()
            .map_or_else(|| spec.to_string(), |v| v.short());
        anyhow::bail!(
            "{app} needs Python {spec} ([app] python), and this server has {}\n  fix: add one on the server: `install_server.sh --python {suggest}`, or list an installed one under [python] interpreters in agent.toml",
            if has.is_empty() {
                "none that runs".to_owned()
            } else {
                has.join(", ")
            }
        )
    }
}

/// `python3.X` executables in the directories `pattern` names (`*` is one level).
fn executables(pattern: &str) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/")];
    for part in pattern.trim_start_matches('/').split('/') {
        dirs = dirs
            .into_iter()
            .flat_map(|dir| {
                if part == "*" {
                    let mut subs: Vec<PathBuf> = std::fs::read_dir(&dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .collect();
                    subs.sort();
                    subs
                } else {
                    vec![dir.join(part)]
                }
            })
            .collect();
    }
    let mut found: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("python3."))
                .is_some_and(|minor| !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    found.sort();
    found
}

/// Probe answers by path, each with the fingerprint of the executable it came from.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    #[serde(default)]
    interpreters: BTreeMap<PathBuf, Cached>,
    #[serde(skip)]
    changed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    fingerprint: String,
    /// `None`: it did not answer as a CPython 3 (not asked again until it changes).
    interpreter: Option<Interpreter>,
}

impl Cache {
    fn load(file: &Path) -> Cache {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    fn save(&self, file: &Path) {
        if !self.changed {
            return;
        }
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        let tmp = file.with_extension("json.tmp");
        let written = file
            .parent()
            .map_or(Ok(()), fs_err::create_dir_all)
            .and_then(|()| fs_err::write(&tmp, &text))
            .and_then(|()| fs_err::rename(&tmp, file));
        if let Err(err) = written {
            tracing::warn!("caching what the Pythons are in {}: {err}", file.display());
        }
    }

    fn probe(&mut self, path: &Path) -> Option<Interpreter> {
        let fingerprint = fingerprint(path)?;
        if let Some(cached) = self.interpreters.get(path)
            && cached.fingerprint == fingerprint
        {
            return cached.interpreter.clone();
        }
        let interpreter = match probe(path) {
            Ok(interpreter) => Some(interpreter),
            Err(err) => {
                tracing::warn!(python = %path.display(), "not offered to apps: {err:#}");
                None
            }
        };
        self.interpreters.insert(
            path.to_owned(),
            Cached {
                fingerprint,
                interpreter: interpreter.clone(),
            },
        );
        self.changed = true;
        interpreter
    }
}

/// The resolved executable's identity: a reinstall or upgrade changes it.
fn fingerprint(path: &Path) -> Option<String> {
    let real = fs_err::canonicalize(path).ok()?;
    let meta = fs_err::metadata(&real).ok()?;
    Some(format!(
        "{} {} {} {}",
        real.display(),
        meta.ino(),
        meta.size(),
        meta.mtime()
    ))
}

#[derive(Deserialize)]
struct Answer {
    implementation: String,
    version: String,
    libpython: Option<PathBuf>,
    headers: bool,
}

fn probe(path: &Path) -> anyhow::Result<Interpreter> {
    let mut command = std::process::Command::new(path);
    command.args(["-I", "-c", PROBE]);
    let output = run::output(command, "ask the Python what it is")?;
    let answer: Answer = serde_json::from_str(output.trim())
        .with_context(|| format!("its answer was not understood: {output}"))?;
    if answer.implementation != "cpython" {
        anyhow::bail!("it is {}, not CPython", answer.implementation);
    }
    let version = PythonVersion::parse(&answer.version)
        .with_context(|| format!("version {:?} not understood", answer.version))?;
    Ok(Interpreter {
        path: path.to_owned(),
        version,
        libpython: answer.libpython,
        headers: answer.headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interpreter(path: &str, version: &str) -> Interpreter {
        Interpreter {
            path: path.into(),
            version: PythonVersion::parse(version).unwrap(),
            libpython: None,
            headers: true,
        }
    }

    fn server() -> Interpreters {
        Interpreters {
            default: Some(interpreter("/usr/bin/python3", "3.11.2")),
            others: vec![
                interpreter("/opt/py313/bin/python3.13", "3.13.0"),
                interpreter("/opt/py312/bin/python3.12", "3.12.1"),
            ],
        }
    }

    fn choose(spec: Option<&str>) -> anyhow::Result<Choice> {
        let spec = spec.map(|s| PythonSpec::parse(s).unwrap());
        server().choose("shop", spec.as_ref())
    }

    #[test]
    fn the_default_serves_apps_that_ask_for_nothing_or_for_it() {
        for spec in [None, Some("3.11"), Some(">=3.10")] {
            let choice = choose(spec).unwrap();
            assert!(choice.is_default, "{spec:?}");
            assert_eq!(choice.interpreter.path, PathBuf::from("/usr/bin/python3"));
        }
    }

    #[test]
    fn otherwise_the_newest_that_fits() {
        let choice = choose(Some(">=3.12")).unwrap();
        assert!(!choice.is_default);
        assert_eq!(choice.interpreter.version.short(), "3.13");
        assert_eq!(
            choose(Some("3.12")).unwrap().interpreter.version.short(),
            "3.12"
        );
    }

    #[test]
    fn no_fit_names_the_need_what_is_there_and_the_fix() {
        let err = choose(Some("3.14")).unwrap_err().to_string();
        for needle in [
            "shop needs Python 3.14",
            "3.11.2 (/usr/bin/python3)",
            "3.13.0 (/opt/py313/bin/python3.13)",
            "install_server.sh --python 3.14",
            "[python] interpreters",
        ] {
            assert!(err.contains(needle), "{needle:?} missing from {err}");
        }
    }

    #[test]
    fn discovery_takes_python3_x_executables_only() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("a/bin");
        fs_err::create_dir_all(&bin).unwrap();
        for name in ["python3.13", "python3.13-config", "python3", "python3.12"] {
            fs_err::write(bin.join(name), "").unwrap();
        }
        let pattern = format!("{}/*/bin", dir.path().display());
        let names: Vec<String> = executables(&pattern)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["python3.12", "python3.13"]);
    }

    #[test]
    fn the_system_python_answers_and_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("pythons.json");
        let found = Interpreters::find(Path::new("/usr/bin/python3"), &[], false, &cache);
        let default = found.default.expect("/usr/bin/python3 answers");
        assert_eq!(default.version.major, 3);
        let text = fs_err::read_to_string(&cache).unwrap();
        assert!(text.contains("/usr/bin/python3"), "{text}");
    }
}
