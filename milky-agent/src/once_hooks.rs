//! The agent's side of one-time tasks (see `milky_core::once_hooks`): take the lease and run the
//! release's `once` hooks (once per group and version) or its `first` hooks (once per group
//! ever), or wait a bounded time for the server that holds the lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use milky_core::layout;
use milky_core::once_hooks::{Lease, OnceResult};
use milky_core::store::{Condition, StoreError};
use milky_core::{AppName, GroupName, HostName, Store, Version};
use tokio::sync::Mutex;

use crate::web::{HookRun, WebError};

/// What became of the once hooks of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Once {
    /// They ran successfully (here or on another server): switch.
    Done,
    /// Another server runs them; stay staged and look again next pass.
    Waiting(String),
}

/// Which one-time hooks: the folder of their lease and result in the store, and their name in
/// messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnceKind {
    /// `[hooks] once`: once per group and version (migrations).
    PerVersion,
    /// `[hooks] first`: once per group ever; each version that tries has a folder of its own, so
    /// a failed attempt does not block the next version's.
    FirstDeploy,
}

impl OnceKind {
    pub fn label(self) -> &'static str {
        match self {
            OnceKind::PerVersion => "once hooks",
            OnceKind::FirstDeploy => "first-deploy hooks",
        }
    }

    /// The lease's name in messages.
    fn lease(self) -> &'static str {
        match self {
            OnceKind::PerVersion => "once-hooks lease",
            OnceKind::FirstDeploy => "first-deploy-hooks lease",
        }
    }

    fn folder(self, group: &GroupName, app: &AppName, version: &Version) -> String {
        match self {
            OnceKind::PerVersion => layout::once_hooks(group, app, version),
            OnceKind::FirstDeploy => layout::first_hooks(group, app, version),
        }
    }
}

pub struct OnceRunner<'a> {
    pub store: &'a Store,
    pub group: &'a GroupName,
    pub host: &'a HostName,
    /// How long a lease lasts without renewal: a dead leader blocks the group this long.
    pub ttl: Duration,
    /// How long a pass waits for another server's result before it moves on.
    pub wait: Duration,
    /// How long each hook may run (`[limits] once_hooks`): the lease is not renewed past the
    /// hooks' limits, so a leader whose hooks hang cannot hold its group for ever.
    pub hook_limit: Duration,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The once-hooks lease this server took: its key, and the ETag it was written with.
struct HeldLease<'a> {
    key: &'a str,
    etag: String,
}

impl OnceRunner<'_> {
    /// Makes sure the `kind` hooks of `app` `version` ran successfully in this group, running
    /// them here (through `run`) if this server wins the lease. A failed result is an error, for
    /// every server of the group: nobody switches.
    pub async fn ensure(
        &self,
        kind: OnceKind,
        app: &AppName,
        version: &Version,
        hooks: &[String],
        run: impl FnOnce() -> Result<Vec<HookRun>, WebError>,
    ) -> anyhow::Result<Once> {
        let folder = kind.folder(self.group, app, version);
        let (lease_key, result_key) = (layout::lease_in(&folder), layout::result_in(&folder));
        let deadline = Instant::now() + self.wait;
        let mut run = Some(run);
        loop {
            if let Some(result) = self.result(&result_key).await? {
                return outcome(kind, app, version, &result);
            }
            let lease = self.store.get(&lease_key).await?;
            let taken = match &lease {
                None => self.take(&lease_key, Condition::IfAbsent).await?,
                Some(object) => {
                    let current = Lease::parse(&String::from_utf8_lossy(&object.bytes))
                        .map_err(|e| anyhow::anyhow!("{lease_key} is unreadable: {e}"))?;
                    // Our own lease means this server died while leading: it carries on.
                    if current.holder == *self.host || current.expires <= unix_now() {
                        if current.holder != *self.host {
                            tracing::warn!(%app, %version, "taking over the {} of {}, which expired", kind.lease(), current.holder);
                        }
                        self.take(&lease_key, Condition::IfMatch(object.etag.clone()))
                            .await?
                    } else {
                        None
                    }
                }
            };
            if let Some(etag) = taken {
                let run = run.take().expect("this server leads at most once per call");
                let held = HeldLease {
                    key: &lease_key,
                    etag,
                };
                return self
                    .lead(kind, app, version, hooks, held, &result_key, run)
                    .await;
            }
            if Instant::now() >= deadline {
                let holder = lease
                    .and_then(|o| Lease::parse(&String::from_utf8_lossy(&o.bytes)).ok())
                    .map(|l| l.holder.to_string())
                    .unwrap_or_else(|| "another server".into());
                return Ok(Once::Waiting(format!(
                    "waiting for {holder} to run the {} of {version}",
                    kind.label()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs an app's first-deploy hooks unless they already ran in this group (its done marker
    /// is there), then writes the marker: from then on no server runs them again, whichever
    /// version it deploys.
    pub async fn ensure_first(
        &self,
        app: &AppName,
        version: &Version,
        hooks: &[String],
        run: impl FnOnce() -> Result<Vec<HookRun>, WebError>,
    ) -> anyhow::Result<Once> {
        let done_key = layout::first_hooks_done(self.group, app);
        if self.store.get(&done_key).await?.is_some() {
            return Ok(Once::Done);
        }
        let once = self
            .ensure(OnceKind::FirstDeploy, app, version, hooks, run)
            .await?;
        if once == Once::Done {
            let folder = OnceKind::FirstDeploy.folder(self.group, app, version);
            let result = self
                .result(&layout::result_in(&folder))
                .await?
                .context("the first-deploy hooks' result vanished")?;
            match self
                .store
                .put(
                    &done_key,
                    result.to_toml().into_bytes(),
                    Condition::IfAbsent,
                )
                .await
            {
                // Another server of the group marked it first: the same fact.
                Ok(_) | Err(StoreError::PreconditionFailed { .. }) => {}
                Err(other) => return Err(other).context("marking the first-deploy hooks done"),
            }
        }
        Ok(once)
    }

    async fn result(&self, key: &str) -> anyhow::Result<Option<OnceResult>> {
        let Some(object) = self.store.get(key).await? else {
            return Ok(None);
        };
        let result = OnceResult::parse(&String::from_utf8_lossy(&object.bytes))
            .map_err(|e| anyhow::anyhow!("{key} is unreadable: {e}"))?;
        Ok(Some(result))
    }

    fn lease(&self, finished: bool) -> Vec<u8> {
        Lease {
            holder: self.host.clone(),
            expires: unix_now() + self.ttl.as_secs().max(1),
            taken: rfc3339_now(),
            finished,
        }
        .to_toml()
        .into_bytes()
    }

    /// Writes our lease under `condition`; `None` when another server was faster, or when the
    /// store said yes to both of us and holds the other's.
    async fn take(&self, key: &str, condition: Condition) -> anyhow::Result<Option<String>> {
        let lease = self.lease(false);
        let started = Instant::now();
        match self.store.put(key, lease.clone(), condition).await {
            Ok(etag) if self.holds(key, &lease, started).await? => Ok(Some(etag)),
            Ok(_) => {
                tracing::warn!(
                    "the store accepted this server's lease {key} but holds another server's: its conditional writes are not atomic"
                );
                Ok(None)
            }
            Err(StoreError::PreconditionFailed { .. }) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// Whether `key` holds exactly the bytes this server wrote at `written`: a store that lets
    /// two conditional writes through says yes to both, and only a read-back tells.
    async fn holds(&self, key: &str, bytes: &[u8], written: Instant) -> anyhow::Result<bool> {
        self.store.settle(written.elapsed()).await;
        Ok(self
            .store
            .get(key)
            .await?
            .is_some_and(|object| object.bytes == bytes))
    }

    #[allow(clippy::too_many_arguments)]
    async fn lead(
        &self,
        kind: OnceKind,
        app: &AppName,
        version: &Version,
        hooks: &[String],
        held: HeldLease<'_>,
        result_key: &str,
        run: impl FnOnce() -> Result<Vec<HookRun>, WebError>,
    ) -> anyhow::Result<Once> {
        let HeldLease {
            key: lease_key,
            etag,
        } = held;
        tracing::info!(%app, %version, "this server runs the {} for group {}", kind.label(), self.group);
        let etag = Arc::new(Mutex::new(etag));
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let renewer = {
            let (store, key, etag, lost) = (
                self.store.clone(),
                lease_key.to_owned(),
                etag.clone(),
                lost.clone(),
            );
            let (host, ttl) = (self.host.clone(), self.ttl);
            let every = (ttl / 3).max(Duration::from_millis(200));
            // The hooks are ended at their limits; a few seconds more for that to happen.
            let renew_until = Instant::now().checked_add(
                self.hook_limit
                    .saturating_mul(u32::try_from(hooks.len()).unwrap_or(u32::MAX))
                    .saturating_add(Duration::from_secs(10)),
            );
            tokio::spawn(async move {
                loop {
                    // Stopped only between renewals: a renewal cut off after the store took
                    // it would leave the confirmation below with a stale ETag, and this server
                    // would wrongly think another took the lease over.
                    tokio::select! {
                        () = tokio::time::sleep(every) => {}
                        _ = &mut stopped => return,
                    }
                    if renew_until.is_some_and(|until| Instant::now() >= until) {
                        tracing::warn!(
                            "the once hooks ran past their time limit: the once-hooks lease is no longer renewed"
                        );
                        return;
                    }
                    let mut current = etag.lock().await;
                    let renewed = Lease {
                        holder: host.clone(),
                        expires: unix_now() + ttl.as_secs().max(1),
                        taken: rfc3339_now(),
                        finished: false,
                    };
                    match store
                        .put(
                            &key,
                            renewed.to_toml().into_bytes(),
                            Condition::IfMatch(current.clone()),
                        )
                        .await
                    {
                        Ok(new) => *current = new,
                        Err(StoreError::PreconditionFailed { .. }) => {
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(err) => tracing::warn!("renewing the once-hooks lease: {err}"),
                    }
                }
            })
        };
        let ran = tokio::task::block_in_place(run);
        let _ = stop.send(());
        let _ = renewer.await;
        if lost.load(Ordering::SeqCst) {
            return self
                .follow_the_taker(kind, app, version, result_key, "while running the hooks")
                .await;
        }
        // Confirm we still hold the lease before anyone is told the result.
        let current = etag.lock().await.clone();
        let (finished, started) = (self.lease(true), Instant::now());
        match self
            .store
            .put(lease_key, finished.clone(), Condition::IfMatch(current))
            .await
        {
            Ok(_) if self.holds(lease_key, &finished, started).await? => {}
            Ok(_) | Err(StoreError::PreconditionFailed { .. }) => {
                return self
                    .follow_the_taker(kind, app, version, result_key, "before writing the result")
                    .await;
            }
            Err(other) => return Err(other).context("confirming the once-hooks lease"),
        }
        let result = match &ran {
            Ok(runs) => OnceResult {
                ok: true,
                host: self.host.clone(),
                finished: rfc3339_now(),
                hooks: hooks.to_vec(),
                output_tail: tail(
                    &runs
                        .iter()
                        .map(|r| r.output.as_str())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    30,
                ),
                error: None,
            },
            Err(err) => OnceResult {
                ok: false,
                host: self.host.clone(),
                finished: rfc3339_now(),
                hooks: hooks.to_vec(),
                output_tail: match err {
                    WebError::PrepareFailed { output_tail, .. }
                    | WebError::TimedOut { output_tail, .. } => output_tail.clone(),
                    other => other.to_string(),
                },
                error: Some(err.to_string()),
            },
        };
        let (ours, started) = (result.to_toml().into_bytes(), Instant::now());
        match self
            .store
            .put(result_key, ours.clone(), Condition::IfAbsent)
            .await
        {
            Ok(_) if self.holds(result_key, &ours, started).await? => {
                outcome(kind, app, version, &result)
            }
            // Someone finished first (we were presumed dead), or the store said yes to both of
            // us and kept theirs: theirs counts.
            Ok(_) | Err(StoreError::PreconditionFailed { .. }) => {
                match self.result(result_key).await? {
                    Some(theirs) => outcome(kind, app, version, &theirs),
                    None => bail!("{result_key} vanished"),
                }
            }
            Err(other) => Err(other).context("writing the once-hooks result"),
        }
    }
}

impl OnceRunner<'_> {
    /// This server was taken for dead and another took the lease over: its own run does not
    /// count (no result is written); the other server's result decides, as for everyone else.
    async fn follow_the_taker(
        &self,
        kind: OnceKind,
        app: &AppName,
        version: &Version,
        result_key: &str,
        when: &str,
    ) -> anyhow::Result<Once> {
        tracing::warn!(%app, %version, "lost the {} {when}: another server took over; following its result", kind.lease());
        match self.result(result_key).await? {
            Some(result) => outcome(kind, app, version, &result),
            None => Ok(Once::Waiting(format!(
                "lost the {} of {version}; waiting for the server that took over",
                kind.lease()
            ))),
        }
    }
}

fn outcome(
    kind: OnceKind,
    app: &AppName,
    version: &Version,
    result: &OnceResult,
) -> anyhow::Result<Once> {
    if result.ok {
        Ok(Once::Done)
    } else {
        bail!(
            "the {} of {app} {version} failed on {} at {}: {}\n{}",
            kind.label(),
            result.host,
            result.finished,
            result.error.as_deref().unwrap_or("failed"),
            result.output_tail
        )
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
