//! This server's status report, `groups/<group>/hosts/<host>.toml`: written when it changed
//! or the heartbeat is due, so readers can tell a live server from a dead one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use milky_core::status::{AppStatus, HEARTBEAT, HostStatus, Signatures, StuckPass, TlsStatus};
use milky_core::store::Condition;
use milky_core::{AppName, GroupName, HostName, Store, layout};

use super::{Agent, Wanted, now};
use crate::plan::Running;
use crate::state_dir::AgentState;

/// What a pass saw and did, as its report tells it.
pub(super) struct PassOutcome<'a> {
    /// What serves each app after the pass.
    pub running: &'a BTreeMap<AppName, Running>,
    pub wanted: &'a Wanted,
    pub waiting: &'a BTreeMap<AppName, String>,
    pub errors: &'a [String],
    pub signatures: Signatures,
    /// The HTTPS of apps with `tls`.
    pub tls: &'a BTreeMap<AppName, TlsStatus>,
}

/// Who writes the report, and where.
pub(super) struct StatusReport<'a> {
    pub store: &'a Store,
    pub group: &'a GroupName,
    pub host: &'a HostName,
    /// Left by a blocked pass that reported a stuck one: the next report is written whatever
    /// the agent remembers having written, to take the stuck pass out of it.
    pub stuck_marker: PathBuf,
}

impl StatusReport<'_> {
    /// Writes the report if it changed or the heartbeat is due, and remembers what it wrote.
    /// Best effort: a store that cannot take it must not stop serving.
    pub async fn write(&self, state: &mut AgentState, outcome: &PassOutcome<'_>) {
        let status = self.status(state, outcome, SystemTime::now());
        let digest = status.digest();
        let stuck_reported = self.stuck_marker.exists();
        if !stuck_reported && !due(state, &digest, now()) {
            return;
        }
        let key = layout::host_status(self.group, self.host);
        let body = toml::to_string(&status).unwrap_or_default();
        match self
            .store
            .put(&key, body.into_bytes(), Condition::None)
            .await
        {
            Ok(_) => {
                state.reported_at = Some(now());
                state.reported = Some(digest);
                if stuck_reported {
                    let _ = fs_err::remove_file(&self.stuck_marker);
                }
            }
            Err(err) => tracing::warn!("could not write the status report {key}: {err}"),
        }
    }

    /// Puts `stuck` into the server's last report (or an empty one), from a pass the stuck one
    /// blocks: once, then again at each heartbeat, so the server still reads as alive.
    /// Best effort, as every report.
    pub async fn stuck(&self, stuck: &StuckPass) {
        let key = layout::host_status(self.group, self.host);
        let last = match self.store.get(&key).await {
            Ok(object) => {
                object.and_then(|o| HostStatus::parse(&String::from_utf8_lossy(&o.bytes)).ok())
            }
            Err(err) => {
                tracing::warn!("could not read the status report {key}: {err}");
                return;
            }
        };
        let at = SystemTime::now();
        let fresh = |report: &HostStatus| {
            report
                .age_secs(at)
                .is_some_and(|age| age < HEARTBEAT.as_secs())
        };
        if let Some(last) = &last
            && last.stuck_pass.as_ref() == Some(stuck)
            && fresh(last)
        {
            return;
        }
        let mut report = last.unwrap_or_else(|| HostStatus {
            host: self.host.clone(),
            group: self.group.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            last_pass: String::new(),
            result: String::new(),
            apps: BTreeMap::new(),
            errors: Vec::new(),
            signatures: None,
            stuck_pass: None,
        });
        report.last_pass = humantime::format_rfc3339_seconds(at).to_string();
        report.result = "failed".into();
        report.stuck_pass = Some(stuck.clone());
        let body = toml::to_string(&report).unwrap_or_default();
        if let Err(err) = fs_err::write(&self.stuck_marker, "") {
            tracing::warn!("{err}");
        }
        if let Err(err) = self
            .store
            .put(&key, body.into_bytes(), Condition::None)
            .await
        {
            tracing::warn!("could not write the status report {key}: {err}");
        }
    }

    /// The report of a pass that ended `at`: every app that runs here or is wanted, with what
    /// the agent remembers of its failures and env.
    fn status(&self, state: &AgentState, outcome: &PassOutcome<'_>, at: SystemTime) -> HostStatus {
        let mut apps = BTreeMap::new();
        for app in outcome.running.keys().chain(outcome.wanted.keys()) {
            let serving = outcome
                .running
                .get(app)
                .filter(|r| r.serving)
                .and_then(|r| r.version.clone());
            let failure = state.failures.get(app);
            apps.insert(
                app.clone(),
                AppStatus {
                    healthy: serving.is_some(),
                    serving,
                    wanted: outcome.wanted.get(app).map(|(v, _)| v.clone()),
                    failed: failure.map(|f| f.version.clone()),
                    env_generation: state.live_env.get(app).copied().unwrap_or(0),
                    error: failure.map(|f| f.error.clone()),
                    waiting: outcome.waiting.get(app).cloned(),
                    tls: outcome.tls.get(app).cloned(),
                },
            );
        }
        HostStatus {
            host: self.host.clone(),
            group: self.group.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            last_pass: humantime::format_rfc3339_seconds(at).to_string(),
            result: if outcome.errors.is_empty() {
                "ok".into()
            } else {
                "failed".into()
            },
            apps,
            errors: outcome.errors.to_vec(),
            signatures: Some(outcome.signatures.clone()),
            stuck_pass: None,
        }
    }
}

impl Agent {
    /// Writes this server's status report when it changed or the heartbeat is due.
    pub(super) async fn report(&self, state: &mut AgentState, outcome: &PassOutcome<'_>) {
        self.reporter().write(state, outcome).await;
    }

    pub(super) fn reporter(&self) -> StatusReport<'_> {
        StatusReport {
            store: &self.store,
            group: &self.config.group,
            host: &self.host,
            stuck_marker: self.state_dir.root.join("stuck-pass-reported"),
        }
    }
}

/// Whether a report with `digest` is to be written at `now` (unix seconds): it says something
/// new, or the last one is a heartbeat old.
fn due(state: &AgentState, digest: &str, now: u64) -> bool {
    let heartbeat = state
        .reported_at
        .is_none_or(|at| now >= at + HEARTBEAT.as_secs());
    heartbeat || state.reported.as_deref() != Some(digest)
}

#[cfg(test)]
mod tests {
    use milky_core::status::SignatureCheck;
    use milky_core::store::LocalStore;

    use super::super::test_support::{app, entry};
    use super::*;
    use crate::state_dir::Failure;

    /// A pass's outcome, owned and built up app by app; lent to the reporter as a
    /// [`PassOutcome`] (signatures not verified, no TLS).
    #[derive(Default)]
    struct Pass {
        running: BTreeMap<AppName, Running>,
        wanted: Wanted,
        waiting: BTreeMap<AppName, String>,
        errors: Vec<String>,
    }

    impl Pass {
        /// `name` runs `version` (`None`: configs but no live release), its slot up or not.
        fn running(mut self, name: &str, version: Option<&str>, serving: bool) -> Self {
            let running = Running {
                version: version.map(|v| v.parse().unwrap()),
                serving,
                env_generation: 0,
            };
            self.running.insert(app(name), running);
            self
        }

        fn wanted(mut self, name: &str, version: &str) -> Self {
            self.wanted
                .insert(app(name), (version.parse().unwrap(), entry()));
            self
        }

        fn waiting(mut self, name: &str, why: &str) -> Self {
            self.waiting.insert(app(name), why.to_owned());
            self
        }

        fn error(mut self, error: &str) -> Self {
            self.errors.push(error.to_owned());
            self
        }

        fn outcome(&self) -> PassOutcome<'_> {
            PassOutcome {
                running: &self.running,
                wanted: &self.wanted,
                waiting: &self.waiting,
                errors: &self.errors,
                signatures: not_verifying(),
                tls: &NO_TLS,
            }
        }
    }

    static NO_TLS: BTreeMap<AppName, TlsStatus> = BTreeMap::new();

    fn not_verifying() -> Signatures {
        Signatures {
            check: SignatureCheck::NotVerifying,
            trusted_keys: Vec::new(),
            note: None,
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        group: GroupName,
        host: HostName,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            Fixture {
                store: Store::Local(LocalStore::open(dir.path()).unwrap()),
                _dir: dir,
                group: "web".parse().unwrap(),
                host: "web-1".parse().unwrap(),
            }
        }

        fn reporter(&self) -> StatusReport<'_> {
            StatusReport {
                store: &self.store,
                group: &self.group,
                host: &self.host,
                stuck_marker: self._dir.path().join("stuck-pass-reported"),
            }
        }

        async fn read(&self) -> Option<HostStatus> {
            let key = layout::host_status(&self.group, &self.host);
            let object = self.store.get(&key).await.unwrap()?;
            Some(HostStatus::parse(std::str::from_utf8(&object.bytes).unwrap()).unwrap())
        }

        async fn forget_written(&self) {
            let key = layout::host_status(&self.group, &self.host);
            self.store.delete(&key).await.unwrap();
        }
    }

    #[test]
    fn the_report_says_what_serves_what_is_wanted_and_what_failed() {
        let fixture = Fixture::new();
        let mut state = AgentState::default();
        state.live_env.insert(app("shop"), 3);
        state.failures.insert(
            app("shop"),
            Failure {
                version: "v3".parse().unwrap(),
                index_etag: None,
                attempts: 2,
                error: "health check failed".into(),
                failed_at: 10,
                retry_at: 130,
            },
        );
        let pass = Pass::default()
            .running("shop", Some("v2"), true)
            .running("old", Some("v1"), false)
            .wanted("shop", "v3")
            .wanted("blog", "v9")
            .waiting("blog", "migrations run on web-2")
            .error("shop: v3 failed: health check failed");
        let outcome = pass.outcome();
        let at = humantime::parse_rfc3339("2026-03-04T05:06:07Z").unwrap();
        let status = fixture.reporter().status(&state, &outcome, at);
        assert_eq!(status.host, fixture.host);
        assert_eq!(status.group, fixture.group);
        assert_eq!(status.last_pass, "2026-03-04T05:06:07Z");
        assert_eq!(status.result, "failed");
        assert_eq!(status.errors, pass.errors);
        assert_eq!(status.signatures, Some(not_verifying()));
        assert_eq!(
            status.apps,
            BTreeMap::from([
                (
                    app("shop"),
                    AppStatus {
                        serving: Some("v2".parse().unwrap()),
                        wanted: Some("v3".parse().unwrap()),
                        healthy: true,
                        failed: Some("v3".parse().unwrap()),
                        error: Some("health check failed".into()),
                        env_generation: 3,
                        waiting: None,
                        tls: None,
                    }
                ),
                (
                    app("old"),
                    AppStatus {
                        serving: None,
                        wanted: None,
                        healthy: false,
                        ..AppStatus::default()
                    }
                ),
                (
                    app("blog"),
                    AppStatus {
                        wanted: Some("v9".parse().unwrap()),
                        waiting: Some("migrations run on web-2".into()),
                        ..AppStatus::default()
                    }
                ),
            ])
        );
        let quiet = PassOutcome {
            errors: &[],
            ..outcome
        };
        assert_eq!(fixture.reporter().status(&state, &quiet, at).result, "ok");
    }

    #[tokio::test]
    async fn an_unchanged_report_is_written_again_only_at_the_heartbeat() {
        let fixture = Fixture::new();
        let mut state = AgentState::default();
        let pass = Pass::default()
            .running("shop", Some("v2"), true)
            .wanted("shop", "v2");
        let outcome = pass.outcome();
        fixture.reporter().write(&mut state, &outcome).await;
        let written = fixture.read().await.expect("the first report is written");
        assert_eq!(
            written.apps[&app("shop")].serving,
            Some("v2".parse().unwrap())
        );
        assert!(state.reported_at.is_some());
        assert_eq!(state.reported.as_deref(), Some(written.digest().as_str()));

        fixture.forget_written().await;
        fixture.reporter().write(&mut state, &outcome).await;
        assert_eq!(fixture.read().await, None, "nothing new, no heartbeat due");

        let errors = vec!["nginx: down".to_owned()];
        let failed = PassOutcome {
            errors: &errors,
            ..outcome
        };
        fixture.reporter().write(&mut state, &failed).await;
        let written = fixture.read().await.expect("a changed report is written");
        assert_eq!(
            (written.result.as_str(), written.errors),
            ("failed", errors.clone())
        );

        fixture.forget_written().await;
        state.reported_at = state.reported_at.map(|at| at - HEARTBEAT.as_secs());
        fixture.reporter().write(&mut state, &failed).await;
        assert!(fixture.read().await.is_some(), "the heartbeat is due");
    }

    #[tokio::test]
    async fn a_stuck_pass_is_reported_until_the_next_pass_reports() {
        let fixture = Fixture::new();
        let mut state = AgentState::default();
        let pass = Pass::default()
            .running("shop", Some("v2"), true)
            .wanted("shop", "v2");
        let outcome = pass.outcome();
        fixture.reporter().write(&mut state, &outcome).await;
        let stuck = StuckPass {
            since: "2026-01-01T00:00:00Z".into(),
            pid: Some(77),
        };
        fixture.reporter().stuck(&stuck).await;
        let written = fixture.read().await.unwrap();
        assert_eq!(written.stuck_pass, Some(stuck));
        assert_eq!(written.result, "failed");
        assert_eq!(
            written.apps[&app("shop")].serving,
            Some("v2".parse().unwrap()),
            "the rest is the stuck pass's last report"
        );
        // The stuck pass ends: its report says nothing new to it, and is written all the same.
        fixture.reporter().write(&mut state, &outcome).await;
        let written = fixture.read().await.unwrap();
        assert_eq!((written.stuck_pass, written.result.as_str()), (None, "ok"));
        assert!(!fixture.reporter().stuck_marker.exists());
    }

    #[test]
    fn due_when_new_or_a_heartbeat_old() {
        let heartbeat = HEARTBEAT.as_secs();
        let never = AgentState::default();
        assert!(due(&never, "a", 1000));
        let reported = AgentState {
            reported_at: Some(1000),
            reported: Some("a".into()),
            ..AgentState::default()
        };
        assert!(!due(&reported, "a", 1000));
        assert!(!due(&reported, "a", 1000 + heartbeat - 1));
        assert!(due(&reported, "a", 1000 + heartbeat));
        assert!(due(&reported, "b", 1001));
    }
}
