//! Signatures: the admin's ed25519 key signs each index entry and each app's env, and agents
//! that trust the public key refuse what it did not sign.
//!
//! What is signed is not the package file but a short, domain-separated text that binds the
//! app, the version, and the package's sha256 and size ([`message`]). An entry moved to another
//! app or version, or pointed at another package, no longer verifies; the agent then checks the
//! downloaded bytes against the signed sha256 and size, so a signed entry pins the package.
//! An env's signature binds its group, app, generation and every variable ([`env_message`]).
//!
//! Text formats, one line each, so keys can be pasted into configs and statuses can name them:
//!
//! ```text
//! milky-ed25519 <key-id> <public key, base64> [comment]      public key (agents trust these)
//! milky-ed25519-secret <key-id> <secret seed, base64>         secret key file, after # comments
//! <key-id>:<signature, base64>                                 `signature = "…"` in version.info
//!                                                              and in env objects
//! ```
//!
//! The key id is the first 8 bytes of the public key's sha256, in hex.

pub mod deploy_keys;
pub mod group_state;
mod keys;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::index::PackageEntry;
use crate::names::{AppName, GroupName, Version};

pub use keys::{KeyError, KeyId, PUBLIC_TAG, PublicKey, SECRET_TAG, SecretKey};

/// The first line of the signed message: a signature made for anything else never verifies here.
const DOMAIN: &str = "milkywhite package signature v1";
/// The same for envs, so a package signature can never pass for an env's, or the reverse.
const ENV_DOMAIN: &str = "milkywhite env signature v1";

/// What a signature is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    /// An index entry: a package as a version of an app.
    Package { app: AppName, version: Version },
    /// An app's env (settings and secrets) in a group.
    Env { group: GroupName, app: AppName },
    /// What a group runs (see [`group_state`]).
    GroupState { group: GroupName },
    /// The deploy keys a root key allows to sign group state (see [`deploy_keys`]).
    DeployKeys,
}

impl Signed {
    fn plural(&self) -> &'static str {
        match self {
            Signed::Package { .. } => "packages",
            Signed::Env { .. } => "envs",
            Signed::GroupState { .. } => "group states",
            Signed::DeployKeys => "deploy key lists",
        }
    }

    fn bound(&self) -> &'static str {
        match self {
            Signed::Package { .. } => {
                "the index entry (its app, version, sha256 or size were changed after signing)"
            }
            Signed::Env { .. } => {
                "the env (its group, app, generation or variables were changed after signing)"
            }
            Signed::GroupState { .. } => {
                "the group state (its generation, expiry or entries were changed after signing)"
            }
            Signed::DeployKeys => {
                "the list of deploy keys (its generation or keys were changed after signing)"
            }
        }
    }
}

impl fmt::Display for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signed::Package { app, version } => write!(f, "{app} {version}"),
            Signed::Env { group, app } => write!(f, "the env of {app} in {group}"),
            Signed::GroupState { group } => write!(f, "the signed state of {group}"),
            Signed::DeployKeys => write!(f, "keys.toml (the deploy keys)"),
        }
    }
}

/// Why an index entry or an env is not accepted by a server that verifies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "{subject} is unsigned; this server runs only {} signed by a trusted key ({trusted})",
        .subject.plural()
    )]
    Unsigned { subject: Signed, trusted: String },
    #[error("{subject} has a malformed signature ({why}); refused")]
    Malformed { subject: Signed, why: String },
    #[error(
        "{subject} is not signed by a trusted key (signed by {signer}; trusted here: {trusted})"
    )]
    UntrustedKey {
        subject: Signed,
        signer: KeyId,
        trusted: String,
    },
    #[error(
        "{subject}: the signature by key {signer} does not match {}; refused",
        .subject.bound()
    )]
    Mismatch { subject: Signed, signer: KeyId },
}

/// The bytes that are signed for one index entry. Every value in it is checked to hold no line
/// break (names by their charset, the sha256 as hex when verifying), so no two entries share a
/// message.
pub fn message(app: &AppName, version: &Version, entry: &PackageEntry) -> String {
    format!(
        "{DOMAIN}\napp={app}\nversion={version}\nsha256={}\nsize={}\n",
        entry.sha256, entry.size
    )
}

/// The bytes that are signed for an app's env. The variables are written as JSON, which escapes
/// every line break in names and values, so the message has one reading.
pub fn env_message(
    group: &GroupName,
    app: &AppName,
    generation: u64,
    vars: &BTreeMap<String, String>,
) -> String {
    let vars = serde_json::to_string(vars).expect("a map of strings serializes");
    format!("{ENV_DOMAIN}\ngroup={group}\napp={app}\ngeneration={generation}\nvars={vars}\n")
}

/// The public keys a server trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

impl TrustedKeys {
    pub fn new(keys: Vec<PublicKey>) -> Self {
        let mut trusted = Self::default();
        for key in keys {
            if !trusted.keys.contains(&key) {
                trusted.keys.push(key);
            }
        }
        trusted
    }

    /// Parses a trusted keys file: one public key line each, `#` comments and blank lines
    /// ignored. `path` is for messages only.
    pub fn parse_file(text: &str, path: &Path) -> Result<Vec<PublicKey>, KeyError> {
        text.lines()
            .enumerate()
            .map(|(n, line)| (n + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
            .map(|(line, text)| {
                text.parse().map_err(|source| KeyError::BadTrustedKey {
                    path: path.to_owned(),
                    line,
                    source: Box::new(source),
                })
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(PublicKey::id).collect()
    }

    fn ids_text(&self) -> String {
        let ids: Vec<String> = self.ids().iter().map(ToString::to_string).collect();
        if ids.is_empty() {
            "none".into()
        } else {
            ids.join(", ")
        }
    }

    /// Checks that `entry`, listed as `version` of `app`, carries a valid signature by one of
    /// these keys. Returns the key that signed it.
    pub fn verify_entry(
        &self,
        app: &AppName,
        version: &Version,
        entry: &PackageEntry,
    ) -> Result<KeyId, VerifyError> {
        // Only a plain lowercase sha256 can have been signed (see `message`).
        let plain = entry.sha256.len() == 64
            && entry
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        self.verify(
            Signed::Package {
                app: app.clone(),
                version: version.clone(),
            },
            entry.signature.as_deref(),
            plain.then(|| message(app, version, entry)),
        )
    }

    /// Checks that an app's env, as read from its group, carries a valid signature by one of
    /// these keys for exactly this group, app, generation and variables.
    pub fn verify_env(
        &self,
        group: &GroupName,
        app: &AppName,
        generation: u64,
        vars: &BTreeMap<String, String>,
        signature: Option<&str>,
    ) -> Result<KeyId, VerifyError> {
        self.verify(
            Signed::Env {
                group: group.clone(),
                app: app.clone(),
            },
            signature,
            Some(env_message(group, app, generation, vars)),
        )
    }

    /// `message` is `None` when what it would be made of cannot have been signed.
    fn verify(
        &self,
        subject: Signed,
        signature: Option<&str>,
        message: Option<String>,
    ) -> Result<KeyId, VerifyError> {
        let Some(signature) = signature else {
            return Err(VerifyError::Unsigned {
                subject,
                trusted: self.ids_text(),
            });
        };
        let malformed = |subject: Signed, why: &str| VerifyError::Malformed {
            subject,
            why: why.into(),
        };
        let Some((id, encoded)) = signature.split_once(':') else {
            return Err(malformed(subject, "expected <key-id>:<base64>"));
        };
        let Some(signer) = KeyId::parse(id) else {
            return Err(malformed(subject, "the key id is not 16 hex digits"));
        };
        let Some(bytes) = BASE64
            .decode(encoded)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
        else {
            return Err(malformed(
                subject,
                "the signature is not 64 bytes of base64",
            ));
        };
        let Some(key) = self.keys.iter().find(|k| k.id == signer) else {
            return Err(VerifyError::UntrustedKey {
                subject,
                signer,
                trusted: self.ids_text(),
            });
        };
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        match message {
            Some(message)
                if key
                    .key
                    .verify_strict(message.as_bytes(), &signature)
                    .is_ok() =>
            {
                Ok(signer)
            }
            _ => Err(VerifyError::Mismatch { subject, signer }),
        }
    }
}

/// The key id of an entry's signature, if it has one that names a key (not verified).
pub fn signer(entry: &PackageEntry) -> Option<KeyId> {
    let (id, _) = entry.signature.as_deref()?.split_once(':')?;
    KeyId::parse(id)
}
