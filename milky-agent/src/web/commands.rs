//! How nginx and Apache are driven: command lines as data, not code.
//!
//! The defaults run the binaries directly with their own config roots (as the tests do); a real
//! server may swap in `systemctl …` lines without touching the logic.

use std::process::{Command, Output};

use serde::{Deserialize, Serialize};

use super::WebError;

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

    /// Runs the command to completion, capturing its output. A non-zero exit is not an error
    /// here: callers decide what it means.
    pub(crate) fn run(&self, vars: &[(&str, String)]) -> Result<(String, Output), WebError> {
        let args = self.expand(vars);
        let shown = args.join(" ");
        let Some((program, rest)) = args.split_first() else {
            return Err(WebError::invalid("command line", "", "must not be empty"));
        };
        let output = Command::new(program)
            .args(rest)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| WebError::Spawn {
                command: shown.clone(),
                source,
            })?;
        Ok((shown, output))
    }

    /// Runs the command and turns a non-zero exit into [`WebError::Command`].
    pub(crate) fn run_ok(&self, what: &str, vars: &[(&str, String)]) -> Result<Output, WebError> {
        let (command, output) = self.run(vars)?;
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
