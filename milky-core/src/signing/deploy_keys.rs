//! The deploy keys an offline root key allows to sign group state (`keys.toml` in the store):
//! servers that trust the root key (`[signing] root_keys`) accept a group state only from a key
//! on the newest list the root signed, so a deploy key is added or revoked by one signed edit
//! in the store, without touching the servers.
//!
//! ```toml
//! generation = 2
//! signature = "<root key-id>:<base64>"
//! keys = ["milky-ed25519 <key-id> <base64>"]
//! ```

use serde::{Deserialize, Serialize};

use super::{KeyId, PublicKey, SecretKey, Signed, TrustedKeys, VerifyError};

/// The first line of the signed message, distinct from every other signed text.
const KEYS_DOMAIN: &str = "milkywhite deploy keys v1";

/// The list of deploy keys, as the root key signed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployKeys {
    /// One more than the list it replaced: servers refuse a list older than one they accepted,
    /// so a revoked key cannot come back with an old list.
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Public key lines, as `cargo milky keygen` prints them.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// Why a server does not accept a list of deploy keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    #[error("keys.toml names a key that does not parse ({0}); refused")]
    BadKey(String),
    #[error(transparent)]
    Signature(#[from] VerifyError),
    #[error(
        "keys.toml is generation {found}, older than generation {highest} this server already accepted (a replayed list?); refused"
    )]
    Rollback { found: u64, highest: u64 },
}

impl DeployKeys {
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a key list serializes")
    }

    fn public_keys(&self) -> Result<Vec<PublicKey>, KeysError> {
        self.keys
            .iter()
            .map(|line| {
                line.parse::<PublicKey>()
                    .map_err(|e| KeysError::BadKey(e.to_string()))
            })
            .collect()
    }

    /// The signed text: the generation and each key in its canonical one-line form (comments
    /// dropped), one per line.
    fn message(&self) -> Result<String, KeysError> {
        let mut text = format!("{KEYS_DOMAIN}\ngeneration={}\n", self.generation);
        for key in self.public_keys()? {
            text.push_str(&format!("key={key}\n"));
        }
        Ok(text)
    }

    /// Adds `key` (no change if listed); returns whether the list changed.
    pub fn add(&mut self, key: &PublicKey) -> bool {
        let listed = self.public_keys().unwrap_or_default();
        if listed.iter().any(|k| k.id() == key.id()) {
            return false;
        }
        self.keys.push(key.to_string());
        true
    }

    /// Drops the key with `id`; returns whether it was listed.
    pub fn revoke(&mut self, id: KeyId) -> bool {
        let before = self.keys.len();
        self.keys
            .retain(|line| line.parse::<PublicKey>().map_or(true, |k| k.id() != id));
        self.keys.len() != before
    }

    /// Signs the list with the root key, one generation up.
    pub fn sign_next(&mut self, root: &SecretKey) -> Result<(), KeysError> {
        self.generation += 1;
        self.signature = Some(root.sign(&self.message()?));
        Ok(())
    }

    /// The deploy keys, if the list is signed by one of `roots` and not older than `highest`.
    pub fn check(&self, roots: &TrustedKeys, highest: u64) -> Result<TrustedKeys, KeysError> {
        let message = self.message()?;
        roots.verify(Signed::DeployKeys, self.signature.as_deref(), Some(message))?;
        if self.generation < highest {
            return Err(KeysError::Rollback {
                found: self.generation,
                highest,
            });
        }
        Ok(TrustedKeys::new(self.public_keys()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_signs_the_list_and_servers_take_only_the_newest() {
        let root = SecretKey::generate().unwrap();
        let roots = TrustedKeys::new(vec![root.public()]);
        let (old, new) = (
            SecretKey::generate().unwrap(),
            SecretKey::generate().unwrap(),
        );
        let mut list = DeployKeys::default();
        assert!(list.add(&old.public()));
        assert!(!list.add(&old.public()), "listed once");
        list.sign_next(&root).unwrap();
        let first = list.clone();
        assert_eq!(first.generation, 1);
        assert_eq!(first.check(&roots, 0).unwrap().ids(), [old.public().id()]);
        assert_eq!(DeployKeys::parse(&first.to_toml()).unwrap(), first);

        list.add(&new.public());
        assert!(list.revoke(old.public().id()));
        list.sign_next(&root).unwrap();
        assert_eq!(list.check(&roots, 1).unwrap().ids(), [new.public().id()]);
        // The old list, replayed, is refused once the new one was accepted.
        let err = first.check(&roots, 2).unwrap_err();
        assert!(
            matches!(
                err,
                KeysError::Rollback {
                    found: 1,
                    highest: 2
                }
            ),
            "{err}"
        );

        // Edited after signing, or signed by a deploy key instead of the root: refused.
        let mut edited = list.clone();
        edited.keys.push(old.public().to_string());
        assert!(matches!(
            edited.check(&roots, 0).unwrap_err(),
            KeysError::Signature(VerifyError::Mismatch { .. })
        ));
        let mut forged = list.clone();
        forged.sign_next(&new).unwrap();
        assert!(matches!(
            forged.check(&roots, 0).unwrap_err(),
            KeysError::Signature(VerifyError::UntrustedKey { .. })
        ));
        let mut junk = list.clone();
        junk.keys.push("junk".into());
        assert!(matches!(junk.check(&roots, 0), Err(KeysError::BadKey(_))));
    }
}
