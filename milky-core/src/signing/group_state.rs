//! A group's signed state: what the group runs (each app's version, its package's sha256 and its
//! env generation), under a generation that only grows and an expiry, signed by the controller.
//!
//! Package and env signatures say *what* may run; this says *where and when*. A server that
//! requires it installs only what the newest state it accepted names, so an attacker who can
//! write to the store can no longer point a group back at an old signed release (a lower
//! generation is refused), serve an old index for ever (the state expires), or combine entries
//! from different moments (every entry must match the one signed state).
//!
//! ```toml
//! group = "stable"
//! generation = 7
//! expires = "2026-12-29T09:00:00Z"
//! signature = "<key-id>:<base64>"
//!
//! [apps.shop]
//! version = "v1022"
//! sha256 = "…"
//! env = 3
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{KeyId, SecretKey, Signed, TrustedKeys, VerifyError};
use crate::index::Index;
use crate::names::{AppName, GroupName, Version};

/// The first line of the signed message, distinct from the package and env domains.
const STATE_DOMAIN: &str = "milkywhite group state v1";

/// How long a state is good for unless the controller says otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a group runs, as the controller signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupState {
    pub group: GroupName,
    /// One more than the state it replaced: servers refuse a generation below the highest they
    /// accepted.
    pub generation: u64,
    /// RFC 3339, UTC: after this, servers install nothing new until a fresh state arrives.
    pub expires: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    #[serde(default)]
    pub apps: BTreeMap<AppName, StateEntry>,
}

/// One app of a group's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateEntry {
    pub version: Version,
    /// The package's sha256, as its index entry names it.
    pub sha256: String,
    /// The app's env generation in the group (0: none).
    #[serde(default)]
    pub env: u64,
}

/// Why a server does not accept a group's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the signed state of {group} is missing ({why}); run `cargo milky sign-state {group}`")]
    Missing { group: GroupName, why: String },
    #[error("the signed state names group {found}, not {group}; refused")]
    WrongGroup { group: GroupName, found: GroupName },
    #[error("the signed state of {group} has a bad expiry {expires:?}; refused")]
    BadExpiry { group: GroupName, expires: String },
    #[error(transparent)]
    Signature(#[from] VerifyError),
    #[error(
        "the signed state of {group} is generation {found}, older than generation {highest} this server already accepted (a replayed state?); refused"
    )]
    Rollback {
        group: GroupName,
        found: u64,
        highest: u64,
    },
    #[error(
        "the signed state of {group} (generation {generation}) expired at {expires}: nothing new is installed until a fresh one arrives (`cargo milky sign-state {group}`)"
    )]
    Expired {
        group: GroupName,
        generation: u64,
        expires: String,
    },
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix seconds as RFC 3339.
pub fn rfc3339(unix_secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix_secs)).to_string()
}

impl GroupState {
    /// The state of `group` as `index` has it now, unsigned.
    pub fn from_index(index: &Index, group: &GroupName, generation: u64, expires: u64) -> Self {
        let envs = index.env_generations(group);
        let apps = index
            .group(group)
            .into_iter()
            .filter_map(|(app, version)| {
                let entry = index.package(&app, &version)?;
                let env = envs.get(&app).copied().unwrap_or(0);
                Some((
                    app,
                    StateEntry {
                        version,
                        sha256: entry.sha256,
                        env,
                    },
                ))
            })
            .collect();
        Self {
            group: group.clone(),
            generation,
            expires: rfc3339(expires),
            signature: None,
            apps,
        }
    }

    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a group state serializes")
    }

    /// The expiry in unix seconds, if it is a valid RFC 3339 time.
    pub fn expires_at(&self) -> Option<u64> {
        let time = humantime::parse_rfc3339(&self.expires).ok()?;
        Some(time.duration_since(UNIX_EPOCH).ok()?.as_secs())
    }

    /// The bytes that are signed: one line per field and per app, every value free of line
    /// breaks and spaces (names by their charset, sha256 checked as plain hex), so the message
    /// has one reading. `None` when something in it cannot have been signed.
    pub fn message(&self) -> Option<String> {
        let expires = self.expires_at()?;
        let mut text = format!(
            "{STATE_DOMAIN}\ngroup={}\ngeneration={}\nexpires={expires}\n",
            self.group, self.generation
        );
        for (app, entry) in &self.apps {
            if !is_plain_sha256(&entry.sha256) {
                return None;
            }
            text.push_str(&format!(
                "app={app} version={} sha256={} env={}\n",
                entry.version, entry.sha256, entry.env
            ));
        }
        Some(text)
    }

    /// Signs the state with `key` (the signature replaces any earlier one).
    pub fn sign(&mut self, key: &SecretKey) {
        let message = self.message().expect("a state made from an index signs");
        self.signature = Some(key.sign(&message));
    }

    /// The key id its signature names (not verified).
    pub fn signer(&self) -> Option<KeyId> {
        KeyId::parse(self.signature.as_deref()?.split_once(':')?.0)
    }

    /// Whether a server of `group` that accepted generation `highest` before may accept this
    /// state at `now`: signed by one of `keys`, for this group, not older, not expired.
    /// Returns the key that signed it.
    pub fn check(
        &self,
        keys: &TrustedKeys,
        group: &GroupName,
        highest: u64,
        now: u64,
    ) -> Result<KeyId, StateError> {
        if &self.group != group {
            return Err(StateError::WrongGroup {
                group: group.clone(),
                found: self.group.clone(),
            });
        }
        let Some(expires) = self.expires_at() else {
            return Err(StateError::BadExpiry {
                group: group.clone(),
                expires: self.expires.clone(),
            });
        };
        let signer = keys.verify(
            Signed::GroupState {
                group: group.clone(),
            },
            self.signature.as_deref(),
            self.message(),
        )?;
        if self.generation < highest {
            return Err(StateError::Rollback {
                group: group.clone(),
                found: self.generation,
                highest,
            });
        }
        if now >= expires {
            return Err(StateError::Expired {
                group: group.clone(),
                generation: self.generation,
                expires: self.expires.clone(),
            });
        }
        Ok(signer)
    }

    /// Whether the state lets `app` run `version` from the package with `sha256`, with env
    /// generation `env`: the index entry a server is about to install must be exactly the one
    /// signed here.
    pub fn allows(
        &self,
        app: &AppName,
        version: &Version,
        sha256: &str,
        env: u64,
    ) -> Result<(), String> {
        let generation = self.generation;
        let Some(signed) = self.apps.get(app) else {
            return Err(format!(
                "the signed state of {} (generation {generation}) does not list {app}; refused",
                self.group
            ));
        };
        if &signed.version != version || signed.sha256 != sha256 {
            return Err(format!(
                "the index names {app} {version} (sha256 {sha256}), the signed state (generation {generation}) names {} (sha256 {}); refused",
                signed.version, signed.sha256
            ));
        }
        if signed.env != env {
            return Err(format!(
                "the index names env generation {env} of {app}, the signed state (generation {generation}) names {}; refused",
                signed.env
            ));
        }
        Ok(())
    }
}

fn is_plain_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::PackageEntry;

    fn group(s: &str) -> GroupName {
        s.parse().unwrap()
    }
    fn app(s: &str) -> AppName {
        s.parse().unwrap()
    }
    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    fn index() -> Index {
        let mut index = Index::new();
        for (name, version, hex) in [("shop", "v2", "ab"), ("blog", "v1", "cd")] {
            let entry = PackageEntry {
                sha256: hex.repeat(32),
                size: 10,
                uploaded: "2026-11-25T04:25:00Z".into(),
                signature: None,
                python: None,
            };
            index.add_package(&app(name), &v(version), &entry).unwrap();
            index
                .set_version(&group("stable"), &app(name), &v(version))
                .unwrap();
        }
        index.set_env_generation(&group("stable"), &app("shop"), 3);
        index
    }

    const NOW: u64 = 1_800_000_000;

    fn signed(key: &SecretKey, generation: u64) -> GroupState {
        let mut state = GroupState::from_index(&index(), &group("stable"), generation, NOW + 60);
        state.sign(key);
        state
    }

    #[test]
    fn a_state_is_made_from_the_index_and_round_trips() {
        let key = SecretKey::generate().unwrap();
        let state = signed(&key, 4);
        assert_eq!(state.apps.len(), 2);
        assert_eq!(
            state.apps[&app("shop")],
            StateEntry {
                version: v("v2"),
                sha256: "ab".repeat(32),
                env: 3
            }
        );
        assert_eq!(state.apps[&app("blog")].env, 0);
        assert_eq!(state.expires_at(), Some(NOW + 60));
        assert_eq!(GroupState::parse(&state.to_toml()).unwrap(), state);
        assert_eq!(state.signer(), Some(key.public().id()));
        // Another group of the same index has nothing.
        let other = GroupState::from_index(&index(), &group("beta"), 1, NOW);
        assert!(other.apps.is_empty());
    }

    #[test]
    fn a_valid_state_is_accepted_and_pins_every_entry() {
        let key = SecretKey::generate().unwrap();
        let keys = TrustedKeys::new(vec![key.public()]);
        let state = signed(&key, 4);
        let stable = group("stable");
        assert_eq!(
            state.check(&keys, &stable, 4, NOW).unwrap(),
            key.public().id()
        );
        state.check(&keys, &stable, 0, NOW).unwrap();
        let sha = "ab".repeat(32);
        state.allows(&app("shop"), &v("v2"), &sha, 3).unwrap();
        for (version, sha256, env, why) in [
            ("v1", sha.as_str(), 3, "names v2"),
            ("v2", &"ef".repeat(32)[..], 3, "names v2"),
            ("v2", sha.as_str(), 2, "env generation 2"),
        ] {
            let err = state
                .allows(&app("shop"), &v(version), sha256, env)
                .unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let err = state.allows(&app("wiki"), &v("v1"), &sha, 0).unwrap_err();
        assert!(err.contains("does not list wiki"), "{err}");
    }

    #[test]
    fn replayed_expired_edited_and_foreign_states_are_refused() {
        let key = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let keys = TrustedKeys::new(vec![key.public()]);
        let stable = group("stable");
        let state = signed(&key, 4);

        let err = state.check(&keys, &stable, 5, NOW).unwrap_err();
        assert!(
            matches!(
                err,
                StateError::Rollback {
                    found: 4,
                    highest: 5,
                    ..
                }
            ),
            "{err}"
        );
        let err = state.check(&keys, &stable, 4, NOW + 60).unwrap_err();
        assert!(matches!(err, StateError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("expired at"), "{err}");
        let err = state.check(&keys, &group("beta"), 0, NOW).unwrap_err();
        assert!(matches!(err, StateError::WrongGroup { .. }), "{err}");

        // Any edit after signing breaks the signature: an entry, the generation, the expiry.
        let mut edits: Vec<GroupState> = Vec::new();
        let mut e = state.clone();
        e.apps.get_mut(&app("shop")).unwrap().version = v("v1");
        edits.push(e);
        let mut e = state.clone();
        e.apps.remove(&app("blog"));
        edits.push(e);
        let mut e = state.clone();
        e.generation = 9;
        edits.push(e);
        let mut e = state.clone();
        e.expires = rfc3339(NOW + 3600);
        edits.push(e);
        let mut e = state.clone();
        e.apps.get_mut(&app("shop")).unwrap().sha256 = "AB".repeat(32);
        edits.push(e);
        for edited in edits {
            let err = edited.check(&keys, &stable, 0, NOW).unwrap_err();
            assert!(
                matches!(err, StateError::Signature(VerifyError::Mismatch { .. })),
                "{err}"
            );
            assert!(err.to_string().contains("the group state"), "{err}");
        }

        let err = signed(&other, 4).check(&keys, &stable, 0, NOW).unwrap_err();
        assert!(
            matches!(err, StateError::Signature(VerifyError::UntrustedKey { .. })),
            "{err}"
        );
        let mut unsigned = state.clone();
        unsigned.signature = None;
        let err = unsigned.check(&keys, &stable, 0, NOW).unwrap_err();
        assert!(err.to_string().contains("is unsigned"), "{err}");
        let mut bad = state.clone();
        bad.expires = "tomorrow".into();
        assert!(matches!(
            bad.check(&keys, &stable, 0, NOW).unwrap_err(),
            StateError::BadExpiry { .. }
        ));
    }

    #[test]
    fn no_other_signature_passes_for_a_state() {
        // The same key's package signature over the same text shape is a different domain.
        let key = SecretKey::generate().unwrap();
        let state = signed(&key, 1);
        let message = state.message().unwrap();
        assert!(message.starts_with("milkywhite group state v1\ngroup=stable\n"));
        assert!(message.contains(&format!(
            "app=shop version=v2 sha256={} env=3\n",
            "ab".repeat(32)
        )));
    }
}
