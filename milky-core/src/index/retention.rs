//! Retention in the index (see [`crate::retention`]): the `[retention]` policy, the versions a
//! group can roll back to, and the removal of versions' entries.

use toml_edit::value;

use super::Index;
use super::document::table_at;
use crate::names::{AppName, Version};
use crate::retention::Policy;

/// Retention (see [`crate::retention`]): the policy and the removal of versions.
impl Index {
    /// The `[retention]` policy, or the default one.
    pub fn retention(&self) -> Policy {
        self.data()
            .retention
            .as_ref()
            .map(|settings| Policy::from_settings(settings).expect("checked when parsed"))
            .unwrap_or_default()
    }

    /// Writes `policy` as `[retention]`, every field spelled out.
    pub fn set_retention(&mut self, policy: &Policy) {
        let table = table_at(self.doc_mut(), &["retention"]);
        table.set_implicit(false);
        table.insert(
            "keep",
            value(i64::try_from(policy.keep).unwrap_or(i64::MAX)),
        );
        table.insert(
            "older_than",
            value(humantime::format_duration(policy.older_than).to_string()),
        );
        table.insert("after_upload", value(policy.after_upload));
    }

    /// Every version some group can roll back to.
    pub fn history_versions(&self) -> std::collections::BTreeSet<(AppName, Version)> {
        self.data()
            .history
            .values()
            .flatten()
            .flat_map(|(app, versions)| versions.iter().map(|v| (app.clone(), v.clone())))
            .collect()
    }

    /// Takes versions' entries out of the index (an app left without any goes too). Their
    /// packages stay in the store until `cargo milky prune` deletes them.
    pub fn remove_versions(&mut self, versions: &[(AppName, Version)]) {
        for (app, version) in versions {
            if self.package(app, version).is_none() {
                continue;
            }
            let entries = table_at(self.doc_mut(), &["apps", app.as_str(), "versions"]);
            entries.remove(version.as_str());
            if entries.is_empty() {
                table_at(self.doc_mut(), &["apps"]).remove(app.as_str());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::{app, entry, version};

    #[test]
    fn versions_leave_the_index_and_the_policy_round_trips() {
        let text = "schema = 1\n# kept: the audit\n[apps.a.versions.v1]\nsha256 = \"aa\"\nsize = 1\nuploaded = \"x\"\n";
        let mut index = Index::parse(text).unwrap();
        index
            .add_package(&app("a"), &version("v2"), &entry('b'))
            .unwrap();
        index
            .add_package(&app("b"), &version("v1"), &entry('c'))
            .unwrap();
        assert_eq!(index.retention(), Policy::default());
        index.remove_versions(&[(app("a"), version("v2")), (app("b"), version("v1"))]);
        let out = index.to_string();
        assert!(
            out.contains("# kept: the audit\n[apps.a.versions.v1]"),
            "{out}"
        );
        assert!(!out.contains("v2") && !out.contains("apps.b"), "{out}");
        let policy = Policy {
            keep: 5,
            older_than: std::time::Duration::from_secs(7 * 86400),
            after_upload: false,
        };
        index.set_retention(&policy);
        let out = index.to_string();
        assert!(
            out.contains("[retention]\nkeep = 5\nolder_than = \"7days\"\nafter_upload = false\n"),
            "{out}"
        );
        assert_eq!(Index::parse(&out).unwrap().retention(), policy);
        let err = Index::parse("schema = 1\n[retention]\nolder_than = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
    }
}
