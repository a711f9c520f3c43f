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

/// A report not refreshed for this long belongs to a server taken for dead.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(25 * 60);

/// Reports read at once: enough to hide the store's latency (10,000 servers in seconds), few
/// enough to stay far below S3's request rates. Each GET keeps the SDK's retries.
pub const READ_CONCURRENCY: usize = 64;

/// A server's report as read: the report, or why it could not be read.
pub type Report = (HostName, Result<HostStatus, String>);

/// Every server report of a group, read from the store (unreadable ones as errors), in host order.
pub async fn read_group(
    store: &crate::Store,
    group: &GroupName,
) -> Result<Vec<Report>, crate::StoreError> {
    ReportCache::default()
        .read(store, group, READ_CONCURRENCY)
        .await
}

/// A group's reports as last read, by key, with the change tag their listing gave. Reading
/// again lists the group (one request per 1,000 servers) and fetches only the reports whose
/// tag changed, so a `--wait` poll where nothing changed costs the listing alone.
#[derive(Debug, Default)]
pub struct ReportCache {
    reports: BTreeMap<String, (String, Report)>,
    /// How many reports the last read fetched (the rest came from the cache).
    pub fetched: usize,
}

impl ReportCache {
    /// The group's reports now, fetching at most `concurrency` at once (1: one after another).
    pub async fn read(
        &mut self,
        store: &crate::Store,
        group: &GroupName,
        concurrency: usize,
    ) -> Result<Vec<Report>, crate::StoreError> {
        use futures_util::{StreamExt, TryStreamExt};

        let prefix = crate::layout::host_status_prefix(group);
        let listed: Vec<(HostName, crate::store::Listed)> = store
            .list_entries(&prefix)
            .await?
            .into_iter()
            .filter_map(|entry| {
                let name = entry.key.strip_prefix(&prefix)?.strip_suffix(".toml")?;
                Some((name.parse::<HostName>().ok()?, entry))
            })
            .collect();
        let changed: Vec<&(HostName, crate::store::Listed)> = listed
            .iter()
            .filter(|(_, entry)| {
                self.reports
                    .get(&entry.key)
                    .is_none_or(|(tag, _)| *tag != entry.tag)
            })
            .collect();
        self.fetched = changed.len();
        let fetched: Vec<_> = futures_util::stream::iter(changed)
            .map(|(host, entry)| async move {
                let object = store.get(&entry.key).await?;
                Ok::<_, crate::StoreError>((host, entry, object))
            })
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await?;
        for (host, entry, object) in fetched {
            match object {
                Some(object) => {
                    let report = HostStatus::parse(&String::from_utf8_lossy(&object.bytes));
                    self.reports.insert(
                        entry.key.clone(),
                        (entry.tag.clone(), (host.clone(), report)),
                    );
                }
                // Deleted (`hosts forget`) since the listing.
                None => {
                    self.reports.remove(&entry.key);
                }
            }
        }
        let keys: std::collections::BTreeSet<&str> =
            listed.iter().map(|(_, e)| e.key.as_str()).collect();
        self.reports.retain(|key, _| keys.contains(key.as_str()));
        Ok(self
            .reports
            .values()
            .map(|(_, report)| report.clone())
            .collect())
    }
}

/// How one app of a group stands across its live servers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AppSummary {
    pub wanted: Option<Version>,
    /// The env generation the index names.
    pub env_generation: u64,
    /// Live servers that serve the wanted version.
    pub serving: Vec<HostName>,
    /// Live servers that do not (yet), with what they serve and why.
    pub lagging: Vec<Lagging>,
    /// Live servers on which the wanted version failed, with the reason.
    pub failed: Vec<Lagging>,
    /// Each live server's HTTPS for the app (apps with `tls` only), with a warning when the
    /// certificate expires within two weeks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<HostTls>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostTls {
    pub host: HostName,
    #[serde(flatten)]
    pub tls: TlsStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lagging {
    pub host: HostName,
    pub serving: Option<Version>,
    pub reason: Option<String>,
}

impl AppSummary {
    pub fn converged(&self) -> bool {
        self.lagging.is_empty() && self.failed.is_empty()
    }
}

/// A group across its servers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupSummary {
    pub live: Vec<HostName>,
    /// Servers whose last report is older than the stale limit, with its age in seconds.
    pub stale: Vec<(HostName, u64)>,
    /// Reports that could not be read.
    pub unreadable: Vec<(HostName, String)>,
    /// Live servers that do not verify package signatures (or cannot), with why.
    pub not_verifying: Vec<(HostName, String)>,
    /// Servers whose agent is held up by a stuck pass.
    pub stuck: Vec<(HostName, StuckPass)>,
    pub apps: BTreeMap<AppName, AppSummary>,
}

/// Puts the index's wish for a group next to what its live servers report.
pub fn summarize(
    wanted: &BTreeMap<AppName, Version>,
    wanted_env: &BTreeMap<AppName, u64>,
    reports: &[Report],
    now: std::time::SystemTime,
    stale_after: Duration,
) -> GroupSummary {
    let mut summary = GroupSummary::default();
    let mut live = Vec::new();
    for (host, report) in reports {
        match report {
            Err(err) => summary.unreadable.push((host.clone(), err.clone())),
            Ok(report) => match report.age_secs(now) {
                Some(age) if age <= stale_after.as_secs() => live.push(report),
                age => summary.stale.push((host.clone(), age.unwrap_or(u64::MAX))),
            },
        }
    }
    summary.live = live.iter().map(|r| r.host.clone()).collect();
    summary.stuck = reports
        .iter()
        .filter_map(|(host, report)| {
            Some((host.clone(), report.as_ref().ok()?.stuck_pass.clone()?))
        })
        .collect();
    for report in &live {
        let why = match &report.signatures {
            Some(s) if s.check == SignatureCheck::Verifying => continue,
            Some(s) => s.describe(),
            None => "does not verify signatures: its agent predates signing".to_owned(),
        };
        summary.not_verifying.push((report.host.clone(), why));
    }
    let apps: std::collections::BTreeSet<&AppName> = wanted
        .keys()
        .chain(live.iter().flat_map(|r| r.apps.keys()))
        .collect();
    for app in apps {
        let wanted_version = wanted.get(app).cloned();
        let env = wanted_env.get(app).copied().unwrap_or(0);
        let mut entry = AppSummary {
            wanted: wanted_version.clone(),
            env_generation: env,
            ..AppSummary::default()
        };
        for report in &live {
            let status = report.apps.get(app).cloned().unwrap_or_default();
            if let Some(tls) = &status.tls {
                entry.tls.push(HostTls {
                    host: report.host.clone(),
                    warning: tls.expiry_warning(now),
                    tls: tls.clone(),
                });
            }
            let serving_wanted = status.serving.is_some() && status.serving == wanted_version;
            let env_current = status.env_generation >= env;
            if serving_wanted && status.healthy && env_current {
                entry.serving.push(report.host.clone());
            } else if wanted_version.is_none() && status.serving.is_none() {
                // Removed and gone: nothing to report.
            } else if wanted_version.is_some() && status.failed == wanted_version {
                entry.failed.push(Lagging {
                    host: report.host.clone(),
                    serving: status.serving,
                    reason: status.error,
                });
            } else {
                let old_env = (serving_wanted && !env_current)
                    .then(|| format!("runs env generation {} of {env}", status.env_generation));
                let reason = status.waiting.or(status.error).or(old_env).or_else(|| {
                    (report.apps.get(app).and_then(|s| s.wanted.clone()) != wanted_version)
                        .then(|| "has not picked up the change yet".to_owned())
                });
                entry.lagging.push(Lagging {
                    host: report.host.clone(),
                    serving: status.serving,
                    reason,
                });
            }
        }
        summary.apps.insert(app.clone(), entry);
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(
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

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn serving_lagging_failed_and_stale_servers() {
        let now = humantime::parse_rfc3339("2026-11-25T12:00:00Z").unwrap();
        let fresh = "2026-11-25T11:59:00Z";
        let wanted: BTreeMap<AppName, Version> = [("shop".parse().unwrap(), v("v2"))].into();
        let up = AppStatus {
            serving: Some(v("v2")),
            wanted: Some(v("v2")),
            healthy: true,
            ..AppStatus::default()
        };
        let behind = AppStatus {
            serving: Some(v("v1")),
            wanted: Some(v("v1")),
            healthy: true,
            ..AppStatus::default()
        };
        let broken = AppStatus {
            serving: Some(v("v1")),
            wanted: Some(v("v2")),
            healthy: true,
            failed: Some(v("v2")),
            error: Some("health check failed".into()),
            ..AppStatus::default()
        };
        let reports = vec![
            report("a", fresh, &[("shop", up)]),
            report("b", fresh, &[("shop", behind.clone())]),
            report("c", fresh, &[("shop", broken)]),
            report("d", "2026-11-25T10:00:00Z", &[("shop", behind)]),
        ];
        let summary = summarize(
            &wanted,
            &BTreeMap::new(),
            &reports,
            now,
            DEFAULT_STALE_AFTER,
        );
        let shop = &summary.apps[&"shop".parse::<AppName>().unwrap()];
        assert_eq!(shop.serving, vec!["a".parse::<HostName>().unwrap()]);
        assert_eq!(shop.lagging[0].host.as_str(), "b");
        assert_eq!(
            shop.lagging[0].reason.as_deref(),
            Some("has not picked up the change yet")
        );
        assert_eq!(
            shop.failed[0].reason.as_deref(),
            Some("health check failed")
        );
        assert_eq!(summary.stale, vec![("d".parse().unwrap(), 7200)]);
        assert!(!shop.converged());
        assert!(summary.not_verifying.is_empty());
    }

    #[tokio::test]
    async fn a_second_read_fetches_only_the_reports_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::Local(crate::store::LocalStore::open(dir.path()).unwrap());
        let group: GroupName = "g".parse().unwrap();
        let write = |host: &str, at: &str| {
            let (_, status) = report(host, at, &[]);
            let key = crate::layout::host_status(&group, &host.parse().unwrap());
            let text = toml::to_string(&status.unwrap()).unwrap();
            let store = store.clone();
            async move {
                store
                    .put(&key, text.into_bytes(), crate::Condition::None)
                    .await
            }
        };
        for host in ["a", "b", "c"] {
            write(host, "2026-11-25T11:00:00Z").await.unwrap();
        }
        let mut cache = ReportCache::default();
        let first = cache.read(&store, &group, 2).await.unwrap();
        assert_eq!(cache.fetched, 3);
        assert_eq!(first, read_group(&store, &group).await.unwrap());
        assert_eq!(cache.read(&store, &group, 2).await.unwrap(), first);
        assert_eq!(cache.fetched, 0, "nothing changed, nothing fetched");
        write("b", "2026-11-25T11:10:00Z").await.unwrap();
        store
            .delete(&crate::layout::host_status(&group, &"c".parse().unwrap()))
            .await
            .unwrap();
        let again = cache.read(&store, &group, 1).await.unwrap();
        assert_eq!(cache.fetched, 1);
        let hosts: Vec<&str> = again.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(hosts, ["a", "b"]);
        assert_eq!(
            again[1].1.as_ref().unwrap().last_pass,
            "2026-11-25T11:10:00Z"
        );
    }

    #[test]
    fn a_stuck_pass_is_summed_up_with_its_pid_and_start() {
        let now = humantime::parse_rfc3339("2026-11-25T12:00:00Z").unwrap();
        let mut reports = vec![
            report("a", "2026-11-25T11:59:00Z", &[]),
            report("b", "2026-11-25T11:59:00Z", &[]),
        ];
        let stuck = StuckPass {
            since: "2026-11-25T09:00:00Z".into(),
            pid: Some(4242),
        };
        if let Ok(status) = &mut reports[1].1 {
            status.stuck_pass = Some(stuck.clone());
        }
        let text = toml::to_string(reports[1].1.as_ref().unwrap()).unwrap();
        assert!(
            text.contains("[stuck_pass]\nsince = \"2026-11-25T09:00:00Z\"\npid = 4242\n"),
            "{text}"
        );
        let summary = summarize(
            &BTreeMap::new(),
            &BTreeMap::new(),
            &reports,
            now,
            DEFAULT_STALE_AFTER,
        );
        assert_eq!(summary.stuck, vec![("b".parse().unwrap(), stuck.clone())]);
        assert_eq!(
            stuck.describe(),
            "stuck pass since 2026-11-25T09:00:00Z, pid 4242"
        );
    }

    #[test]
    fn servers_that_do_not_verify_signatures_are_named() {
        let now = humantime::parse_rfc3339("2026-11-25T12:00:00Z").unwrap();
        let fresh = "2026-11-25T11:59:00Z";
        let mut reports = vec![
            report("a", fresh, &[]),
            report("b", fresh, &[]),
            report("c", fresh, &[]),
        ];
        let off = Signatures {
            check: SignatureCheck::NotVerifying,
            trusted_keys: vec![],
            note: Some("no trusted keys configured".into()),
        };
        if let Ok(status) = &mut reports[1].1 {
            status.signatures = Some(off.clone());
        }
        // An older agent's report has no signatures table at all, and still parses.
        let old = "host = \"c\"\ngroup = \"g\"\nagent_version = \"0\"\nlast_pass = \"2026-11-25T11:59:00Z\"\nresult = \"ok\"\n";
        reports[2].1 = HostStatus::parse(old);
        let summary = summarize(
            &BTreeMap::new(),
            &BTreeMap::new(),
            &reports,
            now,
            DEFAULT_STALE_AFTER,
        );
        assert_eq!(
            summary.not_verifying,
            vec![
                (
                    "b".parse().unwrap(),
                    "does not verify signatures: no trusted keys configured".to_owned()
                ),
                (
                    "c".parse().unwrap(),
                    "does not verify signatures: its agent predates signing".to_owned()
                ),
            ]
        );
        // The table as agents write it.
        let mut status = reports[0].1.clone().unwrap();
        status.signatures = Some(off);
        let text = toml::to_string(&status).unwrap();
        assert!(
            text.contains(
                "[signatures]\ncheck = \"not-verifying\"\nnote = \"no trusted keys configured\"\n"
            ),
            "{text}"
        );
        assert_eq!(HostStatus::parse(&text).unwrap(), status);
    }

    #[test]
    fn a_certificate_that_expires_within_two_weeks_is_a_warning() {
        let now = humantime::parse_rfc3339("2026-11-25T12:00:00Z").unwrap();
        let tls = |expires: &str| TlsStatus {
            mode: "provided".into(),
            names: vec!["shop.example".into()],
            expires: Some(expires.into()),
            error: None,
            renewal_error: None,
        };
        assert_eq!(tls("2027-01-01T00:00:00Z").expiry_warning(now), None);
        let soon = tls("2026-12-01T12:00:00Z").expiry_warning(now).unwrap();
        assert!(soon.contains("expires in 6days"), "{soon}");
        let gone = tls("2026-11-01T00:00:00Z").expiry_warning(now).unwrap();
        assert!(gone.contains("expired"), "{gone}");
        let app = AppStatus {
            serving: Some(v("v1")),
            wanted: Some(v("v1")),
            healthy: true,
            tls: Some(tls("2026-12-01T12:00:00Z")),
            ..AppStatus::default()
        };
        let wanted: BTreeMap<AppName, Version> = [("shop".parse().unwrap(), v("v1"))].into();
        let reports = vec![report("a", "2026-11-25T11:59:00Z", &[("shop", app)])];
        let summary = summarize(
            &wanted,
            &BTreeMap::new(),
            &reports,
            now,
            DEFAULT_STALE_AFTER,
        );
        let shop = &summary.apps[&"shop".parse::<AppName>().unwrap()];
        assert_eq!(shop.tls.len(), 1);
        assert!(shop.tls[0].warning.is_some());
    }
}
