//! The pure half of a pass: what the index wants and what the server runs go in, the steps that
//! make the server match come out. No I/O, so every case is a unit test.

use std::collections::BTreeMap;

use milky_core::{AppName, PackageEntry, Version};

use crate::state_dir::Failure;

/// What serves an app on this server now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// None when configs exist but no release is live (an interrupted first install).
    pub version: Option<Version>,
    /// Whether its Apache slot is up (false after a reboot or a crash: it must be started again).
    pub serving: bool,
    /// The env generation its processes were started with (`cargo milky env`).
    pub env_generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Bring `version` up on the idle slot and switch to it: an install, an upgrade, a switch
    /// back, or a restart of a release that stopped serving.
    Deploy {
        app: AppName,
        version: Version,
        entry: PackageEntry,
    },
    /// Stop serving the app and delete its files.
    Remove { app: AppName },
}

/// A deploy that is not tried this pass, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBack {
    pub app: AppName,
    pub version: Version,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub held_back: Vec<HeldBack>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Steps in a stable order: removals first (they free ports and disk), then deploys by app name.
/// A version that failed under the same index generation waits for its backoff; a new index
/// generation is always tried at once.
pub fn plan(
    wanted: &BTreeMap<AppName, (Version, PackageEntry)>,
    wanted_env: &BTreeMap<AppName, u64>,
    running: &BTreeMap<AppName, Running>,
    failures: &BTreeMap<AppName, Failure>,
    index_etag: Option<&str>,
    now: u64,
) -> Plan {
    let mut result = Plan::default();
    for app in running.keys().filter(|app| !wanted.contains_key(*app)) {
        result.steps.push(Step::Remove { app: app.clone() });
    }
    for (app, (version, entry)) in wanted {
        let current = running.get(app);
        let env = wanted_env.get(app).copied().unwrap_or(0);
        if current.is_some_and(|r| {
            r.version.as_ref() == Some(version) && r.serving && r.env_generation >= env
        }) {
            continue;
        }
        if let Some(failure) = failures.get(app)
            && &failure.version == version
            && failure.index_etag.as_deref() == index_etag
            && now < failure.retry_at
        {
            result.held_back.push(HeldBack {
                app: app.clone(),
                version: version.clone(),
                reason: format!(
                    "failed {} time(s), next try in {}s: {}",
                    failure.attempts,
                    failure.retry_at - now,
                    failure.error
                ),
            });
            continue;
        }
        result.steps.push(Step::Deploy {
            app: app.clone(),
            version: version.clone(),
            entry: entry.clone(),
        });
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(s: &str) -> AppName {
        s.parse().unwrap()
    }
    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }
    fn entry() -> PackageEntry {
        PackageEntry {
            sha256: "a".repeat(64),
            size: 1,
            uploaded: "t".into(),
            signature: None,
            python: None,
        }
    }
    fn wanted(pairs: &[(&str, &str)]) -> BTreeMap<AppName, (Version, PackageEntry)> {
        pairs
            .iter()
            .map(|(a, ver)| (app(a), (v(ver), entry())))
            .collect()
    }
    fn running(pairs: &[(&str, &str, bool)]) -> BTreeMap<AppName, Running> {
        pairs
            .iter()
            .map(|(a, ver, serving)| {
                (
                    app(a),
                    Running {
                        version: Some(v(ver)),
                        serving: *serving,
                        env_generation: 0,
                    },
                )
            })
            .collect()
    }
    fn deploy(a: &str, ver: &str) -> Step {
        Step::Deploy {
            app: app(a),
            version: v(ver),
            entry: entry(),
        }
    }

    #[test]
    fn converged_server_has_nothing_to_do() {
        let plan = plan(
            &wanted(&[("shop", "v1")]),
            &BTreeMap::new(),
            &running(&[("shop", "v1", true)]),
            &BTreeMap::new(),
            None,
            0,
        );
        assert!(plan.is_empty());
    }

    #[test]
    fn install_upgrade_restart_and_remove() {
        let plan = plan(
            &wanted(&[("blog", "v1"), ("shop", "v2"), ("wiki", "v5")]),
            &BTreeMap::new(),
            &running(&[
                ("old", "v9", true),
                ("shop", "v1", true),
                ("wiki", "v5", false),
            ]),
            &BTreeMap::new(),
            None,
            0,
        );
        assert_eq!(
            plan.steps,
            vec![
                Step::Remove { app: app("old") },
                deploy("blog", "v1"),
                deploy("shop", "v2"),
                deploy("wiki", "v5")
            ]
        );
    }

    #[test]
    fn a_new_env_generation_restarts_the_same_version() {
        let want = wanted(&[("shop", "v1")]);
        let run = running(&[("shop", "v1", true)]);
        let env: BTreeMap<AppName, u64> = [(app("shop"), 2)].into();
        assert_eq!(
            plan(&want, &env, &run, &BTreeMap::new(), None, 0).steps,
            vec![deploy("shop", "v1")]
        );
        let mut current = run.clone();
        current.get_mut(&app("shop")).unwrap().env_generation = 2;
        assert!(plan(&want, &env, &current, &BTreeMap::new(), None, 0).is_empty());
    }

    #[test]
    fn a_failed_version_backs_off_until_the_index_changes() {
        let mut failures = BTreeMap::new();
        failures.insert(
            app("shop"),
            Failure {
                version: v("v3"),
                index_etag: Some("e1".into()),
                attempts: 2,
                error: "health check failed".into(),
                failed_at: 100,
                retry_at: 220,
            },
        );
        let want = wanted(&[("shop", "v3")]);
        let run = running(&[("shop", "v2", true)]);
        let held = plan(&want, &BTreeMap::new(), &run, &failures, Some("e1"), 150);
        assert!(held.steps.is_empty());
        assert!(
            held.held_back[0].reason.contains("health check failed"),
            "{:?}",
            held.held_back
        );
        assert_eq!(
            plan(&want, &BTreeMap::new(), &run, &failures, Some("e1"), 220).steps,
            vec![deploy("shop", "v3")]
        );
        assert_eq!(
            plan(&want, &BTreeMap::new(), &run, &failures, Some("e2"), 150).steps,
            vec![deploy("shop", "v3")]
        );
        // Another version is not held back by this one's failure.
        assert_eq!(
            plan(
                &wanted(&[("shop", "v4")]),
                &BTreeMap::new(),
                &run,
                &failures,
                Some("e1"),
                150
            )
            .steps,
            vec![deploy("shop", "v4")]
        );
    }
}
