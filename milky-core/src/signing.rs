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

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::index::PackageEntry;
use crate::names::{AppName, GroupName, Version};

/// The first word of a public key line.
pub const PUBLIC_TAG: &str = "milky-ed25519";
/// The first word of the key line in a secret key file.
pub const SECRET_TAG: &str = "milky-ed25519-secret";
/// The first line of the signed message: a signature made for anything else never verifies here.
const DOMAIN: &str = "milkywhite package signature v1";
/// The same for envs, so a package signature can never pass for an env's, or the reverse.
const ENV_DOMAIN: &str = "milkywhite env signature v1";

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

/// What a signature is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    /// An index entry: a package as a version of an app.
    Package { app: AppName, version: Version },
    /// An app's env (settings and secrets) in a group.
    Env { group: GroupName, app: AppName },
}

impl Signed {
    fn plural(&self) -> &'static str {
        match self {
            Signed::Package { .. } => "packages",
            Signed::Env { .. } => "envs",
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
        }
    }
}

impl fmt::Display for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signed::Package { app, version } => write!(f, "{app} {version}"),
            Signed::Env { group, app } => write!(f, "the env of {app} in {group}"),
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

    pub(crate) fn parse(text: &str) -> Option<Self> {
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
    key: VerifyingKey,
    id: KeyId,
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

    fn sign(&self, message: &str) -> String {
        let signature = self.key.sign(message.as_bytes());
        format!(
            "{}:{}",
            self.public().id(),
            BASE64.encode(signature.to_bytes())
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn app(s: &str) -> AppName {
        s.parse().unwrap()
    }
    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }
    fn entry() -> PackageEntry {
        PackageEntry {
            sha256: "ab".repeat(32),
            size: 4096,
            uploaded: "2026-11-25T04:25:00Z".into(),
            signature: None,
            python: None,
        }
    }
    fn signed(key: &SecretKey, app_name: &str, version: &str) -> PackageEntry {
        let mut e = entry();
        e.signature = Some(key.sign_entry(&app(app_name), &v(version), &e));
        e
    }
    fn trusting(keys: &[&SecretKey]) -> TrustedKeys {
        TrustedKeys::new(keys.iter().map(|k| k.public()).collect())
    }

    #[test]
    fn a_signed_entry_verifies_and_names_its_key() {
        let key = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let e = signed(&key, "shop", "v1");
        let signature = e.signature.clone().unwrap();
        assert!(signature.starts_with(&format!("{}:", key.public().id())));
        assert_eq!(signer(&e), Some(key.public().id()));
        assert_eq!(
            trusting(&[&other, &key])
                .verify_entry(&app("shop"), &v("v1"), &e)
                .unwrap(),
            key.public().id()
        );
        // Ed25519 is deterministic: signing again gives the same text.
        assert_eq!(key.sign_entry(&app("shop"), &v("v1"), &entry()), signature);
    }

    #[test]
    fn unsigned_and_untrusted_entries_are_refused_with_the_reason() {
        let key = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let trusted = trusting(&[&key]);
        let err = trusted
            .verify_entry(&app("shop"), &v("v1"), &entry())
            .unwrap_err();
        assert!(matches!(err, VerifyError::Unsigned { .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "shop v1 is unsigned; this server runs only packages signed by a trusted key ({})",
                key.public().id()
            )
        );
        let err = trusted
            .verify_entry(&app("shop"), &v("v1"), &signed(&other, "shop", "v1"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "shop v1 is not signed by a trusted key (signed by {}; trusted here: {})",
                other.public().id(),
                key.public().id()
            )
        );
    }

    #[test]
    fn every_signed_field_is_bound() {
        let key = SecretKey::generate().unwrap();
        let trusted = trusting(&[&key]);
        let good = signed(&key, "shop", "v1");
        let mismatch = |a: &str, ver: &str, e: &PackageEntry| {
            let err = trusted.verify_entry(&app(a), &v(ver), e).unwrap_err();
            assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
            assert!(err.to_string().contains("does not match"), "{err}");
        };
        // The entry moved to another app or version.
        mismatch("blog", "v1", &good);
        mismatch("shop", "v2", &good);
        // The entry pointed at another package.
        let mut e = good.clone();
        e.sha256 = "cd".repeat(32);
        mismatch("shop", "v1", &e);
        let mut e = good.clone();
        e.size += 1;
        mismatch("shop", "v1", &e);
        // Upper case hex is another text, never what was signed.
        let mut e = good.clone();
        e.sha256 = e.sha256.to_uppercase();
        mismatch("shop", "v1", &e);
        // The upload time is not signed: it is informational.
        let mut e = good.clone();
        e.uploaded = "later".into();
        trusted.verify_entry(&app("shop"), &v("v1"), &e).unwrap();
        // A flipped bit in the signature.
        let mut e = good.clone();
        let (id, sig) = good.signature.as_deref().unwrap().split_once(':').unwrap();
        let mut bytes = BASE64.decode(sig).unwrap();
        bytes[10] ^= 1;
        e.signature = Some(format!("{id}:{}", BASE64.encode(bytes)));
        mismatch("shop", "v1", &e);
    }

    fn group(s: &str) -> GroupName {
        s.parse().unwrap()
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_env_signature_binds_group_app_generation_and_every_variable() {
        let key = SecretKey::generate().unwrap();
        let trusted = trusting(&[&key]);
        let env = vars(&[("SECRET_KEY", "s3cret"), ("DEBUG", "0")]);
        let signature = key.sign_env(&group("stable"), &app("shop"), 3, &env);
        let verify = |g: &str, a: &str, generation: u64, v: &BTreeMap<String, String>| {
            trusted.verify_env(&group(g), &app(a), generation, v, Some(&signature))
        };
        assert_eq!(
            verify("stable", "shop", 3, &env).unwrap(),
            key.public().id()
        );
        let mut changed = env.clone();
        changed.insert("DEBUG".into(), "1".into());
        let mut added = env.clone();
        added.insert("DATABASE_URL".into(), "postgres://evil".into());
        let mut removed = env.clone();
        removed.remove("DEBUG");
        // A value that would read as two variables if the message were not escaped.
        let smuggled = vars(&[("SECRET_KEY", "s3cret\",\"DEBUG\":\"0")]);
        for (g, a, generation, v) in [
            ("unstable", "shop", 3, &env),
            ("stable", "blog", 3, &env),
            ("stable", "shop", 2, &env),
            ("stable", "shop", 3, &changed),
            ("stable", "shop", 3, &added),
            ("stable", "shop", 3, &removed),
            ("stable", "shop", 3, &smuggled),
        ] {
            let err = verify(g, a, generation, v).unwrap_err();
            assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
        }
        let err = verify("unstable", "shop", 3, &env).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the env of shop in unstable: the signature by key {} does not match the env (its group, app, generation or variables were changed after signing); refused",
                key.public().id()
            )
        );
        let err = trusted
            .verify_env(&group("stable"), &app("shop"), 3, &env, None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the env of shop in stable is unsigned; this server runs only envs signed by a trusted key ({})",
                key.public().id()
            )
        );
        // A package signature never passes for an env's.
        let entry_signature = key.sign_entry(&app("shop"), &v("v1"), &entry());
        let err = trusted
            .verify_env(
                &group("stable"),
                &app("shop"),
                3,
                &env,
                Some(&entry_signature),
            )
            .unwrap_err();
        assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let key = SecretKey::generate().unwrap();
        let trusted = trusting(&[&key]);
        for bad in [
            "",
            "nocolon",
            "xyz:AAAA",
            &format!("{}:AAAA", key.public().id()),
        ] {
            let mut e = entry();
            e.signature = Some(bad.into());
            let err = trusted
                .verify_entry(&app("shop"), &v("v1"), &e)
                .unwrap_err();
            assert!(
                matches!(err, VerifyError::Malformed { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn keys_round_trip_through_their_text_forms() {
        let key = SecretKey::generate().unwrap();
        let path = Path::new("/keys/signing.key");
        let text = key.to_file_text();
        assert!(
            text.starts_with("# MilkyWhite package signing key"),
            "{text}"
        );
        let read = SecretKey::parse_file(&text, path).unwrap();
        assert_eq!(read.public(), key.public());
        let line = key.public().to_string();
        assert!(line.starts_with("milky-ed25519 "), "{line}");
        assert_eq!(line.parse::<PublicKey>().unwrap(), key.public());
        // A trailing comment is allowed.
        assert_eq!(
            format!("{line} ops@build-1").parse::<PublicKey>().unwrap(),
            key.public()
        );
        let file = format!("# production\n\n{line}\n  # old key below\n{}\n", {
            SecretKey::generate().unwrap().public()
        });
        let keys = TrustedKeys::parse_file(&file, Path::new("/etc/milky/trusted_keys")).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], key.public());
    }

    #[test]
    fn bad_keys_are_refused_with_clear_reasons() {
        let key = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let line = key.public().to_string();
        let words: Vec<&str> = line.split(' ').collect();
        let cases = [
            (String::new(), "the line is empty"),
            ("ssh-ed25519 AAAA".into(), "starts with \"ssh-ed25519\""),
            (format!("{PUBLIC_TAG} {}", words[1]), "the key is missing"),
            (format!("{PUBLIC_TAG} zz {}", words[2]), "not 16 hex digits"),
            (
                format!("{PUBLIC_TAG} {} AAAA", words[1]),
                "not 32 bytes of base64",
            ),
            (
                format!("{PUBLIC_TAG} {} {}", other.public().id(), words[2]),
                "does not belong to this key",
            ),
            (
                key.to_file_text().lines().last().unwrap().to_owned(),
                "this is a secret key",
            ),
        ];
        for (text, why) in cases {
            let err = text.parse::<PublicKey>().unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
        }
        let err = TrustedKeys::parse_file(
            &format!("{line}\n# fine\nnonsense\n"),
            Path::new("/etc/milky/trusted_keys"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("/etc/milky/trusted_keys line 3: not a MilkyWhite public key"),
            "{err}"
        );

        let path = Path::new("/keys/signing.key");
        let secret = key.to_file_text();
        let cases = [
            ("# only a comment\n".to_owned(), "holds no key line"),
            (line.clone(), "this is a public key"),
            (format!("{secret}{secret}"), "more than one key line"),
            (
                secret.replace(
                    &key.public().id().to_string(),
                    &other.public().id().to_string(),
                ),
                "does not belong to this key",
            ),
            (
                format!("{SECRET_TAG} {} AAAA\n", key.public().id()),
                "not 32 bytes of base64",
            ),
        ];
        for (text, why) in cases {
            let err = SecretKey::parse_file(&text, path).unwrap_err().to_string();
            assert!(
                err.starts_with("/keys/signing.key is not a MilkyWhite secret key"),
                "{err}"
            );
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }
}
