//! The layout of the web root: every path the stack reads or writes is spelled here.
//!
//! All state is in files, so a restarted agent reads back what runs:
//! ```text
//! ROOT/nginx/                 nginx prefix: nginx.conf, nginx.pid, logs/, tmp/
//! ROOT/nginx/apps/APP.conf    one app's server block; its first line records whether it is the default
//! ROOT/nginx/live/APP         symlink to the live slot's dir below: the record of which slot is live
//! ROOT/nginx/slots/APP.SLOT.PORT   what nginx needs of a slot: its port (in the name), `static` link
//! ROOT/nginx/snippets/APP.HASH.conf   the package's nginx snippet, named by its content
//! ROOT/nginx/reload-pending   exists while an app file changed but nginx has not reloaded yet
//! ROOT/nginx/logs/            nginx's own logs and APP.access.log, APP.error.log
//! ROOT/apache/APP/SLOT/       httpd.conf, wsgi.py, slot.toml, run/ (pid, sockets), logs/
//! ROOT/retired-logs/          APP.SLOT.TIME.log: removed apps' slot logs, until shipped
//! ROOT/ports.toml             slot ports handed out to apps (unless fixed in the settings)
//! ```

use std::path::PathBuf;

use super::{Slot, WebStack};

impl WebStack {
    pub fn nginx_prefix(&self) -> PathBuf {
        self.settings.root.join("nginx")
    }

    pub fn nginx_conf(&self) -> PathBuf {
        self.nginx_prefix().join("nginx.conf")
    }

    pub fn nginx_error_log(&self) -> PathBuf {
        self.nginx_prefix().join("logs/error.log")
    }

    pub(super) fn nginx_logs_dir(&self) -> PathBuf {
        self.nginx_prefix().join("logs")
    }

    /// nginx's log of one app's server block: `kind` is `access` or `error`.
    pub fn nginx_app_log(&self, app: &str, kind: &str) -> PathBuf {
        self.nginx_logs_dir().join(format!("{app}.{kind}.log"))
    }

    /// Logs of removed apps' slots, kept until the agent has shipped them.
    pub(super) fn retired_logs_dir(&self) -> PathBuf {
        self.settings.root.join("retired-logs")
    }

    pub(super) fn nginx_apps_dir(&self) -> PathBuf {
        self.nginx_prefix().join("apps")
    }

    /// The nginx file of `app` (present while the app is served).
    pub fn nginx_app_file(&self, app: &str) -> PathBuf {
        self.nginx_apps_dir().join(format!("{app}.conf"))
    }

    pub(super) fn nginx_live_dir(&self) -> PathBuf {
        self.nginx_prefix().join("live")
    }

    /// The link nginx resolves on every request of `app` to find its live slot: switching slots
    /// replaces it, and needs no reload.
    pub fn nginx_live_link(&self, app: &str) -> PathBuf {
        self.nginx_live_dir().join(app)
    }

    /// nginx's view of one slot, where the live link points while the slot is live: the name
    /// ends in the slot's port (read by the `$milky_live_port` map of the main config) and its
    /// `static` link leads to the static files of the slot's release.
    pub(super) fn nginx_slot_dir(&self, app: &str, slot: Slot, port: u16) -> PathBuf {
        self.nginx_slots_dir().join(format!("{app}.{slot}.{port}"))
    }

    pub(super) fn nginx_slots_dir(&self) -> PathBuf {
        self.nginx_prefix().join("slots")
    }

    pub(super) fn nginx_snippets_dir(&self) -> PathBuf {
        self.nginx_prefix().join("snippets")
    }

    pub(super) fn nginx_pid_file(&self) -> PathBuf {
        self.settings
            .nginx_pid_file
            .clone()
            .unwrap_or_else(|| self.nginx_prefix().join("nginx.pid"))
    }

    pub(super) fn reload_marker(&self) -> PathBuf {
        self.nginx_prefix().join("reload-pending")
    }

    /// The parent of every app's Apache dir.
    pub(super) fn apache_dir(&self) -> PathBuf {
        self.settings.root.join("apache")
    }

    pub(super) fn app_dir(&self, app: &str) -> PathBuf {
        self.apache_dir().join(app)
    }

    /// The config root of one slot.
    pub fn slot_dir(&self, app: &str, slot: Slot) -> PathBuf {
        self.app_dir(app).join(slot.as_str())
    }

    pub fn slot_conf(&self, app: &str, slot: Slot) -> PathBuf {
        self.slot_dir(app, slot).join("httpd.conf")
    }

    pub fn slot_error_log(&self, app: &str, slot: Slot) -> PathBuf {
        self.slot_dir(app, slot).join("logs/error.log")
    }

    pub(super) fn slot_pid_file(&self, app: &str, slot: Slot) -> PathBuf {
        self.slot_dir(app, slot).join("run/httpd.pid")
    }

    /// What the agent recorded when it started the slot ([`super::SlotInfo`]).
    pub(super) fn slot_info_file(&self, app: &str, slot: Slot) -> PathBuf {
        self.slot_dir(app, slot).join("slot.toml")
    }

    pub(super) fn ports_file(&self) -> PathBuf {
        self.settings.root.join("ports.toml")
    }
}

#[cfg(test)]
mod tests {
    use super::super::stack::test_stack;
    use super::super::{WebSettings, WebStack};
    use super::*;

    #[test]
    fn paths_follow_the_documented_layout() {
        let (dir, stack) = test_stack();
        let root = dir.path();
        let cases = [
            (stack.nginx_conf(), "nginx/nginx.conf"),
            (stack.nginx_error_log(), "nginx/logs/error.log"),
            (
                stack.nginx_app_log("shop", "access"),
                "nginx/logs/shop.access.log",
            ),
            (stack.nginx_app_file("shop"), "nginx/apps/shop.conf"),
            (stack.nginx_live_link("shop"), "nginx/live/shop"),
            (
                stack.nginx_slot_dir("shop", Slot::Green, 8102),
                "nginx/slots/shop.green.8102",
            ),
            (stack.nginx_pid_file(), "nginx/nginx.pid"),
            (stack.reload_marker(), "nginx/reload-pending"),
            (
                stack.slot_conf("shop", Slot::Blue),
                "apache/shop/blue/httpd.conf",
            ),
            (
                stack.slot_error_log("shop", Slot::Blue),
                "apache/shop/blue/logs/error.log",
            ),
            (
                stack.slot_pid_file("shop", Slot::Green),
                "apache/shop/green/run/httpd.pid",
            ),
            (
                stack.slot_info_file("shop", Slot::Green),
                "apache/shop/green/slot.toml",
            ),
            (stack.retired_logs_dir(), "retired-logs"),
            (stack.ports_file(), "ports.toml"),
        ];
        for (path, rel) in cases {
            assert_eq!(path, root.join(rel), "{rel}");
        }
    }

    #[test]
    fn new_makes_the_dirs_the_stack_writes_into() {
        let (_dir, stack) = test_stack();
        for dir in [
            stack.nginx_apps_dir(),
            stack.nginx_live_dir(),
            stack.nginx_slots_dir(),
            stack.nginx_snippets_dir(),
            stack.nginx_logs_dir(),
            stack.nginx_prefix().join("tmp"),
            stack.apache_dir(),
        ] {
            assert!(dir.is_dir(), "{}", dir.display());
        }
    }

    #[test]
    fn a_pid_file_from_the_settings_replaces_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = WebSettings::new(dir.path(), "127.0.0.1:9".parse().unwrap());
        settings.nginx_pid_file = Some(PathBuf::from("/run/nginx-milky.pid"));
        let stack = WebStack::new(settings).unwrap();
        assert_eq!(
            stack.nginx_pid_file(),
            PathBuf::from("/run/nginx-milky.pid")
        );
    }
}
