//! The agent's own status report in the store, `groups/<group>/hosts/<host>.toml`: what this
//! server serves, whether its last pass worked, and why not. Written when it changes, and at
//! least every [`HEARTBEAT`] so readers can tell a live server from a dead one.

use std::collections::BTreeMap;
use std::time::Duration;

use milky_core::{AppName, GroupName, HostName, Version};
use serde::{Deserialize, Serialize};

pub const HEARTBEAT: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    pub host: HostName,
    pub group: GroupName,
    pub agent_version: String,
    /// When the last pass ended (RFC 3339).
    pub last_pass: String,
    /// "ok", or "failed" with errors below.
    pub result: String,
    #[serde(default)]
    pub apps: BTreeMap<AppName, AppStatus>,
    /// Errors of the last pass, one per line, app first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    /// The version this server serves (absent while nothing serves the app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<Version>,
    /// The version the index wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wanted: Option<Version>,
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HostStatus {
    /// The report without its time, to tell whether anything changed since the last one.
    pub fn digest(&self) -> String {
        let mut copy = self.clone();
        copy.last_pass = String::new();
        toml::to_string(&copy).unwrap_or_default()
    }
}
