//! Before a command writes, the store must have passed the conditional-write probe
//! (`milky_core::store::probe`): on a store that lets racing writes through, edits of the index
//! can be lost and packages overwritten. The verdict is kept for a day per endpoint and bucket in
//! the user's cache dir, so everyday commands pay nothing after the first; `doctor` always
//! probes afresh.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use milky_core::layout::STORE_PROBE_PREFIX;
use milky_core::store::probe::{Report, probe};
use milky_core::{Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::exit::user_error;

/// How long a verdict holds.
const VERDICT_SECS: u64 = 24 * 60 * 60;
const CACHE_FILE: &str = "store-checks.toml";

/// What a probe of one store found, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Verdict {
    /// Unix seconds.
    checked: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    #[serde(default)]
    stores: BTreeMap<String, Verdict>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `$XDG_CACHE_HOME/milkywhite`, else `~/.cache/milkywhite`.
fn cache_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("milkywhite").join(CACHE_FILE))
}

fn load() -> Cache {
    // A missing or unreadable cache only costs a probe.
    cache_path()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| toml::from_str(&text).ok())
        .unwrap_or_default()
}

/// Records a verdict, dropping expired ones; written to a temp file and renamed, so concurrent
/// commands never see half a file.
fn save(id: &str, verdict: Verdict) {
    let Some(path) = cache_path() else { return };
    let mut cache = load();
    let now = unix_now();
    cache
        .stores
        .retain(|_, v| now.saturating_sub(v.checked) < VERDICT_SECS);
    cache.stores.insert(id.to_owned(), verdict);
    let write = || -> std::io::Result<()> {
        let dir = path.parent().expect("the cache file has a dir");
        std::fs::create_dir_all(dir)?;
        let tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::fs::write(
            tmp.path(),
            toml::to_string(&cache).expect("cache serializes"),
        )?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(err) = write() {
        tracing::debug!(
            "not remembering the store check in {}: {err}",
            path.display()
        );
    }
}

/// Probes the store now and remembers the verdict.
pub async fn probe_now(store: &Store) -> anyhow::Result<Report> {
    let report = probe(store, STORE_PROBE_PREFIX).await?;
    if let Some(id) = store.endpoint_id() {
        let verdict = Verdict {
            checked: unix_now(),
            failure: report.verdict().err(),
        };
        save(&id, verdict);
    }
    Ok(report)
}

/// Ok if the store passed the probe (within a day, else probed now). A store that failed is
/// refused, unless `allow_unsafe`: then it is written to with a warning, and marked so that
/// read-backs wait for racing writes.
pub async fn ensure_safe(store: &mut Store, allow_unsafe: bool) -> anyhow::Result<()> {
    let Some(id) = store.endpoint_id() else {
        // A local directory: its guarantees are this program's own.
        return Ok(());
    };
    let now = unix_now();
    let known = load()
        .stores
        .remove(&id)
        .filter(|v| now.saturating_sub(v.checked) < VERDICT_SECS);
    let (failure, checked) = match known {
        Some(verdict) => (verdict.failure, Some(verdict.checked)),
        None => match probe(store, STORE_PROBE_PREFIX).await {
            Ok(report) => {
                let failure = report.verdict().err();
                save(
                    &id,
                    Verdict {
                        checked: now,
                        failure: failure.clone(),
                    },
                );
                (failure, None)
            }
            // Credentials that may not write the probe's scratch objects: the command's own
            // writes will say whether they may write at all.
            Err(err @ StoreError::AccessDenied { .. }) => {
                tracing::warn!(
                    "cannot check whether the store applies conditional writes atomically ({err}); allow PutObject and DeleteObject on {STORE_PROBE_PREFIX}/* so commands can"
                );
                return Ok(());
            }
            Err(other) => return Err(other.into()),
        },
    };
    let Some(why) = failure else {
        return Ok(());
    };
    let url = store.url();
    if allow_unsafe {
        tracing::warn!(
            "{url} does not apply conditional writes atomically ({why}); writing anyway because the unsafe store is allowed: each edit is read back and retried, but concurrent writers may still lose edits or overwrite packages"
        );
        store.allow_unsafe_writes();
        return Ok(());
    }
    let when = checked
        .map(|t| {
            let at = UNIX_EPOCH + std::time::Duration::from_secs(t);
            format!(" (checked at {})", humantime::format_rfc3339_seconds(at))
        })
        .unwrap_or_default();
    Err(user_error(format!(
        "refusing to write to {url}: it does not apply conditional writes atomically{when}: {why}. On it, concurrent commands can lose each other's edits of version.info and overwrite packages. Use a store that does (AWS S3, or run `cargo milky doctor` to check another), or write anyway at your risk with --allow-unsafe-store (MILKY_ALLOW_UNSAFE_STORE=1, or `allow_unsafe_store = true` under [deploy])"
    )))
}
