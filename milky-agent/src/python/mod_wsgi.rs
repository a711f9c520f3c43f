//! mod_wsgi for a Python other than the one the distribution's module is built for: compiled
//! from PyPI (the `mod_wsgi` package builds against Apache's apxs, from apache2-dev) in a venv
//! of that Python, once per interpreter, into the state dir. An app's Apache slot then loads
//! the interpreter's libpython and this module.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Interpreter;
use super::run::output;

/// The mod_wsgi release built for other Pythons (6.1.1 built here against Apache 2.4 and
/// CPython 3.12 and 3.13).
pub const MOD_WSGI: &str = "mod_wsgi==6.1.1";

/// Where Apache's build tool is: apache2-dev installs it.
const APXS: &[&str] = &["/usr/bin/apxs", "/usr/bin/apxs2"];

/// What an Apache slot loads for an app on that interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsgiModule {
    /// `LoadModule wsgi_module` of this.
    pub module: PathBuf,
    /// `LoadFile`d first: the module links against it, and a relocated interpreter's own
    /// search path may point where Apache's user cannot read.
    pub libpython: PathBuf,
}

/// The mod_wsgi of `python`, built into `home` the first time it is asked for; `uv` (with its
/// cache) makes the build venv when there is one, else the interpreter's own venv and pip.
pub fn module_for(
    python: &Interpreter,
    home: &Path,
    uv: Option<(&Path, &Path)>,
) -> anyhow::Result<WsgiModule> {
    let key = format!(
        "py{}-{}",
        python.version,
        &hex::encode(Sha256::digest(python.path.as_os_str().as_encoded_bytes()))[..12]
    );
    let dir = home.join(&key);
    let record = dir.join("module.json");
    if let Ok(module) = read_record(&record) {
        return Ok(module);
    }
    let what = format!("mod_wsgi for Python {}", python.describe());
    let libpython = python.libpython.clone().with_context(|| {
        format!(
            "{what}: this Python has no shared libpython (it was built without --enable-shared), which mod_wsgi needs\n  fix: install one that has: `install_server.sh --python {}`",
            python.version.short()
        )
    })?;
    if !python.headers {
        anyhow::bail!(
            "{what}: this Python has no headers (Python.h), which building mod_wsgi needs\n  fix: apt-get install python{}-dev, or `install_server.sh --python {}`",
            python.version.short(),
            python.version.short()
        );
    }
    let apxs = APXS
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .with_context(|| {
            format!("{what}: building it needs Apache's apxs\n  fix: apt-get install apache2-dev")
        })?;
    tracing::info!(python = %python.path.display(), "building {MOD_WSGI} for it (once)");
    // Per process: agents of several servers (tests) may share `home`. What a killed pass
    // left half built goes first.
    let prefix = format!("{key}.building-");
    for entry in std::fs::read_dir(home).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let alive = name
            .strip_prefix(&prefix)
            .and_then(|pid| pid.parse::<u32>().ok())
            .map(|pid| pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists());
        if alive == Some(false) {
            fs_err::remove_dir_all(entry.path())?;
        }
    }
    let building = home.join(format!("{prefix}{}", std::process::id()));
    fs_err::create_dir_all(&building)?;
    let venv = building.join("venv");
    let lib_dir = libpython.parent().unwrap_or(Path::new("/"));
    let tool = |program: &Path| {
        let mut command = Command::new(program);
        command
            .env("APXS", apxs)
            .env("LD_LIBRARY_PATH", lib_dir)
            .env("UV_PYTHON_DOWNLOADS", "never");
        if let Some((_, cache)) = uv {
            command.env("UV_CACHE_DIR", cache);
        }
        command
    };
    let built = (|| -> anyhow::Result<()> {
        match uv {
            Some((uv, _)) => {
                let mut venv_cmd = tool(uv);
                venv_cmd
                    .args(["venv", "--no-project", "--no-config", "--quiet", "--python"])
                    .arg(&python.path)
                    .arg(&venv);
                output(venv_cmd, "uv venv")?;
                let mut install = tool(uv);
                install
                    .args(["pip", "install", "--no-config", "--python"])
                    .arg(venv.join("bin/python"))
                    .arg(MOD_WSGI);
                output(install, &format!("uv pip install {MOD_WSGI}"))?;
            }
            None => {
                let mut venv_cmd = tool(&python.path);
                venv_cmd.args(["-m", "venv"]).arg(&venv);
                output(venv_cmd, "python -m venv")?;
                let mut install = tool(&venv.join("bin/python"));
                install
                    .args(["-m", "pip", "install", "--disable-pip-version-check"])
                    .args(["--no-input", "--quiet", MOD_WSGI]);
                output(install, &format!("pip install {MOD_WSGI}"))?;
            }
        }
        Ok(())
    })();
    built.with_context(|| {
        format!(
            "building {what} failed; it compiles against Apache with a C compiler\n  fix: apt-get install apache2-dev gcc (and python{}-dev for a distribution Python), then the next pass builds it again",
            python.version.short()
        )
    })?;
    let so = compiled_module(&venv).with_context(|| {
        format!(
            "{what}: the build left no mod_wsgi*.so in {}",
            venv.display()
        )
    })?;
    fs_err::copy(&so, building.join("mod_wsgi.so"))?;
    let module = WsgiModule {
        module: dir.join("mod_wsgi.so"),
        libpython,
    };
    fs_err::write(
        building.join("module.json"),
        serde_json::to_string_pretty(&module)?,
    )?;
    if let Ok(theirs) = read_record(&record) {
        // Another agent sharing `home` finished first.
        fs_err::remove_dir_all(&building)?;
        return Ok(theirs);
    }
    if dir.exists() {
        fs_err::remove_dir_all(&dir)?;
    }
    fs_err::rename(&building, &dir)?;
    tracing::info!(module = %module.module.display(), "built mod_wsgi for Python {}", python.version);
    Ok(module)
}

/// A finished build's record, whose module is there.
fn read_record(record: &Path) -> anyhow::Result<WsgiModule> {
    let module: WsgiModule = serde_json::from_str(&fs_err::read_to_string(record)?)?;
    anyhow::ensure!(
        module.module.is_file(),
        "{} is gone",
        module.module.display()
    );
    Ok(module)
}

/// `venv/lib/python3.X/site-packages/mod_wsgi/server/mod_wsgi-py3X.cpython-3X-….so`.
fn compiled_module(venv: &Path) -> Option<PathBuf> {
    walkdir::WalkDir::new(venv.join("lib"))
        .into_iter()
        .flatten()
        .map(walkdir::DirEntry::into_path)
        .find(|p| {
            p.parent().is_some_and(|d| d.ends_with("mod_wsgi/server"))
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("mod_wsgi") && n.ends_with(".so"))
        })
}

#[cfg(test)]
mod tests {
    use milky_core::python::PythonVersion;

    use super::*;

    #[test]
    fn what_a_build_would_lack_is_named_before_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let mut python = Interpreter {
            path: "/opt/py/bin/python3.13".into(),
            version: PythonVersion::new(3, 13, 0),
            libpython: None,
            headers: true,
        };
        let err = format!("{:#}", module_for(&python, dir.path(), None).unwrap_err());
        assert!(err.contains("no shared libpython"), "{err}");
        assert!(err.contains("install_server.sh --python 3.13"), "{err}");
        python.libpython = Some("/opt/py/lib/libpython3.13.so.1.0".into());
        python.headers = false;
        let err = format!("{:#}", module_for(&python, dir.path(), None).unwrap_err());
        assert!(err.contains("no headers (Python.h)"), "{err}");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing was started"
        );
    }
}
