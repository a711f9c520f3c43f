//! Retention: which uploaded versions may leave the index, and then the store.
//!
//! A version stays while any group runs it or can roll back to it (its history), while a server
//! may be in the middle of downloading it, and while it is among the newest `keep` of its app.
//! "In the middle of a download" cannot be seen from the store, so nothing younger than
//! [`GRACE`] goes: a server that read the index just before an edit finishes its download long
//! before. The selection here is pure; `cargo milky prune` applies it to the store (the index by
//! compare-and-swap first, then the packages the index no longer names).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::index::Index;
use crate::names::{AppName, Version};

/// Nothing uploaded or written more recently than this is deleted, whatever the policy says.
pub const GRACE: Duration = Duration::from_secs(60 * 60);

/// Versions of each app kept besides those in use, unless the index's `[retention]` says.
pub const DEFAULT_KEEP: usize = 20;

/// `[retention]` in the index, as written (every field optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    keep: Option<usize>,
    older_than: Option<String>,
    after_upload: Option<bool>,
}

/// What may be pruned, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// The newest versions of each app kept, in use or not.
    pub keep: usize,
    /// Only versions uploaded at least this long ago go (never less than [`GRACE`]).
    #[serde(serialize_with = "as_humantime")]
    pub older_than: Duration,
    /// Whether `cargo milky upload` prunes after each upload.
    pub after_upload: bool,
}

fn as_humantime<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            keep: DEFAULT_KEEP,
            older_than: GRACE,
            after_upload: true,
        }
    }
}

impl Policy {
    /// The policy `[retention]` describes, the defaults filling what it leaves out.
    pub fn from_settings(settings: &PolicySettings) -> Result<Self, String> {
        let default = Self::default();
        let older_than = match &settings.older_than {
            Some(text) => humantime::parse_duration(text).map_err(|e| {
                format!("[retention] older_than = {text:?} is not a duration like \"30d\": {e}")
            })?,
            None => default.older_than,
        };
        Ok(Self {
            keep: settings.keep.unwrap_or(default.keep),
            older_than,
            after_upload: settings.after_upload.unwrap_or(default.after_upload),
        })
    }

    /// The age a version needs before it may go: the policy's, and at least the grace period.
    pub fn min_age(&self) -> Duration {
        self.older_than.max(GRACE)
    }
}

/// A version that leaves the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Doomed {
    pub app: AppName,
    pub version: Version,
    /// The package's size, as the index lists it.
    pub size: u64,
    pub uploaded: String,
}

/// Every version a group runs or can roll back to.
pub fn in_use(index: &Index) -> BTreeSet<(AppName, Version)> {
    let mut used = index.history_versions();
    used.extend(index.groups().into_values().flatten());
    used
}

/// The versions `policy` removes from `index` at `now`: per app, those not in use (by a group,
/// its history, or `also_in_use`), not among the `keep` newest by upload time, and uploaded at
/// least [`Policy::min_age`] ago. An entry whose upload time does not parse stays.
pub fn select(
    index: &Index,
    policy: &Policy,
    also_in_use: &BTreeSet<(AppName, Version)>,
    now: SystemTime,
) -> Vec<Doomed> {
    let used = in_use(index);
    let mut doomed = Vec::new();
    for (app, versions) in index.apps() {
        let mut by_age: Vec<(Option<SystemTime>, Version, crate::PackageEntry)> = versions
            .into_iter()
            .map(|(version, entry)| {
                let at = humantime::parse_rfc3339_weak(&entry.uploaded).ok();
                (at, version, entry)
            })
            .collect();
        // Newest first; an unreadable time counts as new.
        by_age.sort_by(|a, b| {
            let key = |x: &(Option<SystemTime>, Version, _)| {
                (x.0.unwrap_or(SystemTime::now()), x.1.clone())
            };
            key(b).cmp(&key(a))
        });
        for (at, version, entry) in by_age.into_iter().skip(policy.keep) {
            let key = (app.clone(), version);
            if used.contains(&key) || also_in_use.contains(&key) {
                continue;
            }
            let old_enough = at.is_some_and(|at| {
                now.duration_since(at)
                    .is_ok_and(|age| age >= policy.min_age())
            });
            if old_enough {
                doomed.push(Doomed {
                    app: key.0,
                    version: key.1,
                    size: entry.size,
                    uploaded: entry.uploaded,
                });
            }
        }
    }
    doomed
}

/// Whether an object last written at `modified` is past the grace period at `now` (an object
/// whose time is unknown is not).
pub fn past_grace(modified: Option<SystemTime>, now: SystemTime) -> bool {
    modified.is_some_and(|at| now.duration_since(at).is_ok_and(|age| age >= GRACE))
}

/// The versions of each app the index lists.
pub fn listed(index: &Index) -> BTreeMap<AppName, BTreeSet<Version>> {
    index
        .apps()
        .into_iter()
        .map(|(app, versions)| (app, versions.into_keys().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PackageEntry;
    use crate::names::GroupName;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn app() -> AppName {
        "shop".parse().unwrap()
    }

    fn v(n: u32) -> Version {
        format!("v{n}").parse().unwrap()
    }

    /// v1…vN of shop, vK uploaded K hours after midnight.
    fn index_with(n: u32) -> Index {
        let mut index = Index::new();
        for k in 1..=n {
            let entry = PackageEntry {
                sha256: "a".repeat(64),
                size: 1000 + u64::from(k),
                uploaded: format!("2026-11-25T{k:02}:00:00Z"),
                signature: None,
            };
            index.add_package(&app(), &v(k), &entry).unwrap();
        }
        index
    }

    fn names(doomed: &[Doomed]) -> Vec<String> {
        doomed.iter().map(|d| d.version.to_string()).collect()
    }

    #[test]
    fn keeps_the_newest_and_what_groups_run_or_can_roll_back_to() {
        let mut index = index_with(12);
        let stable: GroupName = "stable".parse().unwrap();
        // stable ran v2, then v3, and runs v4: v4 is current, v3 and v2 are its history.
        for k in 2..=4 {
            index.set_version(&stable, &app(), &v(k)).unwrap();
        }
        let policy = Policy {
            keep: 5,
            ..Policy::default()
        };
        let doomed = select(
            &index,
            &policy,
            &BTreeSet::new(),
            at("2026-11-26T00:00:00Z"),
        );
        // v12…v8 are the five newest; v4, v3, v2 are in use.
        assert_eq!(names(&doomed), ["v7", "v6", "v5", "v1"]);
        assert_eq!(doomed[0].size, 1007);
        let also = BTreeSet::from([(app(), v(6))]);
        let doomed = select(&index, &policy, &also, at("2026-11-26T00:00:00Z"));
        assert_eq!(names(&doomed), ["v7", "v5", "v1"]);
    }

    #[test]
    fn nothing_younger_than_the_grace_period_goes() {
        let index = index_with(6);
        let none_kept = Policy {
            keep: 0,
            older_than: Duration::ZERO,
            after_upload: true,
        };
        // At 06:30, v6 (06:00) is 30 min old: inside the grace period, whatever the policy says.
        let doomed = select(
            &index,
            &none_kept,
            &BTreeSet::new(),
            at("2026-11-25T06:30:00Z"),
        );
        assert_eq!(names(&doomed), ["v5", "v4", "v3", "v2", "v1"]);
        // A longer limit keeps more.
        let week = Policy {
            older_than: Duration::from_secs(3 * 3600),
            ..none_kept
        };
        let doomed = select(&index, &week, &BTreeSet::new(), at("2026-11-25T06:30:00Z"));
        assert_eq!(names(&doomed), ["v3", "v2", "v1"]);
        assert!(past_grace(
            Some(at("2026-11-25T05:00:00Z")),
            at("2026-11-25T06:00:00Z")
        ));
        assert!(!past_grace(
            Some(at("2026-11-25T05:30:00Z")),
            at("2026-11-25T06:00:00Z")
        ));
        assert!(!past_grace(None, at("2026-11-25T06:00:00Z")));
    }

    #[test]
    fn an_entry_whose_time_does_not_parse_stays() {
        let mut index = index_with(2);
        let entry = PackageEntry {
            sha256: "b".repeat(64),
            size: 1,
            uploaded: "yesterday".into(),
            signature: None,
        };
        index.add_package(&app(), &v(9), &entry).unwrap();
        let policy = Policy {
            keep: 0,
            ..Policy::default()
        };
        let doomed = select(
            &index,
            &policy,
            &BTreeSet::new(),
            at("2026-12-25T00:00:00Z"),
        );
        assert_eq!(names(&doomed), ["v2", "v1"]);
    }

    #[test]
    fn settings_fill_in_the_defaults_and_bad_durations_are_refused() {
        let settings: PolicySettings = toml::from_str("keep = 3").unwrap();
        assert_eq!(
            Policy::from_settings(&settings).unwrap(),
            Policy {
                keep: 3,
                ..Policy::default()
            }
        );
        let settings: PolicySettings =
            toml::from_str("older_than = \"30d\"\nafter_upload = false").unwrap();
        let policy = Policy::from_settings(&settings).unwrap();
        assert_eq!(policy.older_than, Duration::from_secs(30 * 86400));
        assert!(!policy.after_upload);
        let settings: PolicySettings = toml::from_str("older_than = \"soon\"").unwrap();
        let err = Policy::from_settings(&settings).unwrap_err();
        assert!(err.contains("not a duration"), "{err}");
        assert!(toml::from_str::<PolicySettings>("keeep = 3").is_err());
        // The grace period is a floor.
        let short = Policy {
            older_than: Duration::from_secs(60),
            ..Policy::default()
        };
        assert_eq!(short.min_age(), GRACE);
    }
}
