//! One-time tasks (migrations): for each group, app and version, exactly one server runs the
//! release's `once` hooks and writes the result; the others switch only after a successful one.
//!
//! Servers share nothing but the store, so the "one" is a lease object created with
//! `If-None-Match: *` (only one create wins) and renewed, taken over when expired, and finally
//! confirmed with `If-Match` on its ETag: a leader that lost its lease learns it before it writes
//! a result. This needs a store that honours conditional writes; [`probe_conditional_writes`]
//! checks that before anyone relies on it.

use serde::{Deserialize, Serialize};

use crate::names::HostName;
use crate::store::{Condition, Store, StoreError};

/// Who runs the once hooks, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: HostName,
    /// Unix seconds after which another server may take over.
    pub expires: u64,
    /// When the holder took it (RFC 3339).
    pub taken: String,
    /// Set by the holder just before it writes the result.
    #[serde(default)]
    pub finished: bool,
}

/// What the once hooks did, written once by the server that ran them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnceResult {
    pub ok: bool,
    pub host: HostName,
    /// RFC 3339.
    pub finished: String,
    pub hooks: Vec<String>,
    /// The last lines of the hooks' output.
    pub output_tail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Lease {
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("lease serializes")
    }
}

impl OnceResult {
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("result serializes")
    }
}

/// Whether the store really refuses a create over an existing key and a replace with a stale
/// ETag. Some S3-compatible servers ignore both headers; on them a lease is no lease.
/// Writes and deletes one small object under `prefix`.
pub async fn probe_conditional_writes(
    store: &Store,
    prefix: &str,
) -> Result<Result<(), String>, StoreError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let key = format!(
        "{prefix}/.conditional-write-probe-{nanos}-{}",
        std::process::id()
    );
    store
        .put(&key, b"probe".to_vec(), Condition::IfAbsent)
        .await?;
    let second = store
        .put(&key, b"probe again".to_vec(), Condition::IfAbsent)
        .await;
    let stale = store
        .put(
            &key,
            b"stale".to_vec(),
            Condition::IfMatch("\"0000000000\"".into()),
        )
        .await;
    store.delete(&key).await?;
    let verdict = match (second, stale) {
        (
            Err(StoreError::PreconditionFailed { .. }),
            Err(StoreError::PreconditionFailed { .. }),
        ) => Ok(()),
        (Ok(_), _) => {
            Err("it accepted a create (If-None-Match: *) over an existing object".to_owned())
        }
        (_, Ok(_)) => Err("it accepted a replace (If-Match) with a stale ETag".to_owned()),
        (Err(StoreError::PreconditionFailed { .. }), Err(other)) | (Err(other), _) => {
            return Err(other);
        }
    };
    Ok(verdict)
}
