//! What each group runs: the version of each app, the versions it ran before (for rollback),
//! and each app's env generation.

use std::collections::BTreeMap;

use toml_edit::value;

use super::document::table_at;
use super::{Index, IndexError};
use crate::names::{AppName, GroupName, Version};

/// How many earlier versions the index remembers per group and app.
pub const HISTORY_LEN: usize = 10;

/// What a rollback did: the version it left, the one it went to, and the versions of the history
/// it passed over because they never served anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    pub from: Version,
    pub to: Version,
    pub never_served: Vec<Version>,
}

impl Index {
    /// Every group with the app → version it runs.
    pub fn groups(&self) -> BTreeMap<GroupName, BTreeMap<AppName, Version>> {
        self.data().groups.clone()
    }

    /// Every group the index names: those that run apps, and those with an env or a history of
    /// versions.
    pub fn known_groups(&self) -> std::collections::BTreeSet<GroupName> {
        let data = self.data();
        data.groups
            .keys()
            .chain(data.env.keys())
            .chain(data.history.keys())
            .cloned()
            .collect()
    }

    /// The apps and versions one group runs (empty if the group is unknown).
    pub fn group(&self, group: &GroupName) -> BTreeMap<AppName, Version> {
        self.data().groups.get(group).cloned().unwrap_or_default()
    }

    /// Makes `group` run `version` of `app`, which must have been uploaded. Returns the version the
    /// group ran before, if any.
    pub fn set_version(
        &mut self,
        group: &GroupName,
        app: &AppName,
        version: &Version,
    ) -> Result<Option<Version>, IndexError> {
        if self.package(app, version).is_none() {
            return Err(IndexError::UnknownVersion {
                app: app.clone(),
                version: version.clone(),
                known: self.known_versions(app),
            });
        }
        let previous = self.group(group).remove(app);
        if let Some(previous) = previous.as_ref().filter(|p| *p != version) {
            let mut history = self.history(group, app);
            history.retain(|v| v != previous);
            history.insert(0, previous.clone());
            history.truncate(HISTORY_LEN);
            self.set_history(group, app, &history);
        }
        let apps = table_at(self.doc_mut(), &["groups", group.as_str()]);
        apps.insert(app.as_str(), value(version.as_str()));
        Ok(previous)
    }

    /// The generation of `app`'s env in `group` (0: none set).
    pub fn env_generation(&self, group: &GroupName, app: &AppName) -> u64 {
        self.data()
            .env
            .get(group)
            .and_then(|apps| apps.get(app).copied())
            .unwrap_or(0)
    }

    /// Every app's env generation in `group`.
    pub fn env_generations(&self, group: &GroupName) -> BTreeMap<AppName, u64> {
        self.data().env.get(group).cloned().unwrap_or_default()
    }

    /// Records a new env generation; an older one never replaces a newer.
    pub fn set_env_generation(&mut self, group: &GroupName, app: &AppName, generation: u64) {
        if generation > self.env_generation(group, app) {
            let table = table_at(self.doc_mut(), &["env", group.as_str()]);
            table.insert(
                app.as_str(),
                value(i64::try_from(generation).unwrap_or(i64::MAX)),
            );
        }
    }

    /// The versions `group` ran of `app` before the current one, most recent first.
    pub fn history(&self, group: &GroupName, app: &AppName) -> Vec<Version> {
        self.data()
            .history
            .get(group)
            .and_then(|apps| apps.get(app).cloned())
            .unwrap_or_default()
    }

    fn set_history(&mut self, group: &GroupName, app: &AppName, history: &[Version]) {
        let table = table_at(self.doc_mut(), &["history", group.as_str()]);
        let mut array = toml_edit::Array::new();
        history.iter().for_each(|v| array.push(v.as_str()));
        table.insert(app.as_str(), value(array));
    }

    /// Switches `group` back to the version of `app` it ran before; that version leaves the
    /// history, so rolling back again goes one further. Versions whose package is no longer
    /// listed, and those `served` says never served anywhere (a release that failed its health
    /// check everywhere), are passed over and leave the history too.
    pub fn rollback(
        &mut self,
        group: &GroupName,
        app: &AppName,
        served: impl Fn(&Version) -> bool,
    ) -> Result<Rollback, IndexError> {
        let current = self
            .group(group)
            .remove(app)
            .ok_or_else(|| IndexError::NotInGroup {
                group: group.clone(),
                app: app.clone(),
            })?;
        let mut history = self.history(group, app);
        let mut never_served = Vec::new();
        while let Some(candidate) = history.first().cloned() {
            history.remove(0);
            if self.package(app, &candidate).is_none() || candidate == current {
                continue;
            }
            if !served(&candidate) {
                never_served.push(candidate);
                continue;
            }
            self.set_history(group, app, &history);
            table_at(self.doc_mut(), &["groups", group.as_str()])
                .insert(app.as_str(), value(candidate.as_str()));
            return Ok(Rollback {
                from: current,
                to: candidate,
                never_served,
            });
        }
        Err(IndexError::NoHistory {
            group: group.clone(),
            app: app.clone(),
            never_served,
        })
    }

    /// Takes `app` out of `group`. Its packages stay listed and stored. Returns the version it ran.
    pub fn remove_app(&mut self, group: &GroupName, app: &AppName) -> Result<Version, IndexError> {
        let Some(version) = self.group(group).remove(app) else {
            return Err(IndexError::NotInGroup {
                group: group.clone(),
                app: app.clone(),
            });
        };
        table_at(self.doc_mut(), &["groups", group.as_str()]).remove(app.as_str());
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::{app, entry, group, version};

    #[test]
    fn set_version_needs_an_uploaded_version_and_reports_the_previous_one() {
        let mut index = Index::new();
        let err = index
            .set_version(&group("stable"), &app("myapp"), &version("v9"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "app myapp has no uploaded version v9 (uploaded: none)"
        );
        index
            .add_package(&app("myapp"), &version("v1"), &entry('a'))
            .unwrap();
        index
            .add_package(&app("myapp"), &version("v2"), &entry('b'))
            .unwrap();
        assert_eq!(
            index
                .set_version(&group("stable"), &app("myapp"), &version("v1"))
                .unwrap(),
            None
        );
        assert_eq!(
            index
                .set_version(&group("stable"), &app("myapp"), &version("v2"))
                .unwrap(),
            Some(version("v1"))
        );
        let err = index
            .set_version(&group("stable"), &app("myapp"), &version("v3"))
            .unwrap_err();
        assert!(err.to_string().ends_with("(uploaded: v1, v2)"), "{err}");
    }

    #[test]
    fn rollback_walks_back_through_the_history() {
        let mut index = Index::new();
        for v in ["v1", "v2", "v3"] {
            index
                .add_package(&app("a"), &version(v), &entry('a'))
                .unwrap();
            index
                .set_version(&group("g"), &app("a"), &version(v))
                .unwrap();
        }
        assert_eq!(
            index.history(&group("g"), &app("a")),
            vec![version("v2"), version("v1")]
        );
        assert!(
            index
                .to_string()
                .contains("[history.g]\na = [\"v2\", \"v1\"]"),
            "{index}"
        );
        let any = |_: &Version| true;
        let back = |index: &mut Index| {
            let r = index.rollback(&group("g"), &app("a"), any).unwrap();
            (r.from, r.to)
        };
        assert_eq!(back(&mut index), (version("v3"), version("v2")));
        assert_eq!(back(&mut index), (version("v2"), version("v1")));
        let err = index.rollback(&group("g"), &app("a"), any).unwrap_err();
        assert!(matches!(err, IndexError::NoHistory { .. }), "{err}");
        assert_eq!(index.group(&group("g"))[&app("a")], version("v1"));
        let reparsed = Index::parse(&index.to_string()).unwrap();
        assert!(reparsed.history(&group("g"), &app("a")).is_empty());
    }

    #[test]
    fn rollback_passes_over_versions_that_never_served() {
        let mut index = Index::new();
        for v in ["v1", "v2", "v3", "v4"] {
            index
                .add_package(&app("a"), &version(v), &entry('a'))
                .unwrap();
            index
                .set_version(&group("g"), &app("a"), &version(v))
                .unwrap();
        }
        // v3 failed its health check everywhere; v2 served.
        let served = |v: &Version| v.as_str() != "v3";
        let rollback = index.rollback(&group("g"), &app("a"), served).unwrap();
        assert_eq!(
            (rollback.from, rollback.to, rollback.never_served),
            (version("v4"), version("v2"), vec![version("v3")])
        );
        assert_eq!(index.history(&group("g"), &app("a")), vec![version("v1")]);
        let none = |_: &Version| false;
        let err = index.rollback(&group("g"), &app("a"), none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "group g has no earlier version of a to roll back to (one version in its history never served on any server: v1)"
        );
        // A refused rollback changes nothing.
        assert_eq!(index.group(&group("g"))[&app("a")], version("v2"));
    }

    #[test]
    fn remove_keeps_the_packages() {
        let mut index = Index::new();
        index
            .add_package(&app("a"), &version("v1"), &entry('a'))
            .unwrap();
        index
            .set_version(&group("g"), &app("a"), &version("v1"))
            .unwrap();
        assert_eq!(
            index.remove_app(&group("g"), &app("a")).unwrap(),
            version("v1")
        );
        assert!(index.group(&group("g")).is_empty());
        assert!(index.package(&app("a"), &version("v1")).is_some());
        // A group that only has an env is known; one whose last app left (with no history) is
        // not any more: its servers' reports in the store keep it known to the controller.
        index.set_env_generation(&group("e"), &app("a"), 1);
        assert_eq!(
            index.known_groups().into_iter().collect::<Vec<_>>(),
            [group("e")]
        );
        index
            .set_version(&group("h"), &app("a"), &version("v1"))
            .unwrap();
        assert_eq!(
            index.known_groups().into_iter().collect::<Vec<_>>(),
            [group("e"), group("h")]
        );
        let err = index.remove_app(&group("g"), &app("a")).unwrap_err();
        assert_eq!(err.to_string(), "group g does not run app a");
    }
}
