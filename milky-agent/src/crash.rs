//! Crash points, for tests of crash safety.
//!
//! Every step of a pass must be safe to interrupt (kill -9, power loss): the next pass
//! converges. Timed kills only hit some steps, and not the same ones from run to run. With
//! `MILKY_AGENT_CRASH_AT=<point>` in its environment, the agent kills itself with SIGKILL
//! when it reaches that point, as `kill -9` would: no destructor runs, no file is flushed,
//! children started under `setpriv --pdeathsig` die with it. The e2e tests loop over the
//! points of an upgrade, of a removal and of an ACME order (see [`UPGRADE`], [`REMOVAL`] and
//! [`ACME_ORDER`]).
//!
//! Without the variable a point costs one comparison.

use std::sync::OnceLock;

/// The environment variable that names the point to crash at.
pub const ENV: &str = "MILKY_AGENT_CRASH_AT";

/// Points passed in an upgrade to a version that is not on disk yet, in order.
pub const UPGRADE: &[&str] = &[
    "fetch:downloaded",
    "fetch:staged",
    "prepare:venv-running",
    "prepare:pip-running",
    "prepare:hook-running",
    "prepare:hooks-done",
    "deploy:prepared",
    "once:hook-running",
    "deploy:slot-started",
    "deploy:healthy",
    "nginx:live-link-replaced",
    "deploy:switched",
    "deploy:done",
];

/// Points passed in the removal of an app, in order.
pub const REMOVAL: &[&str] = &[
    "remove:start",
    "nginx:file-changed",
    "remove:nginx-done",
    "remove:slots-stopped",
    "remove:web-done",
    "remove:files-moved",
    "remove:done",
];

/// Points passed in an ACME order by the server holding the group's lease, in order: its
/// answers are in the store, the CA validated them, the certificate is downloaded (not stored
/// yet), the certificate is stored (the order not yet marked done).
pub const ACME_ORDER: &[&str] = &[
    "acme:answers-published",
    "acme:challenges-valid",
    "acme:certificate-downloaded",
    "acme:certificate-stored",
];

/// The point between shipping a log segment and saving its offset.
pub const LOG_SHIPPED: &str = "logs:segment-uploaded";

/// Kills this process with SIGKILL if `MILKY_AGENT_CRASH_AT` names `point`.
pub fn point(point: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(ENV).ok().filter(|v| !v.is_empty()));
    if at.as_deref() != Some(point) {
        return;
    }
    tracing::warn!("{ENV}={point}: killing this agent with SIGKILL");
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    // The signal refused (it cannot be): still die on the spot, without unwinding.
    std::process::abort();
}
