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
