//! Turning an unpacked release (a Django project) into something Apache can run: a venv with
//! its requirements, the per-server hooks (collectstatic), and permissions the web servers'
//! users can read.
//!
//! The venv and the requirements are installed by the agent (root), from the package's own
//! wheels when it has them: they land in the release, which the app must not be able to
//! change. The hooks run the package's code and so run as the hook user (see [`super::hook_user`]).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::commands::combined;
use super::hook_user::{self, HookUser};
use super::process::{Leftovers, Limited};
use super::{WebError, validate};

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

/// `python -m venv` and pip: where the server has no uv.
fn install_with_pip(setup: &ReleaseSetup, requirements: &Path) -> Result<(), WebError> {
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
fn install_with_uv(
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
/// compiling every installed module takes seconds of CPU that the switch need not wait for.
/// pip compiles as it installs; uv is told not to.
pub fn compile_bytecode(setup: &ReleaseSetup) -> Result<Duration, WebError> {
    let started = Instant::now();
    let venv = setup.venv_dir();
    let mut cmd = agent_command(setup, &venv.join("bin/python"));
    cmd.args(["-m", "compileall", "-q", "-j", "0"])
        .arg(venv.join("lib"));
    run_step(
        &setup.release_dir,
        "compile the venv's bytecode",
        cmd,
        RunAs::Agent,
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

/// Runs hook command lines in a prepared release (the once hooks): each by `/bin/sh -c` in the
/// release dir, as `setup.user`, with the venv's `bin` first on PATH and `setup.env` set, and
/// nothing else of the agent's environment (its store credentials stay its own). Stops at the
/// first failure, whose error carries the exit status and the output tail; a hook still
/// running after `limit` is ended with its process group, and fails.
pub fn run_hooks(
    setup: &ReleaseSetup,
    hooks: &[String],
    limit: Duration,
) -> Result<Vec<HookRun>, WebError> {
    let limit = Limit {
        after: limit,
        setting: "once_hooks",
    };
    run_hooks_at(setup, hooks, limit, "once:hook-running")
}

/// Variables of the agent's own environment that hooks get too: locale and time zone.
const PASSED_ENV: &[&str] = &["LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ"];

fn run_hooks_at(
    setup: &ReleaseSetup,
    hooks: &[String],
    limit: Limit,
    crash_point: &str,
) -> Result<Vec<HookRun>, WebError> {
    if hooks.is_empty() {
        return Ok(Vec::new());
    }
    let release = &setup.release_dir;
    let venv = setup.venv_dir();
    let home = match (&setup.user, &setup.home) {
        (Some(user), Some(home)) => {
            hook_user::ensure_home(home, user)?;
            Some(home.clone().into_os_string())
        }
        (None, Some(home)) => Some(home.clone().into_os_string()),
        (_, None) => std::env::var_os("HOME"),
    };
    let path = match std::env::var_os("PATH") {
        Some(p) => {
            let mut dirs = vec![venv.join("bin")];
            dirs.extend(std::env::split_paths(&p));
            std::env::join_paths(dirs).unwrap_or(p)
        }
        None => venv.join("bin").into_os_string(),
    };
    let mut runs = Vec::new();
    for hook in hooks {
        let started = Instant::now();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(hook).current_dir(release).env_clear();
        for name in PASSED_ENV {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        if let Some(home) = &home {
            cmd.env("HOME", home);
        }
        if let Some(user) = &setup.user {
            cmd.env("USER", &user.name).env("LOGNAME", &user.name);
        }
        cmd.env("PATH", &path)
            .env("VIRTUAL_ENV", &venv)
            .envs(&setup.env);
        if let Some(dir) = &setup.library_path {
            cmd.env("LD_LIBRARY_PATH", dir);
        }
        tracing::info!(release = %release.display(), hook, user = setup.user.as_ref().map(|u| u.name.as_str()), "running hook");
        let output = run_step(
            release,
            hook,
            cmd,
            RunAs::Hook(setup.user.as_ref()),
            limit,
            crash_point,
        )?;
        runs.push(HookRun {
            hook: hook.clone(),
            output,
            duration: started.elapsed(),
        });
    }
    Ok(runs)
}

/// Who runs a step, and with which environment.
#[derive(Debug, Clone, Copy)]
enum RunAs<'a> {
    /// The agent, with its own environment: creating the venv, pip.
    Agent,
    /// A hook: the environment set on the command and nothing else, as the hook user if any.
    Hook(Option<&'a HookUser>),
}

/// Runs one step to completion, or until `limit`; on failure the error carries the exit status
/// (or the limit) and the tail of its output. `crash_point` is passed while the step runs.
fn run_step(
    release: &Path,
    what: &str,
    cmd: Command,
    run_as: RunAs<'_>,
    limit: Limit,
    crash_point: &str,
) -> Result<String, WebError> {
    let spawn_error = |source| WebError::Spawn {
        command: what.to_owned(),
        source,
    };
    let running = Limited::spawn(&mut dies_with_agent(cmd, run_as)?).map_err(spawn_error)?;
    crate::crash::point(crash_point);
    // Whatever the step left running (`worker &`) ends with it: it would hold the output pipes
    // open, and the pass with them, and outlive the release it came from.
    let finished = running
        .wait(limit.after, Leftovers::End)
        .map_err(spawn_error)?;
    let text = combined(&finished.output);
    if finished.timed_out {
        Err(WebError::TimedOut {
            what: format!("preparing release {}", release.display()),
            command: what.to_owned(),
            limit: humantime::format_duration(limit.after).to_string(),
            setting: limit.setting,
            output_tail: tail_lines(&text, 30),
        })
    } else if finished.status.success() {
        Ok(text)
    } else {
        Err(WebError::PrepareFailed {
            release: release.to_owned(),
            step: what.to_owned(),
            status: finished.status.to_string(),
            output_tail: tail_lines(&text, 30),
        })
    }
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

/// Runs `cmd` under `setpriv --pdeathsig KILL` where util-linux has it, so a step cannot outlive
/// an agent that was killed (kill -9, OOM): the next pass then never races a leftover pip.
/// A hook with a user also drops to that user (its uid, primary gid and groups); that needs
/// setpriv, so without it the hook is refused rather than run as root.
fn dies_with_agent(cmd: Command, run_as: RunAs<'_>) -> Result<Command, WebError> {
    const SETPRIV: &str = "/usr/bin/setpriv";
    let (user, clean_env) = match run_as {
        RunAs::Agent => (None, false),
        RunAs::Hook(Some(user)) if hook_user::own_ids()?.0 != user.uid => (Some(user), true),
        RunAs::Hook(_) => (None, true),
    };
    if !Path::new(SETPRIV).exists() {
        return match user {
            Some(user) => Err(WebError::HookUser {
                user: user.name.clone(),
                reason: format!("{SETPRIV} (util-linux) is missing"),
            }),
            None => Ok(cmd),
        };
    }
    let mut wrapped = Command::new(SETPRIV);
    if let Some(user) = user {
        wrapped
            .arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.gid))
            .arg("--init-groups");
    }
    if clean_env {
        wrapped.env_clear();
    }
    wrapped
        .args(["--pdeathsig", "KILL", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    Ok(wrapped)
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every directory above the release must let others through, else www-data and nobody get
/// "permission denied" at request time (e.g. a release under /root, mode 700).
fn check_reachable(release: &Path) -> Result<(), WebError> {
    if !release.is_absolute() {
        return Err(WebError::invalid(
            "release dir",
            release.display().to_string(),
            "must be an absolute path",
        ));
    }
    for dir in release.ancestors().skip(1) {
        let mode = fs_err::metadata(dir)?.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(WebError::NotWorldReadable {
                release: release.to_owned(),
                path: dir.to_owned(),
                mode: mode & 0o7777,
                needs: "search (o+x)",
            });
        }
    }
    Ok(())
}

/// Adds o+r to every file and o+rx to every directory (and o+x to files others' owner may run)
/// of the release. Temp dirs and some unpackers create 0700/0600 entries.
fn make_world_readable(release: &Path) -> Result<(), WebError> {
    for entry in walkdir::WalkDir::new(release).follow_links(false) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(release).to_owned();
            WebError::Io(std::io::Error::other(format!("{}: {e}", path.display())))
        })?;
        if entry.file_type().is_symlink() {
            continue;
        }
        let meta = entry.metadata().map_err(|e| {
            WebError::Io(std::io::Error::other(format!(
                "{}: {e}",
                entry.path().display()
            )))
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        let wanted = if meta.is_dir() || mode & 0o100 != 0 {
            mode | 0o005
        } else {
            mode | 0o004
        };
        if wanted != mode {
            fs_err::set_permissions(entry.path(), std::fs::Permissions::from_mode(wanted))?;
        }
    }
    Ok(())
}
