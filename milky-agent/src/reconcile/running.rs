//! What serves each app now, read back from the web stack's files (its app files and live
//! links), never from a separate record that could disagree with them.

use std::collections::BTreeMap;

use milky_core::{AppName, Version};

use super::Agent;
use crate::plan::Running;
use crate::state_dir::AgentState;

impl Agent {
    /// What serves each app now, read back from the web stack's files.
    pub(super) fn running(&self, state: &AgentState) -> anyhow::Result<BTreeMap<AppName, Running>> {
        let mut running = BTreeMap::new();
        for name in self.web.known_apps()? {
            let Ok(app) = name.parse::<AppName>() else {
                continue;
            };
            let version = self.running_version(&app);
            let serving = match self.web.live_slot(app.as_str())? {
                Some(slot) if version.is_some() => self.web.is_running(app.as_str(), slot)?,
                _ => false,
            };
            let env_generation = state.live_env.get(&app).copied().unwrap_or(0);
            running.insert(
                app,
                Running {
                    version,
                    serving,
                    env_generation,
                },
            );
        }
        // Files of an app the web servers no longer know: a removal that was killed half-way.
        for app in self.releases.apps_on_disk() {
            running.entry(app).or_insert(Running {
                version: None,
                serving: false,
                env_generation: 0,
            });
        }
        Ok(running)
    }

    pub(super) fn running_version(&self, app: &AppName) -> Option<Version> {
        let slot = self.web.live_slot(app.as_str()).ok()??;
        let info = self.web.slot_info(app.as_str(), slot).ok()??;
        info.release_dir.file_name()?.to_str()?.parse().ok()
    }
}
