//! The release's venv and its requirements, installed by the agent: with uv where the server
//! has it, else with `python -m venv` and pip (from one shared pip venv when pip is new enough).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::permissions::make_world_readable;
use super::step::{Priority, RunAs, run_step, run_step_at};
use super::{Limit, ReleaseSetup, WebError};

/// `python -m venv` and pip: where the server has no uv.
pub(super) fn install_with_pip(setup: &ReleaseSetup, requirements: &Path) -> Result<(), WebError> {
    let release = &setup.release_dir;
    let venv = setup.venv_dir();
    let pip = match &setup.pip_home {
        Some(home) if requirements.exists() => pip_venv(home, &setup.python, setup.install())?,
        _ => None,
    };
    tracing::info!(release = %release.display(), "creating venv");
    let mut cmd = agent_command(setup, &setup.python);
    cmd.arg("-m").arg("venv").arg(&venv);
    if pip.is_some() || !requirements.exists() {
        cmd.arg("--without-pip");
    }
    run_step(
        release,
        "create the venv",
        cmd,
        RunAs::Agent,
        setup.install(),
        "prepare:venv-running",
    )?;

    if requirements.exists() {
        let mut cmd = match &pip {
            Some(pip) => {
                let mut cmd = agent_command(setup, &pip.join("bin/python"));
                cmd.args(["-m", "pip", "--python"])
                    .arg(venv.join("bin/python"));
                cmd
            }
            None => {
                let mut cmd = agent_command(setup, &venv.join("bin/python"));
                cmd.args(["-m", "pip"]);
                cmd
            }
        };
        cmd.args(["install", "--disable-pip-version-check", "--no-input", "-q"]);
        let wheels = release.join("wheels");
        if wheels.is_dir() {
            // The package brought every dependency: install exactly those, never from an index.
            cmd.arg("--no-index").arg("--find-links").arg(&wheels);
        }
        cmd.arg("-r").arg(requirements).current_dir(release);
        tracing::info!(release = %release.display(), offline = wheels.is_dir(), "installing requirements");
        run_step(
            release,
            &format!("pip install -r {}", setup.requirements.display()),
            cmd,
            RunAs::Agent,
            setup.install(),
            "prepare:pip-running",
        )?;
    }
    Ok(())
}

/// `uv venv` and `uv pip install` (or, for a uv lock, `uv export` of the locked versions and
/// `uv pip sync`, which installs exactly those). uv's cache is shared by every release, so a
/// release whose packages were installed before installs without the network and without
/// unpacking a wheel again: the package's wheels are offered from one stable directory (uv
/// keys a local wheel's cache entry by its path), and files are hard-linked from the cache.
/// Bytecode is compiled later, off the switch's path ([`compile_bytecode`]).
pub(super) fn install_with_uv(
    setup: &ReleaseSetup,
    uv: &Path,
    cache: &Path,
    requirements: &Path,
    locked: bool,
) -> Result<(), WebError> {
    let release = &setup.release_dir;
    let venv = setup.venv_dir();
    let uv_command = |args: &[&str]| {
        let mut cmd = agent_command(setup, uv);
        cmd.args(args)
            .env("UV_NO_CONFIG", "1")
            .env("UV_CACHE_DIR", cache)
            .env("UV_PYTHON_DOWNLOADS", "never")
            .current_dir(release);
        cmd
    };
    tracing::info!(release = %release.display(), "creating venv (uv)");
    let started = Instant::now();
    let mut cmd = uv_command(&["venv", "--no-project", "--quiet"]);
    cmd.arg("--python").arg(&setup.python).arg(&venv);
    run_step(
        release,
        "uv venv",
        cmd,
        RunAs::Agent,
        setup.install(),
        "prepare:venv-running",
    )?;
    let venv_took = started.elapsed();
    if !requirements.exists() {
        return Ok(());
    }
    let started = Instant::now();
    let (what, mut cmd) = if locked {
        let exported = venv.join("milky-locked-requirements.txt");
        let mut export = uv_command(&[
            "export",
            "--frozen",
            "--no-dev",
            "--no-emit-project",
            "--quiet",
            "--format",
            "requirements-txt",
            "-o",
        ]);
        export
            .arg(&exported)
            .current_dir(requirements.parent().unwrap_or(release));
        run_step(
            release,
            &format!("uv export --frozen ({})", setup.requirements.display()),
            export,
            RunAs::Agent,
            setup.install(),
            "prepare:pip-running",
        )?;
        let mut sync = uv_command(&["pip", "sync", "--quiet"]);
        sync.arg(&exported);
        ("uv pip sync (the locked versions)".to_owned(), sync)
    } else {
        let mut install = uv_command(&["pip", "install", "--quiet", "-r"]);
        install.arg(requirements);
        (
            format!("uv pip install -r {}", setup.requirements.display()),
            install,
        )
    };
    cmd.arg("--python").arg(venv.join("bin/python"));
    let wheels = release.join("wheels");
    if wheels.is_dir() {
        // The package brought every dependency: install exactly those, never from an index.
        let offered = cache.join(OFFERED_WHEELS);
        offer_wheels(&wheels, &offered)?;
        cmd.arg("--no-index").arg("--find-links").arg(&offered);
    }
    tracing::info!(release = %release.display(), offline = wheels.is_dir(), locked, "installing requirements (uv)");
    run_step(
        release,
        &what,
        cmd,
        RunAs::Agent,
        setup.install(),
        "prepare:pip-running",
    )?;
    tracing::info!(release = %release.display(), venv = ?venv_took, install = ?started.elapsed(), "venv and dependencies ready");
    Ok(())
}

/// The directory in uv's cache from which a release's own wheels are offered to uv.
const OFFERED_WHEELS: &str = "milky-offered-wheels";

/// Makes `offered` hold exactly the files of `wheels` (a package's vendored wheels), keeping
/// those it already holds with the same bytes: uv keys the cache entry of a local wheel by its
/// path and modification time, so a wheel offered by an earlier release is not unpacked again.
/// Only one pass runs at a time, so the directory is this install's alone.
fn offer_wheels(wheels: &Path, offered: &Path) -> Result<(), WebError> {
    fs_err::create_dir_all(offered)?;
    let mut wanted = BTreeMap::new();
    for entry in fs_err::read_dir(wheels)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            wanted.insert(entry.file_name(), entry.path());
        }
    }
    for entry in fs_err::read_dir(offered)? {
        let entry = entry?;
        let keep = match wanted.get(&entry.file_name()) {
            Some(source) if entry.file_type()?.is_file() => same_bytes(source, &entry.path())?,
            _ => false,
        };
        if keep {
            wanted.remove(&entry.file_name());
        } else if entry.file_type()?.is_dir() {
            fs_err::remove_dir_all(entry.path())?;
        } else {
            fs_err::remove_file(entry.path())?;
        }
    }
    for (name, source) in wanted {
        let target = offered.join(&name);
        // A link costs nothing; the cache may be on another filesystem than the releases.
        if std::fs::hard_link(&source, &target).is_err() {
            fs_err::copy(&source, &target)?;
        }
    }
    Ok(())
}

fn same_bytes(a: &Path, b: &Path) -> Result<bool, WebError> {
    if fs_err::metadata(a)?.len() != fs_err::metadata(b)?.len() {
        return Ok(false);
    }
    Ok(fs_err::read(a)? == fs_err::read(b)?)
}

/// Compiles the bytecode of the release's venv (its app's user cannot write `__pycache__`
/// there), for the app's processes that start after this one: run once the release serves, as
/// compiling every installed module takes seconds of CPU that the switch need not wait for,
/// and at the lowest CPU priority (nice 19), so that those seconds go to the new
/// release's requests (and anything else the server runs) first. pip compiles as it installs;
/// uv is told not to.
pub fn compile_bytecode(setup: &ReleaseSetup) -> Result<Duration, WebError> {
    let started = Instant::now();
    let venv = setup.venv_dir();
    let mut cmd = agent_command(setup, &venv.join("bin/python"));
    cmd.args(["-m", "compileall", "-q", "-j", "0"])
        .arg(venv.join("lib"));
    // Nothing waits for the bytecode, while the requests to the release just switched to do.
    run_step_at(
        &setup.release_dir,
        "compile the venv's bytecode",
        cmd,
        RunAs::Agent,
        Priority::Lowest,
        setup.install(),
        "prepare:compile-running",
    )?;
    // Whatever the agent's umask, Apache's user reads them.
    make_world_readable(&venv)?;
    Ok(started.elapsed())
}

/// A command the agent runs for a release, with the interpreter's libpython dir on
/// `LD_LIBRARY_PATH` when it has one.
fn agent_command(setup: &ReleaseSetup, program: &Path) -> Command {
    let mut cmd = Command::new(program);
    if let Some(dir) = &setup.library_path {
        cmd.env("LD_LIBRARY_PATH", dir);
    }
    cmd
}

/// The venv with pip that installs requirements into the releases' venvs made with `python`
/// (`pip --python`, pip ≥ 22.3), made once in `home`: a venv with its own pip costs ~3 s more to
/// make, for every release. `None` when that pip is too old for `--python` (then each release's
/// venv gets pip of its own, as before).
fn pip_venv(home: &Path, python: &Path, limit: Limit) -> Result<Option<PathBuf>, WebError> {
    const READY: &str = ".milky-pip-ready";
    const TOO_OLD: &str = ".milky-pip-too-old";
    let name: String = python
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let venv = home.join(format!("pip{name}"));
    if venv.join(READY).exists() {
        return Ok(Some(venv));
    }
    if venv.join(TOO_OLD).exists() {
        return Ok(None);
    }
    if venv.exists() {
        fs_err::remove_dir_all(&venv)?; // half made
    }
    fs_err::create_dir_all(home)?;
    tracing::info!(venv = %venv.display(), "creating the venv pip installs releases from");
    let mut cmd = Command::new(python);
    cmd.arg("-m").arg("venv").arg(&venv);
    run_step(
        home,
        "create the pip venv",
        cmd,
        RunAs::Agent,
        limit,
        "prepare:venv-running",
    )?;
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(["-c", "import pip; print(pip.__version__)"]);
    let version = run_step(
        home,
        "read pip's version",
        cmd,
        RunAs::Agent,
        limit,
        "prepare:venv-running",
    )?;
    let mut parts = version
        .trim()
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let has_python_option = (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (22, 3);
    fs_err::write(
        venv.join(if has_python_option { READY } else { TOO_OLD }),
        "",
    )?;
    Ok(has_python_option.then_some(venv))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Fields of `/proc/<pid>/stat` (proc(5) numbers them from 1), from the state (field 3) on:
    /// the command name before it may hold spaces.
    fn stat_field(stat: &str, number: usize) -> &str {
        let after_name = stat.rsplit_once(')').expect("a stat line").1;
        after_name
            .split_whitespace()
            .nth(number - 3)
            .expect("that many fields")
    }

    #[test]
    fn bytecode_compiles_at_the_lowest_cpu_priority() {
        let dir = tempfile::tempdir().unwrap();
        let setup = ReleaseSetup::new(dir.path().join("release"));
        let venv = setup.venv_dir();
        fs_err::create_dir_all(venv.join("lib")).unwrap();
        // The venv's python, standing in for compileall: records how it was started.
        let python = venv.join("bin/python");
        fs_err::create_dir_all(python.parent().unwrap()).unwrap();
        fs_err::write(
            &python,
            "#!/bin/sh\ncat /proc/$$/stat > \"$(dirname \"$0\")/../started.stat\"\n",
        )
        .unwrap();
        fs_err::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();

        compile_bytecode(&setup).unwrap();

        let stat = fs_err::read_to_string(venv.join("started.stat")).unwrap();
        assert_eq!(stat_field(&stat, 19), "19", "nice: {stat}");
    }
}
