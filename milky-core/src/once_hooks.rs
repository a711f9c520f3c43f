//! One-time tasks (migrations): for each group, app and version, exactly one server runs the
//! release's `once` hooks and writes the result; the others switch only after a successful one.
//!
//! Servers share nothing but the store, so the "one" is a lease object created with
//! `If-None-Match: *` (only one create wins) and renewed, taken over when expired, and finally
//! confirmed with `If-Match` on its ETag: a leader that lost its lease learns it before it writes
//! a result. This needs a store that applies conditional writes atomically;
//! [`crate::store::probe`] checks that before anyone relies on it, and every lease and result
//! written is read back, so a write the store let another overwrite is not taken as held.

use serde::{Deserialize, Serialize};

use crate::names::HostName;

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
