//! The log files the web stack writes, listed for the agent to ship, and what may be done to
//! each once shipped: nginx reopens its logs on a signal, a slot's error log is moved aside when
//! its app is removed.

use std::path::PathBuf;

use rustix::process::Signal;

use super::process::{read_dir_if_exists, send_signal};
use super::{Slot, WebError, WebStack, validate};

/// A log file the web stack writes, for the agent to ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebLog {
    pub source: WebLogSource,
    /// `None` for nginx's own logs (requests no app claimed, nginx itself).
    pub app: Option<String>,
    /// `access` or `error` for nginx; the slot (`blue`, `green`) for Apache.
    pub file: String,
    pub path: PathBuf,
    pub writer: LogWriter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebLogSource {
    Nginx,
    Apache,
}

/// Who writes a log file, which says how it may be cut down once shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogWriter {
    /// nginx: rename it and have nginx reopen its logs ([`WebStack::reopen_nginx_logs`]).
    Nginx,
    /// A running Apache slot: it keeps its file open until the slot stops.
    LiveSlot,
    /// A stopped slot: nobody writes until it starts again.
    IdleSlot,
    /// Nobody, ever again (a removed app): once shipped it may go.
    Retired,
}

impl WebStack {
    /// Every log file of this stack that exists now.
    pub fn log_files(&self) -> Result<Vec<WebLog>, WebError> {
        let mut logs = Vec::new();
        let nginx = |app: Option<&str>, file: &str, path: PathBuf, served: bool| WebLog {
            source: WebLogSource::Nginx,
            app: app.map(str::to_owned),
            file: file.to_owned(),
            path,
            writer: if served {
                LogWriter::Nginx
            } else {
                LogWriter::Retired
            },
        };
        logs.push(nginx(
            None,
            "access",
            self.nginx_logs_dir().join("access.log"),
            true,
        ));
        logs.push(nginx(None, "error", self.nginx_error_log(), true));
        for entry in read_dir_if_exists(&self.nginx_logs_dir())? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((app, file)) = name
                .strip_suffix(".log")
                .and_then(|stem| stem.split_once('.'))
            else {
                continue;
            };
            if validate::app_name(app).is_ok() && matches!(file, "access" | "error") {
                let served = self.nginx_app_file(app).exists();
                logs.push(nginx(Some(app), file, entry.path(), served));
            }
        }
        for app in self.known_apps()? {
            for slot in Slot::ALL {
                let writer = if self.is_running(&app, slot)? {
                    LogWriter::LiveSlot
                } else {
                    LogWriter::IdleSlot
                };
                logs.push(WebLog {
                    source: WebLogSource::Apache,
                    app: Some(app.clone()),
                    file: slot.to_string(),
                    path: self.slot_error_log(&app, slot),
                    writer,
                });
            }
        }
        // <app>.<slot>.<unix time>.log, left by remove_app.
        for entry in read_dir_if_exists(&self.retired_logs_dir())? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut parts = name.split('.');
            if let (Some(app), Some(slot)) = (parts.next(), parts.next())
                && validate::app_name(app).is_ok()
                && slot.parse::<Slot>().is_ok()
            {
                logs.push(WebLog {
                    source: WebLogSource::Apache,
                    app: Some(app.to_owned()),
                    file: slot.to_owned(),
                    path: entry.path(),
                    writer: LogWriter::Retired,
                });
            }
        }
        logs.retain(|log| log.path.exists());
        Ok(logs)
    }

    /// Tells nginx to reopen its log files (after they were renamed), as logrotate does.
    pub fn reopen_nginx_logs(&self) -> Result<(), WebError> {
        let Some(master) = self.nginx_pid()? else {
            return Ok(());
        };
        send_signal(master, Signal::USR1, "reopen nginx's logs")
    }

    /// Moves the slots' error logs out of an app's dir before it is deleted, so the agent can
    /// still ship them (same inode: the shipper carries on where it was).
    pub(super) fn retire_slot_logs(&self, app: &str) -> Result<(), WebError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for slot in Slot::ALL {
            let log = self.slot_error_log(app, slot);
            if fs_err::metadata(&log).is_ok_and(|m| m.len() > 0) {
                let dir = self.retired_logs_dir();
                fs_err::create_dir_all(&dir)?;
                fs_err::rename(&log, dir.join(format!("{app}.{slot}.{stamp}.log")))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::super::stack::test_stack;
    use super::*;

    fn touch(path: &std::path::Path) {
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, "a line\n").unwrap();
    }

    #[test]
    fn each_log_file_is_listed_with_who_writes_it() {
        let (_dir, stack) = test_stack();
        touch(&stack.nginx_logs_dir().join("access.log"));
        touch(&stack.nginx_app_log("shop", "access"));
        touch(&stack.nginx_app_log("gone", "error"));
        // Not logs of an app server block.
        touch(&stack.nginx_logs_dir().join("Bad.access.log"));
        touch(&stack.nginx_logs_dir().join("shop.debug.log"));
        fs_err::write(
            stack.nginx_app_file("shop"),
            "# milky-site: default=false\n",
        )
        .unwrap();
        touch(&stack.slot_error_log("shop", Slot::Blue));
        touch(&stack.slot_error_log("shop", Slot::Green));
        touch(&stack.slot_pid_file("shop", Slot::Green));
        fs_err::write(
            stack.slot_pid_file("shop", Slot::Green),
            std::process::id().to_string(),
        )
        .unwrap();
        touch(&stack.retired_logs_dir().join("old.green.1700000000.log"));
        touch(&stack.retired_logs_dir().join("old.purple.1700000000.log"));

        let mut found: Vec<_> = stack
            .log_files()
            .unwrap()
            .into_iter()
            .map(|l| (l.source, l.app, l.file, l.writer))
            .collect();
        found.sort_by_key(|(_, app, file, _)| (app.clone(), file.clone()));
        let entry = |source, app: Option<&str>, file: &str, writer| {
            (source, app.map(str::to_owned), file.to_owned(), writer)
        };
        use WebLogSource::{Apache, Nginx};
        assert_eq!(
            found,
            [
                // nginx's own error log does not exist yet, so it is not listed.
                entry(Nginx, None, "access", LogWriter::Nginx),
                entry(Nginx, Some("gone"), "error", LogWriter::Retired),
                entry(Apache, Some("old"), "green", LogWriter::Retired),
                entry(Nginx, Some("shop"), "access", LogWriter::Nginx),
                entry(Apache, Some("shop"), "blue", LogWriter::IdleSlot),
                entry(Apache, Some("shop"), "green", LogWriter::LiveSlot),
            ]
        );
    }

    #[test]
    fn only_logs_with_something_in_them_are_retired() {
        let (_dir, stack) = test_stack();
        touch(&stack.slot_error_log("shop", Slot::Blue));
        let green = stack.slot_error_log("shop", Slot::Green);
        touch(&green);
        fs_err::write(&green, "").unwrap();
        stack.retire_slot_logs("shop").unwrap();
        let retired = read_dir_if_exists(&stack.retired_logs_dir()).unwrap();
        assert_eq!(retired.len(), 1);
        assert_eq!(
            fs_err::read_to_string(retired[0].path()).unwrap(),
            "a line\n"
        );
        assert!(!stack.slot_error_log("shop", Slot::Blue).exists());
        assert!(green.exists());
    }

    #[test]
    fn nginx_is_told_to_reopen_its_logs_by_usr1() {
        let (_dir, stack) = test_stack();
        // No nginx: nothing to tell.
        stack.reopen_nginx_logs().unwrap();
        // A process stands in for the nginx master: USR1 ends it, which shows it was sent.
        let mut master = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        fs_err::write(stack.nginx_pid_file(), master.id().to_string()).unwrap();
        stack.reopen_nginx_logs().unwrap();
        let status = master.wait().unwrap();
        assert_eq!(status.signal(), Some(Signal::USR1.as_raw()));
    }
}
