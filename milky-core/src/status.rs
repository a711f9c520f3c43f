//! A server's status report in the store, `groups/<group>/hosts/<host>.toml`: what it serves,
//! whether its last pass worked, and why not. Each agent writes only its own, when it changes and
//! at least every [`HEARTBEAT`], so readers can tell a live server from a dead one.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::names::{AppName, GroupName, HostName, Version};
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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    /// The version this server serves (absent while nothing serves the app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<Version>,
    /// The version the index wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wanted: Option<Version>,
    pub healthy: bool,
    /// The version that failed to deploy here, with why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the wanted version is staged but not switched to yet (e.g. waiting for migrations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

impl HostStatus {
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Seconds since the report was written, if its time parses.
    pub fn age_secs(&self, now: std::time::SystemTime) -> Option<u64> {
        let at = humantime::parse_rfc3339(&self.last_pass).ok()?;
        Some(now.duration_since(at).map(|d| d.as_secs()).unwrap_or(0))
    }

    /// The report without its time, to tell whether anything changed since the last one.
    pub fn digest(&self) -> String {
        let mut copy = self.clone();
        copy.last_pass = String::new();
        toml::to_string(&copy).unwrap_or_default()
    }
}
