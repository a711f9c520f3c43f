//! A server's status report in the store, `groups/<group>/hosts/<host>.toml`: what it serves,
//! whether its last pass worked, and why not. Each agent writes only its own, when it changes and
//! at least every [`HEARTBEAT`], so readers can tell a live server from a dead one.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::names::{AppName, GroupName, HostName, Version};
use serde::{Deserialize, Serialize};

mod read;
mod summary;

pub use read::{READ_CONCURRENCY, Report, ReportCache, read_group};
pub use summary::{AppSummary, DEFAULT_STALE_AFTER, GroupSummary, HostTls, Lagging, summarize};

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
    /// Whether this server verifies package signatures (absent in reports of older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<Signatures>,
    /// A pass that holds the server's run lock for too long, written by the passes it blocks
    /// (the rest of the report is the stuck pass's last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck_pass: Option<StuckPass>,
}

/// A pass that has held a server's run lock longer than its agent's `[limits] stuck_pass`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StuckPass {
    /// When it took the lock (RFC 3339).
    pub since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl StuckPass {
    /// "stuck pass since 2026-11-29T08:00:00Z, pid 1234".
    pub fn describe(&self) -> String {
        let pid = self.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
        format!("stuck pass since {}{pid}", self.since)
    }
}

/// How a server treats package signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signatures {
    pub check: SignatureCheck,
    /// The ids of the keys it trusts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<String>,
    /// Why it does not verify, or what is wrong with its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureCheck {
    /// Only packages signed by a trusted key are installed.
    Verifying,
    /// No trusted keys configured: any package in the index is installed.
    NotVerifying,
    /// Trusted keys are configured but cannot be read: nothing is installed.
    Broken,
}

impl Signatures {
    /// One line for people: "verifies signatures (keys …)", "does not verify signatures: …".
    pub fn describe(&self) -> String {
        let note = self
            .note
            .as_ref()
            .map(|n| format!(": {n}"))
            .unwrap_or_default();
        match self.check {
            SignatureCheck::Verifying => {
                format!(
                    "verifies signatures (keys {})",
                    self.trusted_keys.join(", ")
                )
            }
            SignatureCheck::NotVerifying => format!("does not verify signatures{note}"),
            SignatureCheck::Broken => {
                format!("installs nothing, its trusted keys are broken{note}")
            }
        }
    }
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
    /// The env generation (`cargo milky env`) its processes run with.
    #[serde(default)]
    pub env_generation: u64,
    /// Why the wanted version is staged but not switched to yet (e.g. waiting for migrations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// HTTPS, for apps whose manifest sets `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
}

/// An app's HTTPS on one server: its mode and, where TLS ends here, the installed certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsStatus {
    /// "acme", "provided" or "proxy".
    pub mode: String,
    /// The names of the installed certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// When it expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Why the last install or renewal failed (the installed certificate, if any, serves on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `acme`: why the group's last order or renewal failed, and when it is tried again (the
    /// current certificate serves on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_error: Option<String>,
}

impl TlsStatus {
    /// A warning when the certificate expires within two weeks of `now`, or has expired.
    pub fn expiry_warning(&self, now: std::time::SystemTime) -> Option<String> {
        let expires = humantime::parse_rfc3339(self.expires.as_deref()?).ok()?;
        match expires.duration_since(now) {
            Err(_) => Some(format!(
                "the certificate expired at {}",
                self.expires.as_deref()?
            )),
            Ok(left) if left.as_secs() < crate::tls::EXPIRY_WARNING_SECS => Some(format!(
                "the certificate expires in {} ({})",
                humantime::format_duration(Duration::from_secs(left.as_secs() / 3600 * 3600)),
                self.expires.as_deref()?
            )),
            Ok(_) => None,
        }
    }
}

impl HostStatus {
    /// The report of a pass of `host` that ended `at` and went well, serving nothing yet; the
    /// agent fills in the rest, and tests start their synthetic reports from it.
    pub fn new(host: HostName, group: GroupName, at: std::time::SystemTime) -> Self {
        Self {
            host,
            group,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            last_pass: humantime::format_rfc3339_seconds(at).to_string(),
            result: "ok".to_owned(),
            apps: BTreeMap::new(),
            errors: Vec::new(),
            signatures: None,
            stuck_pass: None,
        }
    }

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

/// Reports and versions for the unit tests of this module and its children.
#[cfg(test)]
mod test_support {
    use super::*;

    pub(super) fn report(
        host: &str,
        at: &str,
        apps: &[(&str, AppStatus)],
    ) -> (HostName, Result<HostStatus, String>) {
        let status = HostStatus {
            apps: apps
                .iter()
                .map(|(a, s)| (a.parse().unwrap(), s.clone()))
                .collect(),
            signatures: Some(Signatures {
                check: SignatureCheck::Verifying,
                trusted_keys: vec!["0011223344556677".into()],
                note: None,
            }),
            ..HostStatus::new(
                host.parse().unwrap(),
                "g".parse().unwrap(),
                humantime::parse_rfc3339(at).unwrap(),
            )
        };
        (host.parse().unwrap(), Ok(status))
    }

    pub(super) fn v(s: &str) -> Version {
        s.parse().unwrap()
    }
}
