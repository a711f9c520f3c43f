//! What a pass that was killed leaves behind, finished by the next: the old slot still running
//! beside the live one, `current` naming the old release, and what the agent remembers of apps
//! whose removal was cut short.

use std::collections::BTreeMap;

use milky_core::AppName;

use super::{Agent, Wanted};
use crate::plan::Running;
use crate::state_dir::AgentState;

impl Agent {
    /// Finishes what a pass killed after a switch left behind: the old slot still running
    /// beside the live one, `current` still naming the old release.
    pub(super) fn tidy(&self, app: &AppName) -> anyhow::Result<()> {
        let name = app.as_str();
        let Some(live) = self.web.live_slot(name)? else {
            return Ok(());
        };
        if !self.web.is_running(name, live)? {
            return Ok(());
        }
        if self.web.is_running(name, live.other())? {
            tracing::info!(%app, slot = %live.other(), "stopping the old slot an interrupted switch left running");
            tokio::task::block_in_place(|| self.web.stop_slot(name, live.other()))?;
        }
        if let Some(version) = self.running_version(app)
            && self.releases.current(app).as_ref() != Some(&version)
        {
            self.releases.set_current(app, &version)?;
        }
        Ok(())
    }
}

/// Drops what the agent remembers of apps that are neither wanted nor on this server any more
/// (a removal killed before its state was saved): failures, env generations, env files.
pub(super) fn forget_gone_apps(
    state: &mut AgentState,
    env_files: &super::env_file::EnvFiles,
    wanted: &Wanted,
    running: &BTreeMap<AppName, Running>,
) {
    let here = |app: &AppName| wanted.contains_key(app) || running.contains_key(app);
    state.failures.retain(|app, _| here(app));
    state.live_env.retain(|app, _| here(app));
    env_files.remove_others(here);
}

#[cfg(test)]
mod tests {
    use super::super::env_file::EnvFiles;
    use super::super::test_support::{app, entry};
    use super::*;
    use crate::state_dir::Failure;

    #[test]
    fn apps_neither_wanted_nor_here_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let env_files = EnvFiles::in_state_dir(dir.path());
        let env_dir = dir.path().join("env");
        std::fs::create_dir(&env_dir).unwrap();
        let mut state = AgentState::default();
        for name in ["wanted", "running", "gone"] {
            state.live_env.insert(app(name), 2);
            state.failures.insert(
                app(name),
                Failure {
                    version: "v1".parse().unwrap(),
                    index_etag: None,
                    attempts: 1,
                    error: "boom".into(),
                    failed_at: 0,
                    retry_at: 60,
                },
            );
            std::fs::write(env_dir.join(format!("{name}.json")), "{}").unwrap();
        }
        let wanted: Wanted = BTreeMap::from([(app("wanted"), ("v1".parse().unwrap(), entry()))]);
        let running = BTreeMap::from([(
            app("running"),
            Running {
                version: None,
                serving: false,
                env_generation: 0,
            },
        )]);
        forget_gone_apps(&mut state, &env_files, &wanted, &running);
        let kept = [app("running"), app("wanted")];
        assert_eq!(
            state.live_env.keys().collect::<Vec<_>>(),
            kept.iter().collect::<Vec<_>>()
        );
        assert_eq!(
            state.failures.keys().collect::<Vec<_>>(),
            kept.iter().collect::<Vec<_>>()
        );
        assert!(env_dir.join("wanted.json").exists());
        assert!(env_dir.join("running.json").exists());
        assert!(!env_dir.join("gone.json").exists());
    }
}
