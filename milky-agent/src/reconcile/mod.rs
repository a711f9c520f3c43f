//! One pass of the agent: read the index (a conditional GET), compare with what this server
//! serves, carry out the plan, report. Every step is idempotent and safe to interrupt: what runs
//! is read back from the web stack's files, releases appear by atomic rename, and the live slot
//! is only ever replaced by one that is already up and healthy.
//!
//! This file is the pass's outline; the pieces it calls: `index` (the index read and the apps it
//! wants here), `running` (what serves now), `execute` (the plan carried out, step by step),
//! `deploy` (one release up and switched to), `backoff` (when a failed version is tried again),
//! `hook_log` (the hooks' output), `env_file` (an app's secret env on disk),
//! `conditional_writes` (whether the store can choose who runs once hooks), `leftovers` (what a
//! killed pass left behind), `upkeep` (after the plan: served releases checked, old ones pruned,
//! logs shipped), `lock` (one pass at a time), `blocked` (a pass that found the lock taken, and
//! a stuck one reported), `tls` (HTTPS apps' certificates) and `report` (this server's status
//! report).

mod backoff;
mod blocked;
mod conditional_writes;
mod deploy;
mod env_file;
mod execute;
mod hook_log;
mod index;
mod leftovers;
mod lock;
mod report;
mod running;
#[cfg(test)]
mod test_support;
mod tls;
mod upkeep;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use milky_core::package::UnpackLimits;
use milky_core::store::S3Options;
use milky_core::{AppName, HostName, PackageEntry, Store, Version};

use self::env_file::EnvFiles;
use self::report::PassOutcome;
use crate::config::AgentConfig;
use crate::group_state::Gate;
use crate::plan;
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
            execute::only_restarts(&mut plan, &running);
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
        self.check_served(&wanted, &verifier, &mut app_errors);
        let tls = self.refresh_certificates(&wanted, &mut app_errors).await;
        self.tidy_releases(&wanted);
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

    /// The env files in this server's state dir.
    fn env_files(&self) -> EnvFiles {
        EnvFiles::in_state_dir(&self.config.paths.state)
    }
}
