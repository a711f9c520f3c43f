//! A group across its servers: the index's wish next to what each live server reports.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{Report, SignatureCheck, StuckPass, TlsStatus};
use crate::names::{AppName, HostName, Version};

/// A report not refreshed for this long belongs to a server taken for dead.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(25 * 60);

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
    use crate::status::test_support::{report, v};
    use crate::status::{AppStatus, HostStatus, Signatures};

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
