//! Taking an app off this server, in an order that a run cut short anywhere leaves for the next
//! one to finish.

use super::process::{read_dir_if_exists, remove_if_exists};
use super::{Slot, WebError, WebStack, validate};

impl WebStack {
    /// Takes `app` off this server: removes its nginx file and reloads (the front then answers
    /// 404 for its names), stops both slots once drained, removes its configs and frees its ports.
    pub fn remove_app(&self, app: &str) -> Result<(), WebError> {
        validate::app_name(app)?;
        tracing::info!(app, "removing app");
        if self.nginx_app_file(app).exists() {
            self.apply_nginx(app, None, None, false)?;
        }
        crate::crash::point("remove:nginx-done");
        if Slot::ALL
            .iter()
            .any(|s| self.is_running(app, *s).unwrap_or(false))
        {
            self.drain_nginx()?;
        }
        for slot in Slot::ALL {
            self.stop_slot_now(app, slot)?;
        }
        crate::crash::point("remove:slots-stopped");
        self.retire_slot_logs(app)?;
        // nginx's records first: while the Apache dir is left, a run cut short here is seen as
        // an app to remove, and finished.
        remove_if_exists(&self.nginx_live_link(app))?;
        for entry in read_dir_if_exists(&self.nginx_slots_dir())? {
            if entry.file_name().to_str().and_then(|n| n.split('.').next()) == Some(app) {
                fs_err::remove_dir_all(entry.path())?;
            }
        }
        self.prune_snippets(app)?;
        let dir = self.app_dir(app);
        if dir.exists() {
            fs_err::remove_dir_all(&dir)?;
        }
        self.free_slot_ports(app)
    }
}

#[cfg(test)]
mod tests {
    use super::super::stack::test_stack;
    use super::*;

    /// The files of an app with both slots stopped and no nginx file (so no nginx is needed).
    fn leave_files_of(stack: &WebStack, app: &str) {
        for slot in Slot::ALL {
            let port = stack.slot_port(app, slot).unwrap();
            fs_err::create_dir_all(stack.nginx_slot_dir(app, slot, port)).unwrap();
            let log = stack.slot_error_log(app, slot);
            fs_err::create_dir_all(log.parent().unwrap()).unwrap();
            // Only the blue slot has logged anything.
            let text = if slot == Slot::Blue {
                "[error] boom\n"
            } else {
                ""
            };
            fs_err::write(&log, text).unwrap();
        }
        let port = stack.slot_port(app, Slot::Green).unwrap();
        stack
            .point_live_link(app, &stack.nginx_slot_dir(app, Slot::Green, port))
            .unwrap();
        fs_err::write(
            stack.nginx_snippets_dir().join(format!("{app}.abcd.conf")),
            "",
        )
        .unwrap();
    }

    #[test]
    fn removal_takes_every_file_of_the_app_and_nothing_else() {
        let (_dir, stack) = test_stack();
        leave_files_of(&stack, "shop");
        leave_files_of(&stack, "shopping");
        let other_port = stack.slot_port("shopping", Slot::Blue).unwrap();

        stack.remove_app("shop").unwrap();

        assert!(!stack.app_dir("shop").exists());
        assert!(fs_err::symlink_metadata(stack.nginx_live_link("shop")).is_err());
        assert!(!stack.nginx_snippets_dir().join("shop.abcd.conf").exists());
        let slot_dirs: Vec<_> = read_dir_if_exists(&stack.nginx_slots_dir())
            .unwrap()
            .iter()
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| n.starts_with("shop."))
            .collect();
        assert!(slot_dirs.is_empty(), "{slot_dirs:?}");
        let ports = fs_err::read_to_string(stack.ports_file()).unwrap();
        assert!(!ports.contains("shop ="), "{ports}");

        // The blue slot's log is kept for shipping; the empty green one is not.
        let retired: Vec<_> = read_dir_if_exists(&stack.retired_logs_dir())
            .unwrap()
            .iter()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        assert_eq!(retired.len(), 1, "{retired:?}");
        assert!(retired[0].starts_with("shop.blue."), "{retired:?}");

        // The other app, whose name starts the same, keeps everything.
        assert!(stack.app_dir("shopping").exists());
        assert!(fs_err::read_link(stack.nginx_live_link("shopping")).is_ok());
        assert!(
            stack
                .nginx_snippets_dir()
                .join("shopping.abcd.conf")
                .exists()
        );
        assert_eq!(stack.slot_port("shopping", Slot::Blue).unwrap(), other_port);

        // Removing it again finds nothing left to do.
        stack.remove_app("shop").unwrap();
    }
}
