//! Hooks in a release: the per-server hooks of a prepare and the once hooks, each a `/bin/sh -c`
//! command line with a clean environment, as the hook user.

use std::process::Command;
use std::time::{Duration, Instant};

use super::step::{RunAs, run_step};
use super::{HookRun, Limit, ReleaseSetup, WebError, hook_user};

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

pub(super) fn run_hooks_at(
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
