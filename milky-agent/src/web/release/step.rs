//! One step of a prepare (making the venv, an install, a hook) run to its end or its limit,
//! under `setpriv` so it dies with the agent, and as the hook user where it is a hook; a step
//! nothing waits for (the bytecode) at the lowest CPU priority.

use std::path::Path;
use std::process::Command;

use super::super::process::{Leftovers, Limited};
use super::super::service_commands::combined;
use super::hook_user::{self, HookUser};
use super::{Limit, WebError};

/// Who runs a step, and with which environment.
#[derive(Debug, Clone, Copy)]
pub(super) enum RunAs<'a> {
    /// The agent, with its own environment: creating the venv, pip.
    Agent,
    /// A hook: the environment set on the command and nothing else, as the hook user if any.
    Hook(Option<&'a HookUser>),
}

/// How much of the server's CPU a step may take from the rest (the apps serving, other steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Priority {
    Normal,
    /// nice 19: what CPU the rest leaves, for work nothing waits for. Not `SCHED_IDLE`, which
    /// a server whose apps keep the CPU busy would starve, and the pass waits for the step.
    Lowest,
}

/// Runs one step to completion, or until `limit`; on failure the error carries the exit status
/// (or the limit) and the tail of its output. `crash_point` is passed while the step runs.
pub(super) fn run_step(
    release: &Path,
    what: &str,
    cmd: Command,
    run_as: RunAs<'_>,
    limit: Limit,
    crash_point: &str,
) -> Result<String, WebError> {
    run_step_at(
        release,
        what,
        cmd,
        run_as,
        Priority::Normal,
        limit,
        crash_point,
    )
}

/// [`run_step`] at `priority`, which the step's children inherit.
pub(super) fn run_step_at(
    release: &Path,
    what: &str,
    cmd: Command,
    run_as: RunAs<'_>,
    priority: Priority,
    limit: Limit,
    crash_point: &str,
) -> Result<String, WebError> {
    let spawn_error = |source| WebError::Spawn {
        command: what.to_owned(),
        source,
    };
    let mut cmd = dies_with_agent(cmd, run_as)?;
    if priority == Priority::Lowest {
        at_lowest_priority(&mut cmd);
    }
    let running = Limited::spawn(&mut cmd).map_err(spawn_error)?;
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

/// Makes `cmd` start at nice 19, which it and its children keep.
#[allow(unsafe_code)] // `pre_exec`: the one way to set it before the program's first instruction
fn at_lowest_priority(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec; it only makes one system call
    // (async-signal-safe), allocating nothing and taking no lock.
    unsafe {
        cmd.pre_exec(|| {
            // Lowering one's own priority needs no privilege; were it refused all the same,
            // running at the normal one beats not running.
            let _ = rustix::process::setpriority_process(None, 19);
            Ok(())
        });
    }
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
