//! Carrying out a pass's plan, step by step: each app deployed (checked against the trusted keys
//! first) or removed, the outcome kept in the agent's state (failures and their backoff), and
//! what changed, waits or failed handed back for the report.

use std::collections::BTreeMap;

use milky_core::AppName;

use super::deploy::{Deployed, Release};
use super::{Agent, Target, backoff, now};
use crate::plan::{Plan, Running, Step};
use crate::state_dir::AgentState;

/// Cuts the plan of a pass that cannot trust its cached index (most often, the store did not
/// answer) down to what stopped: the version that ran before is brought back, nothing removed.
pub(super) fn only_restarts(plan: &mut Plan, running: &BTreeMap<AppName, Running>) {
    plan.steps.retain(|step| {
        matches!(step, Step::Deploy { app, version, .. }
            if running.get(app).is_some_and(|r| r.version.as_ref() == Some(version)))
    });
}

impl Agent {
    pub(super) async fn execute(
        &self,
        plan: &Plan,
        running: &BTreeMap<AppName, Running>,
        target: &Target<'_>,
        state: &mut AgentState,
        app_errors: &mut BTreeMap<AppName, String>,
        waiting: &mut BTreeMap<AppName, String>,
    ) -> Vec<String> {
        let mut changes = Vec::new();
        for step in &plan.steps {
            match step {
                Step::Remove { app } => match self.remove(app) {
                    Ok(()) => {
                        tracing::info!(%app, "removed");
                        state.failures.remove(app);
                        state.live_env.remove(app);
                        self.env_files().remove(app);
                        changes.push(format!("{app}: removed"));
                    }
                    Err(err) => {
                        app_errors.insert(app.clone(), format!("removing: {err:#}"));
                    }
                },
                Step::Deploy {
                    app,
                    version,
                    entry,
                } => {
                    let from = running
                        .get(app)
                        .and_then(|r| r.version.as_ref())
                        .map(ToString::to_string);
                    // Before any download, for a release already on disk as much as a new one.
                    let verified = target.verifier.check(
                        app,
                        version,
                        entry,
                        self.releases.unpacked_from(app, version).as_deref(),
                    );
                    let deployed = match verified {
                        Ok(()) => {
                            let env_generation = target.env.get(app).copied().unwrap_or(0);
                            let release = Release {
                                app,
                                version,
                                entry,
                                env_generation,
                            };
                            self.deploy(release, target, state).await
                        }
                        Err(err) => Err(err),
                    };
                    match deployed {
                        Ok(Deployed::Waiting(why)) => {
                            tracing::info!(%app, %version, "staged; {why}");
                            waiting.insert(app.clone(), why);
                        }
                        Ok(Deployed::Switched) => {
                            state.failures.remove(app);
                            let what = match from {
                                Some(from) if from != version.as_str() => {
                                    format!("{app}: {from} -> {version}")
                                }
                                Some(_) => format!("{app}: {version} restarted"),
                                None => format!("{app}: {version} installed"),
                            };
                            changes.push(what);
                        }
                        Err(err) => {
                            let message = format!("{err:#}");
                            tracing::error!(%app, %version, "deploy failed, the previous release keeps serving: {message}");
                            let failure = backoff::failed(
                                state.failures.get(app),
                                version,
                                state.index_etag.clone(),
                                message.clone(),
                                crate::release_store::is_no_space(&err),
                                now(),
                            );
                            state.failures.insert(app.clone(), failure);
                            app_errors.insert(app.clone(), format!("{version} failed: {message}"));
                        }
                    }
                }
            }
        }
        changes
    }

    /// Takes `app` off this server: its web configs first, then its releases.
    fn remove(&self, app: &AppName) -> anyhow::Result<()> {
        crate::crash::point("remove:start");
        tokio::task::block_in_place(|| self.web.remove_app(app.as_str()))?;
        crate::crash::point("remove:web-done");
        self.releases.remove_app(app)?;
        crate::crash::point("remove:done");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use milky_core::Version;

    use super::super::Wanted;
    use super::super::test_support::{app, entry};
    use super::*;
    use crate::plan;

    fn version(name: &str) -> Version {
        name.parse().unwrap()
    }

    #[test]
    fn after_an_error_with_the_cached_index_only_stopped_releases_come_back() {
        let entry = entry();
        let wanted: Wanted = [("stopped", "v2"), ("upgraded", "v3"), ("new", "v1")]
            .into_iter()
            .map(|(a, v)| (app(a), (version(v), entry.clone())))
            .collect();
        let running = |v: &str, serving: bool| Running {
            version: Some(version(v)),
            serving,
            env_generation: 0,
        };
        let running = BTreeMap::from([
            (app("stopped"), running("v2", false)),
            (app("upgraded"), running("v2", true)),
            (app("unwanted"), running("v1", true)),
        ]);
        let mut plan = plan::plan(
            &wanted,
            &BTreeMap::new(),
            &running,
            &BTreeMap::new(),
            None,
            0,
        );
        assert_eq!(plan.steps.len(), 4, "{plan:#?}");
        only_restarts(&mut plan, &running);
        assert_eq!(
            plan.steps,
            [Step::Deploy {
                app: app("stopped"),
                version: version("v2"),
                entry,
            }]
        );
    }
}
