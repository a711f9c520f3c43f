//! Once hooks need a store that refuses a second create and a stale replace: that is how one
//! server per group is chosen to run them. The store is probed once and the verdict remembered;
//! on a store that ignores conditional writes, no server runs once hooks at all.

use anyhow::anyhow;
use milky_core::{GroupName, Store};

use crate::state::{AgentState, ConditionalWrites};

/// Ok if `store` honours conditional writes, probing it (under the group's once prefix) only
/// when the state has no verdict for this store yet.
pub(super) async fn check(
    store: &Store,
    group: &GroupName,
    state: &mut AgentState,
) -> anyhow::Result<()> {
    let url = store.url();
    let known = state.conditional_writes.as_ref().filter(|c| c.store == url);
    let broken = match known {
        Some(known) => known.broken.clone(),
        None => {
            let prefix = milky_core::layout::once_probe_prefix(group);
            let verdict = milky_core::once::probe_conditional_writes(store, &prefix).await?;
            let broken = verdict.err();
            state.conditional_writes = Some(ConditionalWrites {
                store: url.clone(),
                broken: broken.clone(),
            });
            broken
        }
    };
    match broken {
        None => Ok(()),
        Some(why) => Err(anyhow!(
            "{url} does not honour conditional writes ({why}), so one server per group cannot be chosen to run once hooks (migrations); refusing to run them. Use a store that supports If-None-Match/If-Match on PUT"
        )),
    }
}

#[cfg(test)]
mod tests {
    use milky_core::store::LocalStore;

    use super::*;

    fn local_store(dir: &std::path::Path) -> Store {
        Store::Local(LocalStore::open(dir).unwrap())
    }

    #[tokio::test]
    async fn a_store_is_probed_once_and_the_verdict_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path());
        let group: GroupName = "web".parse().unwrap();
        let mut state = AgentState::default();
        check(&store, &group, &mut state).await.unwrap();
        assert_eq!(
            state.conditional_writes,
            Some(ConditionalWrites {
                store: store.url(),
                broken: None
            })
        );
        assert!(
            store.list("groups/web/once/").await.unwrap().is_empty(),
            "the probe leaves nothing behind"
        );
        let before = state.clone();
        check(&store, &group, &mut state).await.unwrap();
        assert_eq!(state, before);
    }

    #[tokio::test]
    async fn a_store_known_to_ignore_them_is_refused_without_a_probe() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path());
        let group: GroupName = "web".parse().unwrap();
        let mut state = AgentState {
            conditional_writes: Some(ConditionalWrites {
                store: store.url(),
                broken: Some("a second create succeeded".into()),
            }),
            ..AgentState::default()
        };
        let before = state.clone();
        let err = check(&store, &group, &mut state)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("(a second create succeeded)"), "{err}");
        assert!(err.contains("refusing to run them"), "{err}");
        assert_eq!(state, before, "the remembered verdict stands");
    }

    #[tokio::test]
    async fn a_verdict_about_another_store_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path());
        let group: GroupName = "web".parse().unwrap();
        let mut state = AgentState {
            conditional_writes: Some(ConditionalWrites {
                store: "s3://elsewhere/prefix".into(),
                broken: Some("a second create succeeded".into()),
            }),
            ..AgentState::default()
        };
        check(&store, &group, &mut state).await.unwrap();
        assert_eq!(
            state.conditional_writes,
            Some(ConditionalWrites {
                store: store.url(),
                broken: None
            })
        );
    }
}
