//! The key types: key ids, public keys in their one-line text form, the admin's secret key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::index::PackageEntry;
use crate::names::{AppName, GroupName, Version};

use super::{env_message, message};

/// The first word of a public key line.
pub const PUBLIC_TAG: &str = "milky-ed25519";
/// The first word of the key line in a secret key file.
pub const SECRET_TAG: &str = "milky-ed25519-secret";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a MilkyWhite public key ({why}); expected `{PUBLIC_TAG} <key-id> <base64 key>`")]
    BadPublicKey { why: String },
    #[error(
        "{path} is not a MilkyWhite secret key ({why}); expected a line `{SECRET_TAG} <key-id> <base64 seed>` as `cargo milky keygen` writes it"
    )]
    BadSecretKey { path: PathBuf, why: String },
    #[error("{path} line {line}: {source}")]
    BadTrustedKey {
        path: PathBuf,
        line: usize,
        source: Box<KeyError>,
    },
    #[error("cannot make a key: the system's random source failed: {0}")]
    Random(String),
}

/// A key's short name: the first 8 bytes of the sha256 of its public key, as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    fn of(key: &VerifyingKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut id = [0; 8];
        id.copy_from_slice(&digest[..8]);
        Self(id)
    }

    pub fn parse(text: &str) -> Option<Self> {
        let mut id = [0; 8];
        hex::decode_to_slice(text, &mut id).ok()?;
        Some(Self(id))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A public key that agents may trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub(super) key: VerifyingKey,
    pub(super) id: KeyId,
}

impl PublicKey {
    pub fn id(&self) -> KeyId {
        self.id
    }
}

impl fmt::Display for PublicKey {
    /// The one-line text form, `milky-ed25519 <key-id> <base64 key>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PUBLIC_TAG} {} {}",
            self.id,
            BASE64.encode(self.key.as_bytes())
        )
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;

    /// Parses a public key line; anything after the key is a comment. The key id must match
    /// the key, which catches a line cut short or pasted together from two keys.
    fn from_str(line: &str) -> Result<Self, KeyError> {
        let bad = |why: &str| KeyError::BadPublicKey { why: why.into() };
        let mut words = line.split_whitespace();
        match words.next() {
            Some(PUBLIC_TAG) => {}
            Some(SECRET_TAG) => {
                return Err(bad(
                    "this is a secret key: give agents the public key (the .pub file)",
                ));
            }
            Some(other) => return Err(bad(&format!("it starts with {other:?}"))),
            None => return Err(bad("the line is empty")),
        }
        let id = words.next().ok_or_else(|| bad("the key id is missing"))?;
        let id = KeyId::parse(id).ok_or_else(|| bad("the key id is not 16 hex digits"))?;
        let encoded = words.next().ok_or_else(|| bad("the key is missing"))?;
        let bytes: [u8; 32] = BASE64
            .decode(encoded)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("the key is not 32 bytes of base64"))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| bad("the key is not a valid ed25519 point"))?;
        if key.is_weak() {
            return Err(bad("the key is a weak ed25519 key"));
        }
        if KeyId::of(&key) != id {
            return Err(bad(&format!(
                "the key id {id} does not belong to this key (its id is {})",
                KeyId::of(&key)
            )));
        }
        Ok(Self { key, id })
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let line = String::deserialize(d)?;
        line.parse().map_err(serde::de::Error::custom)
    }
}

/// The admin's secret key, which signs index entries.
pub struct SecretKey {
    key: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public().id())
    }
}

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        use rand::TryRngCore;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| KeyError::Random(e.to_string()))?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(Self { key })
    }

    pub fn public(&self) -> PublicKey {
        let key = self.key.verifying_key();
        PublicKey {
            id: KeyId::of(&key),
            key,
        }
    }

    /// The secret key file's text: comments that say what it is, then the key line.
    pub fn to_file_text(&self) -> String {
        let public = self.public();
        format!(
            "# MilkyWhite package signing key (ed25519, secret). Keep it secret: agents that trust\n\
             # its public key run whatever it signs. Made by `cargo milky keygen`.\n\
             # public key: {public}\n\
             {SECRET_TAG} {} {}\n",
            public.id(),
            BASE64.encode(self.key.to_bytes())
        )
    }

    /// Parses a secret key file (`path` is for messages only).
    pub fn parse_file(text: &str, path: &Path) -> Result<Self, KeyError> {
        let bad = |why: &str| KeyError::BadSecretKey {
            path: path.to_owned(),
            why: why.into(),
        };
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let line = lines.next().ok_or_else(|| bad("it holds no key line"))?;
        if lines.next().is_some() {
            return Err(bad("it holds more than one key line"));
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some(SECRET_TAG) => {}
            Some(PUBLIC_TAG) => {
                return Err(bad(
                    "this is a public key; signing needs the secret key file",
                ));
            }
            _ => return Err(bad("the key line does not start with the right tag")),
        }
        let id = words
            .next()
            .and_then(KeyId::parse)
            .ok_or_else(|| bad("the key id is missing or not 16 hex digits"))?;
        let seed: [u8; 32] = words
            .next()
            .and_then(|w| BASE64.decode(w).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("the key is not 32 bytes of base64"))?;
        if words.next().is_some() {
            return Err(bad("unexpected text after the key"));
        }
        let key = Self {
            key: SigningKey::from_bytes(&seed),
        };
        if key.public().id() != id {
            return Err(bad(&format!(
                "the key id {id} does not belong to this key (its id is {})",
                key.public().id()
            )));
        }
        Ok(key)
    }

    /// Reads a secret key file.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_file(&text, path)
    }

    /// The signature of an index entry, in its text form `<key-id>:<base64>`.
    pub fn sign_entry(&self, app: &AppName, version: &Version, entry: &PackageEntry) -> String {
        self.sign(&message(app, version, entry))
    }

    /// The signature of an app's env at `generation`, in the same text form.
    pub fn sign_env(
        &self,
        group: &GroupName,
        app: &AppName,
        generation: u64,
        vars: &BTreeMap<String, String>,
    ) -> String {
        self.sign(&env_message(group, app, generation, vars))
    }

    pub(super) fn sign(&self, message: &str) -> String {
        let signature = self.key.sign(message.as_bytes());
        format!(
            "{}:{}",
            self.public().id(),
            BASE64.encode(signature.to_bytes())
        )
    }
}
