//! Running the agent's own Python tools (probes, the mod_wsgi build) to completion, dying with
//! the agent (`setpriv --pdeathsig KILL`), the output kept for the error.

use std::process::Command;

use anyhow::Context;

const SETPRIV: &str = "/usr/bin/setpriv";

/// Runs `command`; its stdout on success, else an error with the tail of its output.
pub fn output(command: Command, what: &str) -> anyhow::Result<String> {
    let mut wrapped = if std::path::Path::new(SETPRIV).exists() {
        let mut wrapped = Command::new(SETPRIV);
        wrapped
            .args(["--pdeathsig", "KILL", "--"])
            .arg(command.get_program())
            .args(command.get_args());
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        wrapped
    } else {
        command
    };
    let program = wrapped.get_program().to_string_lossy().into_owned();
    let out = wrapped
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("{what}: could not start {program}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    anyhow::bail!(
        "{what} failed ({}):\n{}",
        out.status,
        lines[lines.len().saturating_sub(25)..].join("\n")
    )
}
