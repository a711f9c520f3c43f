//! The Apache slots of an app: rendering a slot's config and WSGI wrapper, starting a release on
//! a slot, stopping a slot once nginx no longer sends it requests, and reading back what a slot
//! runs (its pid file and `slot.toml`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::process::{
    POLL, end_process_group, established_connections, group_alive, is_alive, kill_process_group,
    listening, log_excerpt, process_group, read_pid, remove_if_exists, wait_until, write_atomic,
};
use super::service_commands::combined;
use super::templates::{APACHE_SLOT, APACHE_WSGI};
use super::{AppSite, Slot, WebError, WebStack, validate};

/// A stop of the old slot slower than this is logged as a warning with what it waited for.
const SLOW_STOP: Duration = Duration::from_secs(5);

/// How long a hard stop (`apache2 -k stop`, then SIGKILL to the slot's process group) gets.
const HARD_STOP: Duration = Duration::from_secs(5);

/// What the agent recorded when it started a slot (`slot.toml`): which release it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub app: String,
    pub slot: Slot,
    pub port: u16,
    pub release_dir: PathBuf,
    /// `Host` header of health checks.
    pub server_name: String,
}

impl WebStack {
    /// The pid of a slot's Apache, if it runs.
    pub fn slot_pid(&self, app: &str, slot: Slot) -> Result<Option<u32>, WebError> {
        validate::app_name(app)?;
        Ok(read_pid(&self.slot_pid_file(app, slot))?.filter(|pid| is_alive(*pid)))
    }

    /// Whether a slot's Apache runs (from its pid file and /proc).
    pub fn is_running(&self, app: &str, slot: Slot) -> Result<bool, WebError> {
        Ok(self.slot_pid(app, slot)?.is_some())
    }

    /// What was recorded when the slot was last started (the release it runs).
    pub fn slot_info(&self, app: &str, slot: Slot) -> Result<Option<SlotInfo>, WebError> {
        validate::app_name(app)?;
        let path = self.slot_info_file(app, slot);
        let text = match fs_err::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| WebError::State {
                path,
                reason: e.to_string(),
            })
    }

    /// The httpd.conf of `site` on `slot` (checked first).
    pub fn render_apache(&self, site: &AppSite, slot: Slot) -> Result<String, WebError> {
        site.validate()?;
        let dir = self.slot_dir(&site.name, slot);
        let wsgi_script = dir.join("wsgi.py");
        self.templates.render(
            APACHE_SLOT,
            json!({
                "app": site.name,
                "slot": slot,
                "slot_dir": dir,
                "run_dir": dir.join("run"),
                "log_dir": dir.join("logs"),
                "port": self.slot_port(&site.name, slot)?,
                "modules_dir": self.settings.apache_modules_dir,
                "wsgi_module": site.python.as_ref().map_or_else(
                    || self.settings.apache_modules_dir.join("mod_wsgi.so"),
                    |p| p.module.clone(),
                ),
                "libpython": site.python.as_ref().map(|p| &p.libpython),
                "user": self.settings.apache_user,
                "group": self.settings.apache_group,
                "shutdown_timeout_secs": self.settings.timeouts.stop.as_secs().max(1),
                "server_names": site.server_names,
                "process_group": format!("{}-{}", site.name, slot),
                "venv_dir": site.venv_dir,
                "release_dir": site.release_dir,
                "processes": site.processes,
                "threads": site.threads,
                "wsgi_script": wsgi_script,
                "wsgi_script_name": "wsgi.py",
                "apache_snippet": site.apache_snippet.as_ref().map(|s| site.in_release(s)),
            }),
        )
    }

    /// The WSGI wrapper of `site` on `slot`: sets the app's environment, then runs its WSGI file.
    pub fn render_wsgi(&self, site: &AppSite, slot: Slot) -> Result<String, WebError> {
        site.validate()?;
        let mut env = site.env.clone();
        env.insert("MILKY_APP".to_owned(), site.name.clone());
        env.insert("MILKY_SLOT".to_owned(), slot.to_string());
        // JSON strings and objects of strings are valid Python literals.
        let wsgi_file = site.in_release(&site.wsgi_file);
        self.templates.render(
            APACHE_WSGI,
            json!({
                "app": site.name,
                "slot": slot,
                "env_json": serde_json::to_string(&env).unwrap_or_default(),
                "wsgi_file_json": serde_json::to_string(&wsgi_file).unwrap_or_default(),
                "callable_json": serde_json::to_string(&site.wsgi_callable).unwrap_or_default(),
                "secret_env_json": serde_json::to_string(&site.secret_env_file).unwrap_or_default(),
            }),
        )
    }

    /// Starts `site`'s release on `slot`: renders its config, tests it (on failure nothing is
    /// started and the error carries Apache's output), starts Apache and waits until it listens.
    /// An idle slot that still runs (an older release, a crashed run) is stopped first; the live
    /// slot is never restarted while it runs.
    pub fn start_slot(&self, site: &AppSite, slot: Slot) -> Result<SlotInfo, WebError> {
        site.validate()?;
        let app = site.name.as_str();
        if self.live_slot(app)? == Some(slot) && self.is_running(app, slot)? {
            return Err(WebError::SlotIsLive {
                app: app.to_owned(),
                slot,
                action: "restarting",
            });
        }
        self.stop_slot_now(app, slot)?;
        let port = self.slot_port(app, slot)?;
        // Checked once our own instance is stopped: anything still there is someone else.
        if listening(port) {
            return Err(WebError::PortInUse {
                app: app.to_owned(),
                slot,
                port,
            });
        }
        let dir = self.slot_dir(app, slot);
        for sub in ["run", "logs"] {
            fs_err::create_dir_all(dir.join(sub))?;
        }
        let conf = self.slot_conf(app, slot);
        let candidate = dir.join("httpd.conf.new");
        write_atomic(&dir.join("wsgi.py"), &self.render_wsgi(site, slot)?)?;
        write_atomic(&candidate, &self.render_apache(site, slot)?)?;
        let candidate_str = candidate.display().to_string();
        let (command, output) = self.settings.commands.apache_test.run(
            &format!("test the Apache config of app {app} slot {slot}"),
            &slot_vars(&candidate_str, app, slot, &dir),
            self.settings.timeouts.command,
        )?;
        if !output.status.success() {
            fs_err::remove_file(&candidate)?;
            return Err(WebError::ApacheConfigTest {
                app: app.to_owned(),
                slot,
                command,
                output: combined(&output),
            });
        }
        fs_err::rename(&candidate, &conf)?;
        let info = SlotInfo {
            app: app.to_owned(),
            slot,
            port,
            release_dir: site.release_dir.clone(),
            server_name: site.health_host().to_owned(),
        };
        let info_file = self.slot_info_file(app, slot);
        let info_text = toml::to_string(&info).map_err(|e| WebError::State {
            path: info_file.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&info_file, &info_text)?;
        remove_if_exists(&self.slot_pid_file(app, slot))?;
        let conf_str = conf.display().to_string();
        tracing::info!(app, %slot, port, release = %site.release_dir.display(), "starting Apache slot");
        self.settings.commands.apache_start.run_ok(
            &format!("start Apache of app {app} slot {slot}"),
            &slot_vars(&conf_str, app, slot, &dir),
            self.settings.timeouts.command,
        )?;
        let up = wait_until(self.settings.timeouts.start, POLL, || {
            self.is_running(app, slot).unwrap_or(false) && listening(port)
        });
        if !up {
            // Do not leave a half-started instance behind; the error below says why it failed.
            let _ = self.stop_slot_now(app, slot);
            return Err(WebError::SlotStart {
                app: app.to_owned(),
                slot,
                port,
                timeout: self.settings.timeouts.start,
                log: log_excerpt(&self.slot_error_log(app, slot)),
            });
        }
        Ok(info)
    }

    /// Stops a slot that nginx no longer sends requests to: first waits until no request can still
    /// be on its way there (nginx's old workers gone after a reload, no connection open to the
    /// slot's port), then stops Apache gracefully and waits for its processes to go. The wait for
    /// requests and the graceful stop share one bound, `timeouts.stop` (`[web] stop_timeout`):
    /// past it the slot's processes are killed, with a warning that says what was still open.
    /// Refuses the live slot.
    pub fn stop_slot(&self, app: &str, slot: Slot) -> Result<(), WebError> {
        validate::app_name(app)?;
        if self.live_slot(app)? == Some(slot) {
            return Err(WebError::SlotIsLive {
                app: app.to_owned(),
                slot,
                action: "stopping",
            });
        }
        if !self.is_running(app, slot)? {
            return Ok(());
        }
        // nginx's old workers are nginx's own (bounded by its worker_shutdown_timeout, the drain
        // timeout); what is timed from here on is the slot's.
        let started = Instant::now();
        self.drain_nginx()?;
        let nginx = started.elapsed();
        let port = match self.slot_info(app, slot)? {
            Some(info) => info.port,
            None => self.slot_port(app, slot)?,
        };
        let bound = self.settings.timeouts.stop;
        let started = Instant::now();
        let open = self.wait_for_requests_to_end(port, bound.min(self.settings.timeouts.drain));
        let connections = started.elapsed();
        let started = Instant::now();
        // A graceful stop would wait for the same requests again: it gets what is left.
        let forced = self.stop_slot_within(
            app,
            slot,
            bound.saturating_sub(connections),
            AtTheLimit::Kill,
        )?;
        let stop = started.elapsed();
        let total = nginx + connections + stop;
        if forced {
            tracing::warn!(
                app, %slot, port, open_connections = open, ?connections, ?stop,
                "the old slot did not stop within {bound:?} ([web] stop_timeout): {open} connection(s) to it still open after {connections:.1?}, then {stop:.1?} of Apache's graceful stop; its processes were killed (requests still running were cut off)"
            );
        } else if total > SLOW_STOP {
            tracing::warn!(
                app, %slot, ?nginx, ?connections, ?stop,
                "stopping the old slot took {total:.1?}: {nginx:.1?} waiting for nginx's old workers to exit, {connections:.1?} for connections to the slot to close, {stop:.1?} for Apache's graceful stop (requests still running, or threads of the app keeping mod_wsgi's daemons alive)"
            );
        } else {
            tracing::info!(app, %slot, ?nginx, ?connections, ?stop, "old slot stopped");
        }
        Ok(())
    }

    /// Waits until no connection to `port` is open, or `limit` passes; returns how many are still
    /// open. nginx opens one for each request it proxies and closes it with the answer, so then
    /// no request is in flight on the slot that a stop could cut short, nor one in Apache's
    /// listen backlog that a stop would reset. It must be seen quiet twice in a row: a request
    /// that read the live link just before the switch may still be connecting. A slow request,
    /// or a client that talks to the slot directly, holds it up to `limit`.
    fn wait_for_requests_to_end(&self, port: u16, limit: Duration) -> usize {
        let mut quiet = 0;
        let mut open = 0;
        wait_until(limit, POLL, || {
            open = established_connections(port);
            quiet = if open == 0 { quiet + 1 } else { 0 };
            quiet >= 2
        });
        open
    }

    /// Graceful stop, then a hard stop if it takes too long; no drain, no live check.
    pub(super) fn stop_slot_now(&self, app: &str, slot: Slot) -> Result<(), WebError> {
        // Apache's own GracefulShutdownTimeout is `stop`; give it a moment beyond that.
        let graceful = self.settings.timeouts.stop + Duration::from_secs(2);
        self.stop_slot_within(app, slot, graceful, AtTheLimit::StopHard)
            .map(|_| ())
    }

    /// Stops a slot's Apache: gracefully if `graceful` is not zero, waiting that long for it to
    /// go; then (or at once) as `at_limit` says, and at last by killing its process group
    /// (Apache, its workers and mod_wsgi's daemons). Returns whether the graceful stop was cut
    /// short. Nothing of the slot runs when it returns `Ok`.
    fn stop_slot_within(
        &self,
        app: &str,
        slot: Slot,
        graceful: Duration,
        at_limit: AtTheLimit,
    ) -> Result<bool, WebError> {
        let Some(pid) = self.slot_pid(app, slot)? else {
            remove_if_exists(&self.slot_pid_file(app, slot))?;
            return Ok(false);
        };
        // Apache detaches into a session of its own: its children share its process group.
        let group = (process_group(pid) == Some(pid)).then_some(pid);
        let dir = self.slot_dir(app, slot);
        let conf = self.slot_conf(app, slot).display().to_string();
        let vars = slot_vars(&conf, app, slot, &dir);
        tracing::info!(app, %slot, pid, "stopping Apache slot");
        let commands = &self.settings.commands;
        let timeouts = &self.settings.timeouts;
        let what = format!("stop Apache of app {app} slot {slot}");
        let gone = || !is_alive(pid) && !group.is_some_and(group_alive);
        let stopped = !graceful.is_zero() && {
            commands
                .apache_stop
                .run_ok(&what, &vars, timeouts.command)?;
            wait_until(graceful, POLL, || !is_alive(pid))
        };
        if !stopped {
            match (at_limit, group) {
                // Apache's own hard stop still gives mod_wsgi's daemons seconds to finish.
                (AtTheLimit::Kill, Some(group)) => kill_process_group(group),
                _ => {
                    if !graceful.is_zero() {
                        tracing::warn!(app, %slot, pid, "graceful stop timed out, stopping hard");
                    }
                    let _ = commands
                        .apache_force_stop
                        .run(&what, &vars, timeouts.command);
                }
            }
            wait_until(HARD_STOP, POLL, || !is_alive(pid));
        }
        // What outlived Apache (a mod_wsgi daemon kept by a thread of the app), or all of it if
        // the hard stop did not end it: killed with the group.
        if !gone() {
            if let Some(group) = group {
                end_process_group(group);
            }
            if !wait_until(HARD_STOP, POLL, gone) {
                return Err(WebError::SlotStop {
                    app: app.to_owned(),
                    slot,
                    pid,
                    timeout: timeouts.stop,
                });
            }
        }
        remove_if_exists(&self.slot_pid_file(app, slot))?;
        Ok(!stopped)
    }
}

/// What stopping a slot does once its graceful stop had its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtTheLimit {
    /// `apache2 -k stop` (the slot being replaced by a start, or taken off).
    StopHard,
    /// SIGKILL to its process group: the old slot's stop is bounded.
    Kill,
}

fn slot_vars(conf: &str, app: &str, slot: Slot, dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("conf", conf.to_owned()),
        ("app", app.to_owned()),
        ("slot", slot.to_string()),
        ("dir", dir.display().to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::stack::test_stack;
    use super::*;

    fn site(release: &Path) -> AppSite {
        AppSite::new("shop", "shop.example", release, "mysite/wsgi.py")
    }

    #[test]
    fn a_slot_config_names_its_own_port_dirs_and_release() {
        let (dir, stack) = test_stack();
        let release = dir.path().join("releases/shop/1.0");
        let conf = stack.render_apache(&site(&release), Slot::Green).unwrap();
        let port = stack.slot_port("shop", Slot::Green).unwrap();
        let slot_dir = stack.slot_dir("shop", Slot::Green);
        for want in [
            format!("Listen 127.0.0.1:{port}\n"),
            format!("<VirtualHost 127.0.0.1:{port}>"),
            format!(
                "PidFile \"{}\"",
                stack.slot_pid_file("shop", Slot::Green).display()
            ),
            format!(
                "ErrorLog \"{}\"",
                stack.slot_error_log("shop", Slot::Green).display()
            ),
            format!("python-path={} ", release.display()),
            format!("WSGIScriptAlias / {}/wsgi.py ", slot_dir.display()),
            "WSGIDaemonProcess shop-green ".to_owned(),
            "ServerName shop.example\n".to_owned(),
        ] {
            assert!(conf.contains(&want), "{want:?} missing from:\n{conf}");
        }
        assert!(conf.contains("/mod_wsgi.so\n"), "{conf}");
        assert!(!conf.contains("LoadFile"), "{conf}");
        // An app on another Python loads that Python's libpython, then the mod_wsgi built for it.
        let mut other = site(&release);
        other.python = Some(crate::python::WsgiModule {
            module: "/var/lib/milky/python/mod_wsgi/py3.13.0-ab/mod_wsgi.so".into(),
            libpython: "/opt/python3.13/lib/libpython3.13.so.1.0".into(),
        });
        let conf = stack.render_apache(&other, Slot::Green).unwrap();
        assert!(
            conf.contains("LoadFile /opt/python3.13/lib/libpython3.13.so.1.0\nLoadModule wsgi_module /var/lib/milky/python/mod_wsgi/py3.13.0-ab/mod_wsgi.so\n"),
            "{conf}"
        );
        // The other slot has the other port of the pair.
        let blue = stack.render_apache(&site(&release), Slot::Blue).unwrap();
        assert!(blue.contains(&format!("Listen 127.0.0.1:{}\n", port - 1)));
    }

    #[test]
    fn the_wsgi_wrapper_sets_the_apps_environment_as_python_literals() {
        let (dir, stack) = test_stack();
        let mut site = site(&dir.path().join("rel"));
        site.env = BTreeMap::from([("GREETING".to_owned(), "say \"hi\"".to_owned())]);
        let wsgi = stack.render_wsgi(&site, Slot::Blue).unwrap();
        assert!(
            wsgi.contains(
                r#"os.environ.update({"GREETING":"say \"hi\"","MILKY_APP":"shop","MILKY_SLOT":"blue"})"#
            ),
            "{wsgi}"
        );
        let wsgi_file = serde_json::to_string(&dir.path().join("rel/mysite/wsgi.py")).unwrap();
        assert!(
            wsgi.contains(&format!("runpy.run_path({wsgi_file}, ")),
            "{wsgi}"
        );
        assert!(
            !wsgi.contains("json.load"),
            "no secrets file, no secrets: {wsgi}"
        );
    }

    #[test]
    fn a_bad_site_is_refused_before_a_port_is_handed_out() {
        let (dir, stack) = test_stack();
        let mut site = site(&dir.path().join("rel"));
        site.server_names = vec!["shop.example; include /etc/passwd".to_owned()];
        assert!(matches!(
            stack.render_apache(&site, Slot::Blue),
            Err(WebError::Invalid { .. })
        ));
        assert!(!stack.ports_file().exists());
    }

    #[test]
    fn slot_info_reads_back_what_start_recorded() {
        let (_dir, stack) = test_stack();
        assert_eq!(stack.slot_info("shop", Slot::Blue).unwrap(), None);
        let info = SlotInfo {
            app: "shop".to_owned(),
            slot: Slot::Blue,
            port: 8100,
            release_dir: PathBuf::from("/srv/milky/apps/shop/releases/1.0"),
            server_name: "shop.example".to_owned(),
        };
        let path = stack.slot_info_file("shop", Slot::Blue);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(&path, toml::to_string(&info).unwrap()).unwrap();
        assert_eq!(stack.slot_info("shop", Slot::Blue).unwrap(), Some(info));
        fs_err::write(&path, "port = \"eighty\"").unwrap();
        assert!(matches!(
            stack.slot_info("shop", Slot::Blue),
            Err(WebError::State { path: p, .. }) if p == path
        ));
    }

    #[test]
    fn a_slot_runs_while_its_pid_file_names_a_live_process() {
        let (_dir, stack) = test_stack();
        let pid_file = stack.slot_pid_file("shop", Slot::Green);
        assert!(!stack.is_running("shop", Slot::Green).unwrap());
        fs_err::create_dir_all(pid_file.parent().unwrap()).unwrap();
        // This test process stands for the slot's Apache.
        fs_err::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(
            stack.slot_pid("shop", Slot::Green).unwrap(),
            Some(std::process::id())
        );
        // A process that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        fs_err::write(&pid_file, gone.to_string()).unwrap();
        assert!(!stack.is_running("shop", Slot::Green).unwrap());
        // Half-written after a crash.
        fs_err::write(&pid_file, "").unwrap();
        assert_eq!(stack.slot_pid("shop", Slot::Green).unwrap(), None);
    }

    #[test]
    fn the_live_slot_is_neither_restarted_nor_stopped() {
        let (dir, stack) = test_stack();
        let site = site(&dir.path().join("rel"));
        fs_err::write(
            stack.nginx_app_file("shop"),
            stack.render_nginx_app(&site).unwrap(),
        )
        .unwrap();
        let port = stack.slot_port("shop", Slot::Green).unwrap();
        stack
            .point_live_link("shop", &stack.nginx_slot_dir("shop", Slot::Green, port))
            .unwrap();
        let pid_file = stack.slot_pid_file("shop", Slot::Green);
        fs_err::create_dir_all(pid_file.parent().unwrap()).unwrap();
        fs_err::write(&pid_file, std::process::id().to_string()).unwrap();

        let err = stack.start_slot(&site, Slot::Green).unwrap_err();
        assert!(
            matches!(
                err,
                WebError::SlotIsLive {
                    slot: Slot::Green,
                    action: "restarting",
                    ..
                }
            ),
            "{err}"
        );
        let err = stack.stop_slot("shop", Slot::Green).unwrap_err();
        assert!(
            matches!(
                err,
                WebError::SlotIsLive {
                    slot: Slot::Green,
                    action: "stopping",
                    ..
                }
            ),
            "{err}"
        );
        // Nothing was touched: the pid file still names the "running" slot.
        assert!(stack.is_running("shop", Slot::Green).unwrap());
        assert!(!stack.slot_conf("shop", Slot::Green).exists());
        // Stopping the idle slot that does not run is a no-op.
        stack.stop_slot("shop", Slot::Blue).unwrap();
    }
}
