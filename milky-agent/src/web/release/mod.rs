//! Turning an unpacked release (a Django project) into something Apache can run: a venv with
//! its requirements, the per-server hooks (collectstatic), and permissions the web servers'
//! users can read.
//!
//! The venv and the requirements are installed by the agent (root), from the package's own
//! wheels when it has them: they land in the release, which the app must not be able to
//! change. The hooks run the package's code and so run as the hook user (see [`super::hook_user`]).
//!
//! Here: what a release needs ([`ReleaseSetup`]) and the order of the steps
//! ([`prepare_release`]). Beside it: `install.rs` (the venv and the requirements, with pip or
//! uv), `hooks.rs` (the per-server and once hooks), `step.rs` (one command run to its end or
//! its limit, dying with the agent) and `permissions.rs` (the tree readable by the web servers).

mod hooks;
mod install;
mod permissions;
mod step;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::hook_user::{self, HookUser};
use super::{WebError, validate};
pub use hooks::run_hooks;
use hooks::run_hooks_at;
pub use install::compile_bytecode;
use install::{install_with_pip, install_with_uv};
use permissions::{check_reachable, make_world_readable};

/// Written into the venv last: a release with it is fully prepared, one without it (a crash
/// half-way) is prepared again from scratch.
const PREPARED_MARKER: &str = ".milky-prepared";

/// The requirements file a project has when its milky.toml names none.
const DEFAULT_REQUIREMENTS: &str = "requirements.txt";

/// How to prepare one release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSetup {
    /// The unpacked release: manage.py, requirements.txt, optionally wheels/.
    pub release_dir: PathBuf,
    /// The Python mod_wsgi is linked against. Debian's mod_wsgi uses /usr/bin/python3; a venv of
    /// another Python (pyenv's `python3` on PATH) fails only at request time, with a 500.
    pub python: PathBuf,
    /// Per-server hooks, each run by `/bin/sh -c` in the release dir with the venv's `bin` first
    /// on PATH.
    pub hooks: Vec<String>,
    /// Extra environment of the hooks (e.g. `DJANGO_SETTINGS_MODULE`).
    pub env: BTreeMap<String, String>,
    /// The account hooks run as; `None` runs them as the agent itself (tests of the web layer).
    /// The agent always sets it, and never to root.
    pub user: Option<HookUser>,
    /// The hooks' HOME, made the hook user's (0700) before they run.
    pub home: Option<PathBuf>,
    /// The one directory of the release the per-server hooks may write (collectstatic's
    /// STATIC_ROOT), relative to the release; taken back by the agent when they end.
    pub static_dir: Option<PathBuf>,
    /// Where the agent keeps one venv with pip per Python ([`pip_venv`]); `None`: each release's
    /// venv gets pip of its own.
    pub pip_home: Option<PathBuf>,
    /// The requirements file, relative to the release (`[app] requirements`). The default,
    /// `requirements.txt`, may be absent (nothing to install); any other named file must exist.
    /// A `uv.lock` (with `pyproject.toml` beside it) is installed exactly as locked, with uv.
    pub requirements: PathBuf,
    /// Making the venv and installing the requirements: each step is ended past this.
    pub install_limit: Duration,
    /// Each per-server hook is ended past this.
    pub hook_limit: Duration,
    /// uv and its cache (shared by every release): makes the venv and installs, in place of
    /// `python -m venv` and pip.
    pub uv: Option<(PathBuf, PathBuf)>,
    /// The interpreter's libpython dir, put on `LD_LIBRARY_PATH` of every step and hook: a
    /// relocated interpreter's own search path may point where the hook user cannot read.
    pub library_path: Option<PathBuf>,
}

/// How long a step may run, and the agent.toml setting (in `[limits]`) that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub after: Duration,
    pub setting: &'static str,
}

impl ReleaseSetup {
    pub fn new(release_dir: impl Into<PathBuf>) -> Self {
        ReleaseSetup {
            release_dir: release_dir.into(),
            python: PathBuf::from("/usr/bin/python3"),
            hooks: vec!["python manage.py collectstatic --noinput".to_owned()],
            env: BTreeMap::new(),
            user: None,
            home: None,
            static_dir: Some(PathBuf::from("static_collected")),
            pip_home: None,
            requirements: PathBuf::from(DEFAULT_REQUIREMENTS),
            install_limit: Duration::from_secs(30 * 60),
            hook_limit: Duration::from_secs(10 * 60),
            uv: None,
            library_path: None,
        }
    }

    fn install(&self) -> Limit {
        Limit {
            after: self.install_limit,
            setting: "install",
        }
    }

    pub fn venv_dir(&self) -> PathBuf {
        self.release_dir.join("venv")
    }
}

/// The output of one hook, for the agent's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    pub hook: String,
    pub output: String,
    pub duration: Duration,
}

/// What [`prepare_release`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedRelease {
    pub release_dir: PathBuf,
    pub venv_dir: PathBuf,
    /// True when the release had been prepared by an earlier run and nothing was done.
    pub already_prepared: bool,
    pub hooks: Vec<HookRun>,
}

/// Prepares `setup.release_dir`: creates the venv with `setup.python`, installs
/// requirements.txt (offline from `wheels/` when the release has one), makes the whole tree
/// readable by others (Apache runs as www-data, nginx's workers as nobody), and runs the hooks
/// as `setup.user` with only the static dir writable. Idempotent: a prepared release is left
/// alone, a half-prepared one is redone.
pub fn prepare_release(setup: &ReleaseSetup) -> Result<PreparedRelease, WebError> {
    let release = &setup.release_dir;
    let venv = setup.venv_dir();
    check_reachable(release)?;
    if venv.join(PREPARED_MARKER).exists() {
        return Ok(PreparedRelease {
            release_dir: release.clone(),
            venv_dir: venv,
            already_prepared: true,
            hooks: Vec::new(),
        });
    }
    if venv.exists() {
        // A half-made venv from an interrupted run. Moved aside first (atomic) and deleted after:
        // a pip the killed agent left behind may still be writing into it.
        let stale = release.join(format!(".venv-stale-{}", std::process::id()));
        fs_err::rename(&venv, &stale)?;
        if let Err(err) = fs_err::remove_dir_all(&stale) {
            tracing::warn!("could not delete {} yet: {err}", stale.display());
        }
    }
    validate::release_relative("requirements file", &setup.requirements)?;
    let requirements = release.join(&setup.requirements);
    if !requirements.exists() && setup.requirements != Path::new(DEFAULT_REQUIREMENTS) {
        return Err(WebError::invalid(
            "requirements file",
            setup.requirements.display().to_string(),
            "milky.toml names it ([app] requirements) but the package has no such file",
        ));
    }
    let locked = setup.requirements.file_name() == Some(std::ffi::OsStr::new("uv.lock"));
    if locked {
        let pyproject = requirements.with_file_name("pyproject.toml");
        if !requirements.is_file() || !pyproject.is_file() {
            return Err(WebError::invalid(
                "requirements file",
                setup.requirements.display().to_string(),
                "a uv lock needs both it and pyproject.toml beside it in the package",
            ));
        }
        if setup.uv.is_none() {
            return Err(WebError::invalid(
                "requirements file",
                setup.requirements.display().to_string(),
                "installing from uv.lock needs uv on the server: install_server.sh puts one in place, or set [python] uv in agent.toml",
            ));
        }
    }
    match &setup.uv {
        Some((uv, cache)) => install_with_uv(setup, uv, cache, &requirements, locked)?,
        None => install_with_pip(setup, &requirements)?,
    }

    let writable = match (&setup.user, &setup.static_dir) {
        (Some(user), Some(dir)) if !setup.hooks.is_empty() => {
            let dir = hook_user::real_dir_in(release, dir)?;
            // A killed run may have left it to the hook user: taken back before root walks the
            // release below, whose mode changes by path are safe only where nobody else writes.
            hook_user::freeze_tree(&dir)?;
            Some((dir, user))
        }
        _ => None,
    };
    // Before the hooks: the hook user reads the release as the web servers' users do.
    make_world_readable(release)?;
    if let Some((dir, user)) = &writable {
        hook_user::give_tree(dir, user)?;
    }
    let limit = Limit {
        after: setup.hook_limit,
        setting: "server_hooks",
    };
    let hooks = run_hooks_at(setup, &setup.hooks, limit, "prepare:hook-running");
    crate::crash::point("prepare:hooks-done");
    match &writable {
        Some((dir, _)) => hook_user::freeze_tree(dir)?,
        // Hooks that ran as the agent may have written anywhere, with its umask.
        None if setup.user.is_none() => make_world_readable(release)?,
        None => {}
    }
    let hooks = hooks?;

    fs_err::write(venv.join(PREPARED_MARKER), "")?;
    Ok(PreparedRelease {
        release_dir: release.clone(),
        venv_dir: venv,
        already_prepared: false,
        hooks,
    })
}
