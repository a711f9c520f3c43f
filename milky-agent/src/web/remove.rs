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
