//! Once hooks need a store that applies conditional writes atomically: that is how one server
//! per group is chosen to run them. The store is probed (`milky_core::store::probe`: refusals and
//! races) and the verdict remembered for a day; on a store that fails, no server runs once hooks
//! unless `allow_unsafe_store` says to, at the user's risk.

use anyhow::anyhow;
use milky_core::{GroupName, Store};

use crate::state_dir::{AgentState, ConditionalWrites};

/// How long a verdict holds before the store is probed again.
const VERDICT_SECS: u64 = 24 * 60 * 60;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Ok if `store` applies conditional writes, probing it (under the group's once prefix) only
/// when the state has no fresh verdict for this store. With `allow_unsafe` a failing store is
/// used anyway, with a warning.
pub(super) async fn check(
    store: &Store,
    group: &GroupName,
    state: &mut AgentState,
    allow_unsafe: bool,
) -> anyhow::Result<()> {
    let url = store.url();
    let now = unix_now();
    let known = state
        .conditional_writes
        .as_ref()
        .filter(|c| c.store == url && now.saturating_sub(c.checked) < VERDICT_SECS);
    let broken = match known {
        Some(known) => known.broken.clone(),
        None => {
            let prefix = milky_core::layout::once_probe_prefix(group);
            let report = milky_core::store::probe::probe(store, &prefix).await?;
            let broken = report.verdict().err();
            state.conditional_writes = Some(ConditionalWrites {
                store: url.clone(),
                broken: broken.clone(),
                checked: now,
            });
            broken
        }
    };
    match broken {
        None => Ok(()),
        Some(why) if allow_unsafe => {
            tracing::warn!(
                "{url} does not apply conditional writes atomically ({why}); running once hooks anyway because allow_unsafe_store is set: two servers may run them at once"
            );
            Ok(())
        }
        Some(why) => Err(anyhow!(
            "{url} does not apply conditional writes atomically ({why}), so one server per group cannot be chosen to run once hooks (migrations); refusing to run them. Use a store that does, or set `allow_unsafe_store = true` in agent.toml to run them anyway at your risk"
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
        check(&store, &group, &mut state, false).await.unwrap();
        assert_eq!(
            state.conditional_writes,
            Some(ConditionalWrites {
                store: store.url(),
                broken: None,
                checked: state.conditional_writes.as_ref().unwrap().checked,
            })
        );
        assert!(
            store.list("groups/web/once/").await.unwrap().is_empty(),
            "the probe leaves nothing behind"
        );
        let before = state.clone();
        check(&store, &group, &mut state, false).await.unwrap();
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
                checked: unix_now(),
            }),
            ..AgentState::default()
        };
        let before = state.clone();
        let err = check(&store, &group, &mut state, false)
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
                checked: unix_now(),
            }),
            ..AgentState::default()
        };
        check(&store, &group, &mut state, false).await.unwrap();
        assert_eq!(
            state.conditional_writes,
            Some(ConditionalWrites {
                store: store.url(),
                broken: None,
                checked: state.conditional_writes.as_ref().unwrap().checked,
            })
        );
    }

    #[tokio::test]
    async fn a_day_old_verdict_is_probed_again_and_the_override_runs_anyway() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path());
        let group: GroupName = "web".parse().unwrap();
        let broken = |checked| AgentState {
            conditional_writes: Some(ConditionalWrites {
                store: store.url(),
                broken: Some("3 of 8 concurrent creates succeeded".into()),
                checked,
            }),
            ..AgentState::default()
        };
        let mut state = broken(unix_now());
        check(&store, &group, &mut state, true).await.unwrap();
        let mut state = broken(unix_now() - VERDICT_SECS - 1);
        check(&store, &group, &mut state, false).await.unwrap();
        let verdict = state.conditional_writes.unwrap();
        assert_eq!(verdict.broken, None, "probed again: the local store passes");
        assert!(verdict.checked + 5 > unix_now());
    }
}
