//! How nginx and Apache are driven: command lines as data, not code.
//!
//! The defaults run the binaries directly with their own config roots (as the tests do); a real
//! server may swap in `systemctl …` lines without touching the logic.

use std::process::{Command, Output};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::WebError;
use super::process::{Leftovers, Limited};

/// One command line, run without a shell. `{name}` in an argument is replaced by a value the
/// caller gives (`{conf}`, `{prefix}`, `{error_log}`, `{app}`, `{slot}`, `{dir}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandLine(pub Vec<String>);

impl CommandLine {
    pub fn new(args: &[&str]) -> Self {
        CommandLine(args.iter().map(|s| (*s).to_owned()).collect())
    }

    /// The arguments with placeholders filled in.
    pub fn expand(&self, vars: &[(&str, String)]) -> Vec<String> {
        self.0
            .iter()
            .map(|arg| {
                vars.iter()
                    .fold(arg.clone(), |a, (k, v)| a.replace(&format!("{{{k}}}"), v))
            })
            .collect()
    }

    /// Runs the command to completion, capturing its output, for `what` (in errors). A non-zero
    /// exit is not an error here: callers decide what it means. One still running after `limit`
    /// is ended with its process group (a daemon it started has left the group by then) and is
    /// an error.
    pub(crate) fn run(
        &self,
        what: &str,
        vars: &[(&str, String)],
        limit: Duration,
    ) -> Result<(String, Output), WebError> {
        let args = self.expand(vars);
        let shown = args.join(" ");
        let Some((program, rest)) = args.split_first() else {
            return Err(WebError::invalid("command line", "", "must not be empty"));
        };
        let spawn_error = |source| WebError::Spawn {
            command: shown.clone(),
            source,
        };
        let finished = Limited::spawn(Command::new(program).args(rest))
            .and_then(|running| running.wait(limit, Leftovers::Keep))
            .map_err(spawn_error)?;
        if finished.timed_out {
            return Err(WebError::TimedOut {
                what: what.to_owned(),
                command: shown,
                limit: humantime::format_duration(limit).to_string(),
                setting: "service_commands",
                output_tail: combined(&finished.output),
            });
        }
        Ok((shown, finished.output))
    }

    /// Runs the command and turns a non-zero exit into [`WebError::Command`].
    pub(crate) fn run_ok(
        &self,
        what: &str,
        vars: &[(&str, String)],
        limit: Duration,
    ) -> Result<Output, WebError> {
        let (command, output) = self.run(what, vars, limit)?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(WebError::Command {
                what: what.to_owned(),
                command,
                status: output.status.to_string(),
                output: combined(&output),
            })
        }
    }
}

/// stderr then stdout, trimmed: what an operator needs to see of a failed command.
pub(crate) fn combined(output: &Output) -> String {
    let mut s = String::from_utf8_lossy(&output.stderr)
        .trim_end()
        .to_owned();
    let out = String::from_utf8_lossy(&output.stdout);
    if !out.trim().is_empty() {
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(out.trim_end());
    }
    s
}

/// The commands that start, test, reload and stop the web servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceCommands {
    /// Config test of one slot: `{conf}` is the candidate httpd.conf.
    pub apache_test: CommandLine,
    pub apache_start: CommandLine,
    /// Stops a slot letting in-flight requests finish (bounded by `GracefulShutdownTimeout`).
    pub apache_stop: CommandLine,
    /// Used when the graceful stop did not end the slot in time.
    pub apache_force_stop: CommandLine,
    /// Config test: `{conf}` is a candidate main config naming the candidate app file.
    pub nginx_test: CommandLine,
    pub nginx_start: CommandLine,
    pub nginx_reload: CommandLine,
}

impl Default for ServiceCommands {
    fn default() -> Self {
        // `-e` because nginx opens its default error log (/var/log/nginx) before reading the config.
        let nginx = [
            "nginx",
            "-p",
            "{prefix}/",
            "-c",
            "{conf}",
            "-e",
            "{error_log}",
        ];
        let with = |extra: &[&str]| CommandLine::new(&[&nginx[..], extra].concat());
        ServiceCommands {
            apache_test: CommandLine::new(&["apache2", "-t", "-f", "{conf}"]),
            apache_start: CommandLine::new(&["apache2", "-f", "{conf}", "-k", "start"]),
            apache_stop: CommandLine::new(&["apache2", "-f", "{conf}", "-k", "graceful-stop"]),
            apache_force_stop: CommandLine::new(&["apache2", "-f", "{conf}", "-k", "stop"]),
            nginx_test: with(&["-t"]),
            nginx_start: with(&[]),
            nginx_reload: with(&["-s", "reload"]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_hangs_fails_at_its_limit_with_its_output() {
        let hangs =
            CommandLine::new(&["sh", "-c", "echo 'nginx: waiting for {what}'; sleep 100000"]);
        let err = hangs
            .run_ok(
                "reload nginx",
                &[("what", "a lock".to_owned())],
                Duration::from_millis(300),
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("reload nginx: `sh -c echo 'nginx: waiting for a lock'; sleep 100000` was still running after 300ms ([limits] service_commands in agent.toml)"),
            "{text}"
        );
        assert!(
            text.ends_with("output tail:\nnginx: waiting for a lock"),
            "{text}"
        );
        let ok = CommandLine::new(&["sh", "-c", "echo fine; exit 3"]);
        let (_, output) = ok.run("test", &[], Duration::from_secs(60)).unwrap();
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(combined(&output), "fine");
    }

    #[test]
    fn placeholders_are_filled_per_argument() {
        let c = ServiceCommands::default();
        let args = c.nginx_reload.expand(&[
            ("prefix", "/r/nginx".to_owned()),
            ("conf", "/r/nginx/nginx.conf".to_owned()),
            ("error_log", "/r/nginx/logs/error.log".to_owned()),
        ]);
        assert_eq!(
            args.join(" "),
            "nginx -p /r/nginx/ -c /r/nginx/nginx.conf -e /r/nginx/logs/error.log -s reload"
        );
    }
}
