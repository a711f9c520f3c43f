//! One pass of the agent: read the index (a conditional GET), compare with what this server
//! serves, carry out the plan, report. Every step is idempotent and safe to interrupt: what runs
//! is read back from the web stack's files, releases appear by atomic rename, and the live slot
//! is only ever replaced by one that is already up and healthy.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use milky_core::package::{Manifest, UnpackLimits};
use milky_core::store::{Condition, Fetched, S3Options};
use milky_core::{AppName, HostName, Index, PackageEntry, Store, Version, layout};

use crate::config::AgentConfig;
use crate::logfile::BoundedLog;
use crate::logship::{self, Shipper};
use crate::once::{Once, OnceRunner};
use crate::plan::{self, Plan, Running, Step};
use crate::release_store::Releases;
use crate::state::{AgentState, ConditionalWrites, Failure, StateDir};
use crate::verify::Verifier;
use crate::web::{
    AppSite, HookRun, HookUser, ReleaseSetup, Slot, WebError, WebStack, prepare_release, run_hooks,
};
use milky_core::status::{AppStatus, HEARTBEAT, HostStatus, Signatures};

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
}

impl PassReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// What this pass makes the server run: each app's version and env generation from the index,
/// and the signatures they must carry.
struct Target<'a> {
    versions: &'a BTreeMap<AppName, (Version, PackageEntry)>,
    env: &'a BTreeMap<AppName, u64>,
    verifier: &'a Verifier,
}

/// What one deploy brings up: a version's index entry, with the env generation the index names.
struct Release<'a> {
    app: &'a AppName,
    version: &'a Version,
    entry: &'a PackageEntry,
    env_generation: u64,
}

/// How one deploy ended, when it did not fail.
enum Deployed {
    Switched,
    Waiting(String),
}

pub struct Agent {
    config: AgentConfig,
    host: HostName,
    store: Store,
    web: WebStack,
    releases: Releases,
    state_dir: StateDir,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Agent {
    pub async fn open(config: AgentConfig) -> anyhow::Result<Self> {
        let host = config.host()?;
        let store = Store::open(
            &config.store_url()?,
            &S3Options {
                endpoint_url: config.endpoint_url.clone(),
                region: None,
            },
        )
        .await?;
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

    /// One pass under the run lock; returns at once when another pass holds it.
    pub async fn pass(&self) -> anyhow::Result<PassReport> {
        let lock_path = self.state_dir.lock_path();
        let lock = fs_err::File::create(&lock_path)?;
        match lock.file().try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Ok(PassReport {
                    busy: true,
                    ..PassReport::default()
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(anyhow!("locking {}: {e}", lock_path.display()));
            }
        }
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
        let index = match index {
            Ok(index) => Some(index),
            Err(err) => {
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
            self.report(
                state,
                &running,
                &BTreeMap::new(),
                &BTreeMap::new(),
                &errors,
                verifier.status(),
            )
            .await;
            return Ok(PassReport {
                errors,
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
        let etag = state.index_etag.clone();
        let plan = if errors.is_empty() || !cached {
            plan::plan(
                &wanted,
                &wanted_env,
                &running,
                &state.failures,
                etag.as_deref(),
                now(),
            )
        } else {
            // The store is unreachable: only bring back what stopped, never remove anything.
            let mut plan = plan::plan(
                &wanted,
                &wanted_env,
                &running,
                &state.failures,
                etag.as_deref(),
                now(),
            );
            plan.steps.retain(|s| matches!(s, Step::Deploy { app, version, .. } if running.get(app).is_some_and(|r| r.version.as_ref() == Some(version))));
            plan
        };
        let mut app_errors: BTreeMap<AppName, String> = BTreeMap::new();
        for held in &plan.held_back {
            app_errors.insert(
                held.app.clone(),
                format!("{} held back: {}", held.version, held.reason),
            );
        }
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
        self.forget_gone_apps(state, &wanted, &running_after);
        self.report(
            state,
            &running_after,
            &wanted,
            &waiting,
            &errors,
            verifier.status(),
        )
        .await;
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
                let index = Index::parse(&text)
                    .with_context(|| format!("{} in {}", layout::INDEX, self.store.url()))?;
                self.state_dir.cache_index(&text)?;
                state.index_etag = Some(object.etag);
                Ok((index, false))
            }
            Fetched::Missing => Err(anyhow!(
                "{} has no {}; nothing was changed on this server",
                self.store.url(),
                layout::INDEX
            )),
        }
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
                        let _ = std::fs::remove_file(
                            self.config
                                .paths
                                .state
                                .join("env")
                                .join(format!("{app}.json")),
                        );
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
                            let attempts = state
                                .failures
                                .get(app)
                                .filter(|f| &f.version == version)
                                .map_or(0, |f| f.attempts)
                                + 1;
                            let at = now();
                            // A full disk is this server's problem, not the release's: try
                            // again next pass (the report says why meanwhile).
                            let retry_at = if crate::release_store::is_no_space(&err) {
                                at
                            } else {
                                at + Failure::backoff_secs(attempts)
                            };
                            state.failures.insert(
                                app.clone(),
                                Failure {
                                    version: version.clone(),
                                    index_etag: state.index_etag.clone(),
                                    attempts,
                                    error: message.clone(),
                                    failed_at: at,
                                    retry_at,
                                },
                            );
                            app_errors.insert(app.clone(), format!("{version} failed: {message}"));
                        }
                    }
                }
            }
        }
        changes
    }

    /// Brings `version` up on the idle slot, checks it, points nginx at it, stops the old slot.
    async fn deploy(
        &self,
        release: Release<'_>,
        target: &Target<'_>,
        state: &mut AgentState,
    ) -> anyhow::Result<Deployed> {
        let Release {
            app,
            version,
            entry,
            env_generation,
        } = release;
        let (release_dir, manifest, downloaded) = self
            .releases
            .fetch(&self.store, app, version, entry)
            .await?;
        if downloaded {
            tracing::info!(%app, %version, "unpacked into {}", release_dir.display());
        }
        // Decided once this release's manifest is on disk: before, an app with server names
        // could be taken for the default server.
        let default_server = self.default_app(target.versions).as_ref() == Some(app);
        let mut site = self.site(&manifest, &release_dir, default_server)?;
        let mut setup = ReleaseSetup::new(&release_dir);
        setup.python = self.config.releases.python.clone();
        setup.hooks = manifest.hooks.server.clone();
        setup.env = site.env.clone();
        setup.user = Some(HookUser::lookup(self.config.hook_user())?);
        setup.home = Some(self.releases.app_dir(app).join("home"));
        setup.static_dir = manifest.app.static_dir.as_ref().map(Into::into);
        setup.pip_home = Some(self.state_dir.root.clone());
        if env_generation > 0 {
            let (env, _) = milky_core::env::read(&self.store, &self.config.group, app)
                .await
                .with_context(|| format!("reading the env of {app}"))?;
            if env.generation < env_generation {
                bail!(
                    "the env of {app} is at generation {}, the index names {env_generation}; trying again next pass",
                    env.generation
                );
            }
            target.verifier.check_env(&self.config.group, app, &env)?;
            site.secret_env_file = Some(self.write_secret_env(app, &env.vars)?);
            setup.env.extend(env.vars);
        }
        let prepared = tokio::task::block_in_place(|| {
            let prepared = prepare_release(&setup);
            match &prepared {
                Ok(prepared) => self.hooks_log(app, version, &prepared.hooks),
                Err(err) => self.hooks_log_failure(app, version, err),
            }
            prepared
        })
        .with_context(|| format!("preparing {app} {version}"))?;
        for hook in &prepared.hooks {
            tracing::info!(%app, %version, "hook `{}` ran in {:?}", hook.hook, hook.duration);
        }
        crate::crash::point("deploy:prepared");
        let once = &manifest.hooks.once;
        if !once.is_empty() {
            self.check_conditional_writes(state).await?;
            let runner = OnceRunner {
                store: &self.store,
                group: &self.config.group,
                host: &self.host,
                ttl: self.config.releases.once_lease,
                wait: self.config.releases.once_wait,
            };
            match runner
                .ensure(app, version, once, || {
                    let runs = run_hooks(&setup, once);
                    match &runs {
                        Ok(runs) => self.hooks_log(app, version, runs),
                        Err(err) => self.hooks_log_failure(app, version, err),
                    }
                    runs
                })
                .await?
            {
                Once::Done => {}
                Once::Waiting(why) => return Ok(Deployed::Waiting(why)),
            }
        }
        let live = self.web.live_slot(app.as_str())?;
        let live_running = live
            .map(|slot| self.web.is_running(app.as_str(), slot))
            .transpose()?
            .unwrap_or(false);
        let target = match live {
            Some(slot) if live_running => slot.other(),
            Some(slot) => slot,
            None => Slot::Blue,
        };
        tokio::task::block_in_place(|| -> anyhow::Result<()> {
            self.web.start_slot(&site, target)?;
            crate::crash::point("deploy:slot-started");
            let checked = self
                .web
                .health_check(
                    app.as_str(),
                    target,
                    &manifest.app.health,
                    Some(version.as_str()),
                )
                .and_then(|_| {
                    crate::crash::point("deploy:healthy");
                    self.web.switch_nginx(&site, target)
                });
            if let Err(err) = checked {
                // The old slot never stopped serving; take the failed one down again.
                if self.web.live_slot(app.as_str()).ok().flatten() != Some(target) {
                    let _ = self.web.stop_slot(app.as_str(), target);
                }
                return Err(err.into());
            }
            crate::crash::point("deploy:switched");
            self.releases.set_current(app, version)?;
            if let Some(old) = live
                && old != target
                && live_running
            {
                self.web.stop_slot(app.as_str(), old)?;
            }
            Ok(())
        })?;
        crate::crash::point("deploy:done");
        state.live_env.insert(app.clone(), env_generation);
        Ok(Deployed::Switched)
    }

    /// Appends the output of hooks to `[paths] logs`/hooks/<app>.log (shipped with the other
    /// logs), each line stamped and tagged with the release and the hook.
    fn hooks_log(&self, app: &AppName, version: &Version, runs: &[HookRun]) {
        let mut text = String::new();
        let stamp = humantime::format_rfc3339_micros(SystemTime::now());
        for run in runs {
            let tag = format!("{stamp} {app} {version} [{}]", run.hook);
            for line in run.output.lines().filter(|l| !l.trim().is_empty()) {
                text.push_str(&format!("{tag} {line}\n"));
            }
            text.push_str(&format!("{tag} finished in {:.1?}\n", run.duration));
        }
        self.append_hooks_log(app, &text);
    }

    fn hooks_log_failure(&self, app: &AppName, version: &Version, err: &WebError) {
        let stamp = humantime::format_rfc3339_micros(SystemTime::now());
        let text: String = err
            .to_string()
            .lines()
            .map(|line| format!("{stamp} {app} {version} [failed] {line}\n"))
            .collect();
        self.append_hooks_log(app, &text);
    }

    fn append_hooks_log(&self, app: &AppName, text: &str) {
        let path = logship::hooks_dir(&self.config.paths.logs).join(format!("{app}.log"));
        let log = BoundedLog::new(&path, self.config.logs.local_max_bytes);
        if let Err(err) = log.append(text.as_bytes()) {
            tracing::warn!("writing {}: {err}", path.display());
        }
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

    /// The app nginx answers for unknown host names: the first wanted app (by name) without
    /// server names. An app whose release is not on disk yet may be it; apps are deployed in
    /// name order, so every app before the one being deployed is known.
    fn default_app(&self, wanted: &BTreeMap<AppName, (Version, PackageEntry)>) -> Option<AppName> {
        wanted
            .iter()
            .find(|(app, (version, _))| {
                self.releases
                    .manifest(app, version)
                    .is_none_or(|m| m.app.server_names.is_empty())
            })
            .map(|(app, _)| app.clone())
    }

    /// Writes an app's env for its processes: JSON, mode 0600, owned by Apache's user, so neither
    /// nginx's workers nor other users can read it.
    fn write_secret_env(
        &self,
        app: &AppName,
        vars: &BTreeMap<String, String>,
    ) -> anyhow::Result<std::path::PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.config.paths.state.join("env");
        fs_err::create_dir_all(&dir)?;
        fs_err::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
        let (uid, gid) = account_ids(&self.config.web.apache_user, &self.config.web.apache_group)?;
        let path = dir.join(format!("{app}.json"));
        let mut temp = tempfile::NamedTempFile::new_in(&dir)?;
        std::io::Write::write_all(&mut temp, serde_json::to_string(vars)?.as_bytes())?;
        std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o600))?;
        std::os::unix::fs::chown(temp.path(), Some(uid), Some(gid)).with_context(|| {
            format!(
                "giving {} to {}",
                temp.path().display(),
                self.config.web.apache_user
            )
        })?;
        temp.persist(&path)
            .with_context(|| format!("replacing {}", path.display()))?;
        Ok(path)
    }

    /// Once hooks need a store that refuses a second create and a stale replace; probed once and
    /// remembered. On a store that ignores them, no server runs once hooks at all.
    async fn check_conditional_writes(&self, state: &mut AgentState) -> anyhow::Result<()> {
        let url = self.store.url();
        let known = state.conditional_writes.as_ref().filter(|c| c.store == url);
        let broken = match known {
            Some(known) => known.broken.clone(),
            None => {
                let prefix = format!("groups/{}/once", self.config.group);
                let verdict =
                    milky_core::once::probe_conditional_writes(&self.store, &prefix).await?;
                let broken = verdict.err();
                state.conditional_writes = Some(ConditionalWrites {
                    store: url.clone(),
                    broken: broken.clone(),
                });
                broken
            }
        };
        match broken {
            None => Ok(()),
            Some(why) => Err(anyhow!(
                "{url} does not honour conditional writes ({why}), so one server per group cannot be chosen to run once hooks (migrations); refusing to run them. Use a store that supports If-None-Match/If-Match on PUT"
            )),
        }
    }

    fn site(
        &self,
        manifest: &Manifest,
        release_dir: &Path,
        default_server: bool,
    ) -> anyhow::Result<AppSite> {
        let app = &manifest.app;
        let (module, callable) = app
            .wsgi
            .split_once(':')
            .context("wsgi is module:callable")?;
        let server_name = app
            .server_names
            .first()
            .cloned()
            .unwrap_or_else(|| app.name.to_string());
        let mut site = AppSite::new(
            app.name.as_str(),
            server_name,
            release_dir,
            format!("{}.py", module.replace('.', "/")),
        );
        // The server's own settings first; the package's and MilkyWhite's below win.
        site.env.extend(self.config.env.clone());
        site.server_names = if app.server_names.is_empty() {
            vec![app.name.to_string()]
        } else {
            app.server_names.clone()
        };
        site.default_server = default_server;
        site.wsgi_callable = callable.to_owned();
        site.static_dir = app.static_dir.as_ref().map(Into::into);
        site.nginx_snippet = manifest.snippets.nginx.as_ref().map(Into::into);
        site.apache_snippet = manifest.snippets.apache.as_ref().map(Into::into);
        if let Some(settings) = &app.settings {
            site.env
                .insert("DJANGO_SETTINGS_MODULE".into(), settings.clone());
        }
        site.env.insert("MILKY_APP".into(), app.name.to_string());
        site.env
            .insert("MILKY_VERSION".into(), manifest.release.version.to_string());
        site.env.insert("MILKY_HOST".into(), self.host.to_string());
        site.env
            .insert("MILKY_GROUP".into(), self.config.group.to_string());
        Ok(site)
    }

    fn remove(&self, app: &AppName) -> anyhow::Result<()> {
        crate::crash::point("remove:start");
        tokio::task::block_in_place(|| self.web.remove_app(app.as_str()))?;
        crate::crash::point("remove:web-done");
        self.releases.remove_app(app)?;
        crate::crash::point("remove:done");
        Ok(())
    }

    /// Finishes what a pass killed after a switch left behind: the old slot still running
    /// beside the live one, `current` still naming the old release.
    fn tidy(&self, app: &AppName) -> anyhow::Result<()> {
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

    /// Drops what the agent remembers of apps that are neither wanted nor on this server any
    /// more (a removal killed before its state was saved): failures, env generations, env files.
    fn forget_gone_apps(
        &self,
        state: &mut AgentState,
        wanted: &BTreeMap<AppName, (Version, PackageEntry)>,
        running: &BTreeMap<AppName, Running>,
    ) {
        let here = |app: &AppName| wanted.contains_key(app) || running.contains_key(app);
        state.failures.retain(|app, _| here(app));
        state.live_env.retain(|app, _| here(app));
        let dir = self.config.paths.state.join("env");
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let gone = match name.strip_suffix(".json") {
                Some(app) => app.parse::<AppName>().is_ok_and(|app| !here(&app)),
                // A temp file of a write that was killed.
                None => name.starts_with(".tmp"),
            };
            if gone && let Err(err) = std::fs::remove_file(entry.path()) {
                tracing::warn!("deleting {}: {err}", entry.path().display());
            }
        }
    }

    /// Writes this server's status report when it changed or the heartbeat is due. Best effort:
    /// a store that cannot take it must not stop serving.
    async fn report(
        &self,
        state: &mut AgentState,
        running: &BTreeMap<AppName, Running>,
        wanted: &BTreeMap<AppName, (Version, PackageEntry)>,
        waiting: &BTreeMap<AppName, String>,
        errors: &[String],
        signatures: Signatures,
    ) {
        let mut apps = BTreeMap::new();
        for app in running.keys().chain(wanted.keys()) {
            let serving = running
                .get(app)
                .filter(|r| r.serving)
                .and_then(|r| r.version.clone());
            let failure = state.failures.get(app);
            apps.insert(
                app.clone(),
                AppStatus {
                    healthy: serving.is_some(),
                    serving,
                    wanted: wanted.get(app).map(|(v, _)| v.clone()),
                    failed: failure.map(|f| f.version.clone()),
                    env_generation: state.live_env.get(app).copied().unwrap_or(0),
                    error: failure.map(|f| f.error.clone()),
                    waiting: waiting.get(app).cloned(),
                },
            );
        }
        let status = HostStatus {
            host: self.host.clone(),
            group: self.config.group.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            last_pass: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            result: if errors.is_empty() {
                "ok".into()
            } else {
                "failed".into()
            },
            apps,
            errors: errors.to_vec(),
            signatures: Some(signatures),
        };
        let digest = status.digest();
        let due = state
            .reported_at
            .is_none_or(|at| now() >= at + HEARTBEAT.as_secs());
        if !due && state.reported.as_deref() == Some(digest.as_str()) {
            return;
        }
        let key = layout::host_status(&self.config.group, &self.host);
        let body = toml::to_string(&status).unwrap_or_default();
        match self
            .store
            .put(&key, body.into_bytes(), Condition::None)
            .await
        {
            Ok(_) => {
                state.reported_at = Some(now());
                state.reported = Some(digest);
            }
            Err(err) => tracing::warn!("could not write the status report {key}: {err}"),
        }
    }
}

/// The uid of `user` and gid of `group`, from /etc/passwd and /etc/group.
fn account_ids(user: &str, group: &str) -> anyhow::Result<(u32, u32)> {
    let find = |file: &str, name: &str| -> anyhow::Result<u32> {
        let text = fs_err::read_to_string(file)?;
        text.lines()
            .filter_map(|line| {
                let mut fields = line.split(':');
                let entry = fields.next()?;
                (entry == name).then(|| fields.nth(1)?.parse().ok())?
            })
            .next()
            .with_context(|| format!("no {name:?} in {file}"))
    };
    Ok((find("/etc/passwd", user)?, find("/etc/group", group)?))
}
