//! The controller's half of signed group state: after every edit of what a group runs, the
//! group's state is signed anew from the index as it now is (see
//! `milky_core::signing::group_state`).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use milky_core::signing::SecretKey;
use milky_core::signing::group_state::{DEFAULT_LIFETIME, GroupState, unix_now};
use milky_core::{GroupName, Store, StoreError, layout};

use crate::exit::user_error;
use crate::progress::Printer;
use crate::settings::Settings;

/// How many times a lost race on a state is re-read and redone.
const ATTEMPTS: u32 = 40;

/// After an edit of what `group` runs: signs its state anew when a signing key is configured
/// (`given`, else MILKY_SIGNING_KEY or `[deploy] signing_key`). Without one, warns when the
/// group has a signed state, which the edit has just left behind the index.
pub async fn after_edit(
    settings: &Settings,
    given: Option<&Path>,
    store: &Store,
    group: &GroupName,
    printer: Printer,
) -> anyhow::Result<()> {
    let Some(key) = settings.signing_key(given)? else {
        if let Ok(Some(state)) = read(store, group).await {
            printer.status(format!(
                "warning: {group} has a signed state (generation {}) and this edit was not signed (no signing key): servers that trust keys install none of it until `cargo milky sign-state {group}` runs with the key",
                state.generation
            ));
        }
        return Ok(());
    };
    let state = publish(store, &key.key, group, lifetime(settings))
        .await
        .with_context(|| {
            format!(
                "version.info was updated, but the signed state of {group} was not: servers that require it install nothing new until `cargo milky sign-state {group}` succeeds"
            )
        })?;
    printer.status(format!(
        "signed the state of {group}: generation {}, valid until {}",
        state.generation, state.expires
    ));
    Ok(())
}

/// How long a new state is valid: `[deploy] state_expiry_days`, else 30 days.
pub fn lifetime(settings: &Settings) -> Duration {
    settings.state_expiry_days.map_or(DEFAULT_LIFETIME, |days| {
        Duration::from_secs(u64::from(days) * 24 * 3600)
    })
}

/// Writes `group`'s state, signed by `key`, one generation above the one in the store, made
/// from the index as it is now. Compare-and-swap on the state object: a controller that loses
/// the race re-reads the index and the state and signs again, so each racing controller signs
/// the state it wrote and generations never repeat.
pub async fn publish(
    store: &Store,
    key: &SecretKey,
    group: &GroupName,
    lifetime: Duration,
) -> anyhow::Result<GroupState> {
    let state_key = layout::group_state(group);
    for attempt in 1..=ATTEMPTS {
        let Some((index, _)) = store.read_index().await? else {
            return Err(user_error(
                "the store has no version.info yet; upload something first",
            ));
        };
        let (previous, condition) = match store.get(&state_key).await? {
            Some(object) => {
                let text = String::from_utf8_lossy(&object.bytes);
                let previous = GroupState::parse(&text).map_err(|err| {
                    user_error(format!(
                        "{state_key} in {} does not parse, so its generation is unknown ({err}); it was not overwritten. Restore it (servers refuse a generation below the highest they accepted)",
                        store.url()
                    ))
                })?;
                (
                    previous.generation,
                    milky_core::Condition::IfMatch(object.etag),
                )
            }
            None => (0, milky_core::Condition::IfAbsent),
        };
        let expires = unix_now() + lifetime.as_secs();
        let mut state = GroupState::from_index(&index, group, previous + 1, expires);
        state.sign(key);
        match store
            .put(&state_key, state.to_toml().into_bytes(), condition)
            .await
        {
            Ok(_) => return Ok(state),
            Err(StoreError::PreconditionFailed { .. }) => {
                tracing::debug!(attempt, "lost a race on {state_key}; signing again");
                // Spread racing controllers out: a growing wait with a little jitter.
                let jitter = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::from(d.subsec_nanos() % 20));
                let wait = 10 * u64::from(attempt.min(20)) + jitter;
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            Err(other) => return Err(other.into()),
        }
    }
    Err(StoreError::TooManyRaces {
        store: store.url(),
        key: state_key,
        attempts: ATTEMPTS,
    }
    .into())
}

/// The state of `group` in the store, if any (for `status`).
pub async fn read(store: &Store, group: &GroupName) -> anyhow::Result<Option<GroupState>> {
    let key = layout::group_state(group);
    let Some(object) = store.get(&key).await? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&object.bytes);
    let state = GroupState::parse(&text).with_context(|| format!("{key} does not parse"))?;
    Ok(Some(state))
}
