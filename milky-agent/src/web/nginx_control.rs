//! Running nginx: its pid, starting it, testing the config on disk, reloading it and waiting
//! until the workers of an older config have exited (they may still send requests to a slot that
//! is about to stop).

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use super::process::{
    POLL, children, is_alive, log_excerpt, read_pid, remove_if_exists, wait_until,
};
use super::service_commands::combined;
use super::{WebError, WebStack};

impl WebStack {
    /// What nginx's service command lines are given: its prefix, the config, its error log.
    pub(super) fn nginx_vars(&self, conf: &Path) -> [(&'static str, String); 3] {
        [
            ("prefix", self.nginx_prefix().display().to_string()),
            ("conf", conf.display().to_string()),
            ("error_log", self.nginx_error_log().display().to_string()),
        ]
    }

    /// The pid of the nginx master, if it runs.
    pub fn nginx_pid(&self) -> Result<Option<u32>, WebError> {
        Ok(read_pid(&self.nginx_pid_file())?.filter(|pid| is_alive(*pid)))
    }

    /// Makes nginx run the config on disk: starts it when it is down (e.g. after a reboot) and
    /// reloads it when an earlier run changed a file but was interrupted before the reload.
    pub fn ensure_nginx(&self) -> Result<(), WebError> {
        let running = self.nginx_pid()?.is_some();
        if running && !self.reload_marker().exists() {
            return Ok(());
        }
        if !self.nginx_conf().exists() {
            let apps = self.served_apps()?;
            self.write_main_conf(&apps, None)?;
        }
        self.reload_or_start(true)?;
        remove_if_exists(&self.reload_marker())
    }

    /// Tests the config on disk as it is and reloads nginx if it runs (used when a file it
    /// reads changed but no app file did: an app's certificate).
    pub(super) fn test_and_reload_nginx(&self, app: &str) -> Result<(), WebError> {
        let vars = self.nginx_vars(&self.nginx_conf());
        let (command, output) = self.settings.commands.nginx_test.run(
            &format!("test the nginx config for app {app}'s certificate"),
            &vars,
            self.settings.timeouts.command,
        )?;
        if !output.status.success() {
            return Err(WebError::NginxConfigTest {
                app: app.to_owned(),
                command,
                output: combined(&output),
            });
        }
        self.reload_or_start(false).map(|_| ())
    }

    /// Reloads a running nginx and waits until its old workers have exited; starts it if it is
    /// down and `start` is set. Returns whether nginx now runs the config on disk.
    pub(super) fn reload_or_start(&self, start: bool) -> Result<bool, WebError> {
        let vars = self.nginx_vars(&self.nginx_conf());
        let commands = &self.settings.commands;
        let timeouts = &self.settings.timeouts;
        match self.nginx_pid()? {
            Some(master) => {
                let old: BTreeSet<u32> = children(master).into_iter().map(|(p, _)| p).collect();
                commands
                    .nginx_reload
                    .run_ok("reload nginx", &vars, timeouts.command)?;
                // Old workers exit only once the master has loaded the new config and they have
                // finished their requests; a new worker shows the master took the reload.
                let done = wait_until(timeouts.drain + Duration::from_secs(5), POLL, || {
                    let now: BTreeSet<u32> = children(master).into_iter().map(|(p, _)| p).collect();
                    now.is_disjoint(&old) && !now.is_empty()
                });
                if !done {
                    return Err(WebError::Nginx {
                        what: "did not finish reloading (old workers still running or no new ones)",
                        timeout: timeouts.drain,
                        log: log_excerpt(&self.nginx_error_log()),
                    });
                }
                Ok(true)
            }
            None if start => {
                commands
                    .nginx_start
                    .run_ok("start nginx", &vars, timeouts.command)?;
                let front = self.settings.front;
                let up = wait_until(timeouts.start, POLL, || {
                    self.nginx_pid().ok().flatten().is_some()
                        && TcpStream::connect_timeout(&front, Duration::from_millis(200)).is_ok()
                });
                if !up {
                    return Err(WebError::Nginx {
                        what: "did not start",
                        timeout: timeouts.start,
                        log: log_excerpt(&self.nginx_error_log()),
                    });
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Waits until no nginx worker of an older generation is left (they may still be sending
    /// requests to a slot that is about to stop); finishes an interrupted reload first.
    pub(super) fn drain_nginx(&self) -> Result<(), WebError> {
        if self.reload_marker().exists() {
            self.ensure_nginx()?;
        }
        let Some(master) = self.nginx_pid()? else {
            return Ok(());
        };
        let timeout = self.settings.timeouts.drain + Duration::from_secs(5);
        let drained = wait_until(timeout, POLL, || {
            !children(master)
                .iter()
                .any(|(_, cmd)| cmd.contains("shutting down"))
        });
        if drained {
            Ok(())
        } else {
            Err(WebError::Nginx {
                what: "workers of an older config did not exit",
                timeout,
                log: log_excerpt(&self.nginx_error_log()),
            })
        }
    }
}
