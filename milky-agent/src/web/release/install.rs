//! The release's venv and its requirements, installed by the agent: with uv where the server
//! has it, else with `python -m venv` and pip (from one shared pip venv when pip is new enough).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::step::{RunAs, run_step};
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
/// release whose packages were installed before installs without the network; bytecode is
/// compiled here because the app's user cannot write `__pycache__` in the release.
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
        let mut sync = uv_command(&["pip", "sync", "--compile-bytecode", "--quiet"]);
        sync.arg(&exported);
        ("uv pip sync (the locked versions)".to_owned(), sync)
    } else {
        let mut install = uv_command(&["pip", "install", "--compile-bytecode", "--quiet", "-r"]);
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
        cmd.arg("--no-index").arg("--find-links").arg(&wheels);
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
