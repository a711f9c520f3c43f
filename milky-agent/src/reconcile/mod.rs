//! One pass of the agent: read the index (a conditional GET), compare with what this server
//! serves, carry out the plan, report. Every step is idempotent and safe to interrupt: what runs
//! is read back from the web stack's files, releases appear by atomic rename, and the live slot
//! is only ever replaced by one that is already up and healthy.
//!
//! The pieces a pass calls: `deploy` (one release up and switched to), `backoff` (when a
//! failed version is tried again), `hook_log` (the hooks' output), `env_file` (an app's secret
//! env on disk), `conditional_writes` (whether the store can choose who runs once hooks),
//! `leftovers` (what a killed pass left behind), `lock` (one pass at a time), `tls` (HTTPS apps' certificates) and `report`
//! (this server's status report).

mod backoff;
mod conditional_writes;
mod deploy;
mod env_file;
mod hook_log;
mod leftovers;
mod lock;
mod report;
mod tls;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use milky_core::package::UnpackLimits;
use milky_core::status::StuckPass;
use milky_core::store::{Fetched, S3Options};
use milky_core::{AppName, HostName, Index, PackageEntry, Store, Version, layout};

use self::deploy::{Deployed, Release};
use self::env_file::EnvFiles;
use self::report::{PassOutcome, StatusReport};
use crate::config::AgentConfig;
use crate::group_state::Gate;
use crate::logship::{self, Shipper};
use crate::plan::{self, Plan, Running, Step};
use crate::release_store::Releases;
use crate::state_dir::{AgentState, StateDir};
use crate::verify::Verifier;
use crate::web::WebStack;

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Another pass held the lock: this one did nothing.
    pub busy: bool,
    /// What changed, one line per app.
    pub changes: Vec<String>,
    /// Releases staged but not switched to yet, and why (e.g. migrations run elsewhere).
    pub waiting: Vec<String>,
    /// What failed; the server keeps serving what it served. One line per app or cause.
    pub errors: Vec<String>,
    /// The store refused this server's credentials (wrong, missing, or not allowed to read the
    /// index): retrying will not help until the settings change.
    pub refused: bool,
}

impl PassReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Each app the index gives this server's group: its version and that version's index entry.
type Wanted = BTreeMap<AppName, (Version, PackageEntry)>;

/// What this pass makes the server run: each app's version and env generation from the index,
/// and the signatures they must carry.
struct Target<'a> {
    versions: &'a Wanted,
    env: &'a BTreeMap<AppName, u64>,
    verifier: &'a Verifier,
}

/// The agent of this server: its settings, the store, the web stack, its releases and state.
pub struct Agent {
    config: AgentConfig,
    host: HostName,
    store: Store,
    web: WebStack,
    releases: Releases,
    state_dir: StateDir,
}

/// Unix seconds.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Cuts the plan of a pass that cannot trust its cached index (most often, the store did not
/// answer) down to what stopped: the version that ran before is brought back, nothing removed.
fn only_restarts(plan: &mut Plan, running: &BTreeMap<AppName, Running>) {
    plan.steps.retain(|step| {
        matches!(step, Step::Deploy { app, version, .. }
            if running.get(app).is_some_and(|r| r.version.as_ref() == Some(version)))
    });
}

impl Agent {
    pub async fn open(config: AgentConfig) -> anyhow::Result<Self> {
        let host = config.host()?;
        let mut store = Store::open(
            &config.store_url()?,
            &S3Options {
                endpoint_url: config.endpoint_url.clone(),
                region: None,
            },
        )
        .await?;
        if config.allow_unsafe_store {
            // Lease read-backs wait for racing writes to land (see `Store::settle`).
            store.allow_unsafe_writes();
        }
        let web = WebStack::new(config.web_settings()).context("setting up the web stack")?;
        let state_dir = StateDir::new(&config.paths.state)?;
        let releases = Releases {
            apps: config.paths.apps.clone(),
            downloads: state_dir.downloads(),
            limits: UnpackLimits {
                max_bytes: config.releases.max_unpacked_bytes,
                max_entries: config.releases.max_entries,
            },
        };
        Ok(Self {
            config,
            host,
            store,
            web,
            releases,
            state_dir,
        })
    }

    /// One pass under the run lock; returns at once when another pass holds it, reporting it
    /// as stuck when it has held it longer than `[limits] stuck_pass`.
    pub async fn pass(&self) -> anyhow::Result<PassReport> {
        let _lock = match lock::take(&self.state_dir.lock_path())? {
            lock::Lock::Held(file) => file,
            lock::Lock::Busy(holder) => return Ok(self.blocked(&holder).await),
        };
        let mut state = self.state_dir.load();
        let result = self.pass_locked(&mut state).await;
        self.state_dir.save(&state)?;
        result
    }

    async fn pass_locked(&self, state: &mut AgentState) -> anyhow::Result<PassReport> {
        let mut errors = Vec::new();
        let verifier = Verifier::load(&self.config.signing);
        match &verifier {
            // Every pass says it on stderr; the log file (shipped) stays quiet on idle passes.
            Verifier::Off => tracing::warn!(
                target: crate::logfile::QUIET,
                "package signatures are not verified: no trusted keys configured ([signing] in agent.toml)"
            ),
            Verifier::Broken(why) => {
                errors.push(format!(
                    "signatures: nothing is installed, the trusted keys cannot be read: {why}"
                ));
            }
            Verifier::On(_) => {}
        }
        let index = self.read_index(state).await;
        let store_answered = index.is_ok();
        let mut refused = false;
        let index = match index {
            Ok(index) => Some(index),
            Err(err) => {
                refused = err.chain().any(|cause| {
                    matches!(
                        cause.downcast_ref::<milky_core::StoreError>(),
                        Some(milky_core::StoreError::AccessDenied { .. })
                    )
                });
                errors.push(format!("index: {err:#}"));
                None
            }
        };
        if let Err(err) = self.releases.clean_removed() {
            tracing::warn!("{err:#}");
        }
        let running = self.running(state)?;
        // Keep serving whatever is on disk, even when the index cannot be read (e.g. at boot);
        // with no apps, the front answers 404.
        if let Err(err) = tokio::task::block_in_place(|| self.web.ensure_nginx()) {
            errors.push(format!("nginx: {err}"));
        }
        let Some((index, cached)) = index.or_else(|| self.cached_index().map(|i| (i, true))) else {
            let outcome = PassOutcome {
                running: &running,
                wanted: &BTreeMap::new(),
                waiting: &BTreeMap::new(),
                errors: &errors,
                signatures: verifier.status(),
                tls: &BTreeMap::new(),
            };
            self.report(state, &outcome).await;
            return Ok(PassReport {
                errors,
                refused,
                ..PassReport::default()
            });
        };
        if cached && errors.is_empty() {
            tracing::debug!("index unchanged");
        }
        let wanted = self.wanted(&index, &mut errors);
        let wanted_env: BTreeMap<AppName, u64> = wanted
            .keys()
            .map(|app| (app.clone(), index.env_generation(&self.config.group, app)))
            .collect();
        let mut plan = plan::plan(
            &wanted,
            &wanted_env,
            &running,
            &state.failures,
            state.index_etag.as_deref(),
            now(),
        );
        // The cached index after an error (most often: the store did not answer) may be out of
        // date: only bring back what stopped, never remove anything.
        if cached && !errors.is_empty() {
            only_restarts(&mut plan, &running);
        }
        let mut app_errors: BTreeMap<AppName, String> = BTreeMap::new();
        for held in &plan.held_back {
            app_errors.insert(
                held.app.clone(),
                format!("{} held back: {}", held.version, held.reason),
            );
        }
        let source = crate::group_state::Source {
            store: &self.store,
            state_dir: &self.state_dir,
            group: &self.config.group,
        };
        let signing = &self.config.signing;
        let gate = Gate::load(&source, state, signing, &verifier, !cached).await;
        gate.apply(
            &mut plan,
            &wanted,
            &wanted_env,
            &running,
            state,
            &mut app_errors,
            &mut errors,
        );
        let mut waiting = BTreeMap::new();
        let target = Target {
            versions: &wanted,
            env: &wanted_env,
            verifier: &verifier,
        };
        let changes = self
            .execute(
                &plan,
                &running,
                &target,
                state,
                &mut app_errors,
                &mut waiting,
            )
            .await;
        // What serves already is checked too, so a server that verifies says when it runs a
        // release it would not install now (e.g. one installed before keys were configured).
        if let Verifier::On(_) = &verifier {
            for (app, (version, entry)) in &wanted {
                if !app_errors.contains_key(app)
                    && self.running_version(app).as_ref() == Some(version)
                    && let Err(err) = verifier.check(
                        app,
                        version,
                        entry,
                        self.releases.unpacked_from(app, version).as_deref(),
                    )
                {
                    app_errors.insert(
                        app.clone(),
                        format!("serves {version}, which it would not install now: {err:#}"),
                    );
                }
            }
        }
        let tls = self.refresh_certificates(&wanted, &mut app_errors).await;
        for (app, wanted_version) in wanted.iter().map(|(a, (v, _))| (a, v)) {
            if let Err(err) = self.tidy(app) {
                tracing::warn!(%app, "{err:#}");
            }
            let live = self.running_version(app);
            let protect: Vec<&Version> = [Some(wanted_version), live.as_ref()]
                .into_iter()
                .flatten()
                .collect();
            if let Err(err) = self
                .releases
                .prune(app, self.config.releases.keep, &protect)
            {
                tracing::warn!(%app, "pruning old releases: {err:#}");
            }
        }
        errors.extend(app_errors.iter().map(|(app, err)| format!("{app}: {err}")));
        let running_after = self.running(state)?;
        leftovers::forget_gone_apps(state, &self.env_files(), &wanted, &running_after);
        let outcome = PassOutcome {
            running: &running_after,
            wanted: &wanted,
            waiting: &waiting,
            errors: &errors,
            signatures: verifier.status(),
            tls: &tls,
        };
        self.report(state, &outcome).await;
        if store_answered {
            self.ship_logs().await;
        }
        Ok(PassReport {
            busy: false,
            changes,
            waiting: waiting
                .iter()
                .map(|(app, why)| format!("{app}: {why}"))
                .collect(),
            errors,
            refused,
        })
    }

    /// The index: fetched if it changed since the last pass (one small conditional request when
    /// it did not), else the cached copy. A broken index is an error; the cache is kept.
    async fn read_index(&self, state: &mut AgentState) -> anyhow::Result<(Index, bool)> {
        let cached = self.state_dir.cached_index();
        let etag = cached.as_ref().and(state.index_etag.as_deref());
        match self.store.get_if_changed(layout::INDEX, etag).await? {
            Fetched::NotModified => {
                let text = cached.expect("a conditional GET is only made with a cache");
                Ok((Index::parse(&text).context("the cached index")?, true))
            }
            Fetched::Changed(object) => {
                let text = String::from_utf8_lossy(&object.bytes).into_owned();
                let (index, text, etag) = match Index::parse(&text) {
                    Ok(index) => (index, text, object.etag),
                    // Torn on its way from a busy store, or broken: the store's reader reads
                    // it again and calls it broken only when two reads agree.
                    Err(_) => match self.store.read_index().await? {
                        Some((index, etag)) => {
                            let text = index.to_string();
                            (index, text, etag)
                        }
                        None => return Err(self.no_index()),
                    },
                };
                self.state_dir.cache_index(&text)?;
                state.index_etag = Some(etag);
                Ok((index, false))
            }
            Fetched::Missing => Err(self.no_index()),
        }
    }

    fn no_index(&self) -> anyhow::Error {
        anyhow!(
            "{} has no {}; nothing was changed on this server",
            self.store.url(),
            layout::INDEX
        )
    }

    fn cached_index(&self) -> Option<Index> {
        Index::parse(&self.state_dir.cached_index()?).ok()
    }

    fn wanted(
        &self,
        index: &Index,
        errors: &mut Vec<String>,
    ) -> BTreeMap<AppName, (Version, PackageEntry)> {
        let mut wanted = BTreeMap::new();
        for (app, version) in index.group(&self.config.group) {
            match index.package(&app, &version) {
                Some(entry) => {
                    wanted.insert(app, (version, entry));
                }
                None => errors.push(format!(
                    "{app}: the index names {version} but lists no such package"
                )),
            }
        }
        wanted
    }

    /// What serves each app now, read back from the web stack's files.
    fn running(&self, state: &AgentState) -> anyhow::Result<BTreeMap<AppName, Running>> {
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

    fn running_version(&self, app: &AppName) -> Option<Version> {
        let slot = self.web.live_slot(app.as_str()).ok()??;
        let info = self.web.slot_info(app.as_str(), slot).ok()??;
        info.release_dir.file_name()?.to_str()?.parse().ok()
    }

    async fn execute(
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

    /// Writes this server's status report when it changed or the heartbeat is due.
    async fn report(&self, state: &mut AgentState, outcome: &PassOutcome<'_>) {
        self.reporter().write(state, outcome).await;
    }

    fn reporter(&self) -> StatusReport<'_> {
        StatusReport {
            store: &self.store,
            group: &self.config.group,
            host: &self.host,
            stuck_marker: self.state_dir.root.join("stuck-pass-reported"),
        }
    }

    /// A pass that found the run lock taken: nothing to do, unless the pass that holds it has
    /// held it for too long. The stuck pass cannot say so itself, so this one does, on stderr
    /// and in the server's status report.
    async fn blocked(&self, holder: &lock::Holder) -> PassReport {
        let limit = self.config.limits.stuck_pass;
        let held = SystemTime::now()
            .duration_since(holder.since)
            .unwrap_or_default();
        let mut report = PassReport {
            busy: true,
            ..PassReport::default()
        };
        if held <= limit {
            return report;
        }
        let stuck = StuckPass {
            since: humantime::format_rfc3339_seconds(holder.since).to_string(),
            pid: holder.pid,
        };
        self.reporter().stuck(&stuck).await;
        let fix = match holder.pid {
            Some(pid) => format!(
                "see what it waits for (`ps -o pid,etime,args --ppid {pid}`) or end it (`kill {pid}`)"
            ),
            None => "its pid is not in the lock file".to_owned(),
        };
        report.errors.push(format!(
            "{}: it has held the run lock ({}) longer than [limits] stuck_pass ({}), so no other pass runs on this server; {fix}",
            stuck.describe(),
            self.state_dir.lock_path().display(),
            humantime::format_duration(limit),
        ));
        report
    }

    /// The env files in this server's state dir.
    fn env_files(&self) -> EnvFiles {
        EnvFiles::in_state_dir(&self.config.paths.state)
    }

    fn remove(&self, app: &AppName) -> anyhow::Result<()> {
        crate::crash::point("remove:start");
        tokio::task::block_in_place(|| self.web.remove_app(app.as_str()))?;
        crate::crash::point("remove:web-done");
        self.releases.remove_app(app)?;
        crate::crash::point("remove:done");
        Ok(())
    }

    /// Ships what is new in this server's logs. Never fails the pass: what the store cannot
    /// take now waits on disk for a later pass.
    async fn ship_logs(&self) {
        if !self.config.logs.ship {
            return;
        }
        let files = match logship::discover(&self.web, &self.config.paths.logs) {
            Ok(files) => files,
            Err(err) => {
                tracing::warn!("finding the logs to ship: {err:#}");
                return;
            }
        };
        let shipper = Shipper {
            store: &self.store,
            group: &self.config.group,
            host: &self.host,
            state_file: self.state_dir.root.join("logs-shipped.json"),
            settings: &self.config.logs,
        };
        let report = match shipper.ship(&files).await {
            Ok(report) => report,
            Err(err) => {
                tracing::warn!("shipping logs: {err:#}");
                return;
            }
        };
        if report.segments > 0 {
            tracing::debug!(
                "shipped {} log segments ({} bytes)",
                report.segments,
                report.bytes
            );
        }
        if report.backlog {
            tracing::info!("more logs to ship than one pass takes; the next pass goes on");
        }
        if let Some(err) = &report.store_error {
            tracing::warn!("logs wait on this server for a later pass: {err}");
        }
        report.warnings.iter().for_each(|w| tracing::warn!("{w}"));
        if report.reopen_nginx
            && let Err(err) = tokio::task::block_in_place(|| self.web.reopen_nginx_logs())
        {
            tracing::warn!("{err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> AppName {
        name.parse().unwrap()
    }

    fn version(name: &str) -> Version {
        name.parse().unwrap()
    }

    #[test]
    fn after_an_error_with_the_cached_index_only_stopped_releases_come_back() {
        let entry = PackageEntry {
            sha256: "00".repeat(32),
            size: 1,
            uploaded: "2026-01-01T00:00:00Z".into(),
            signature: None,
            python: None,
        };
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
