//! An app's certificate in a group: `groups/<group>/tls/<app>.toml`, the chain and its key,
//! given by `cargo milky tls set` (`tls = "provided"`) or ordered by a server of the group
//! (`tls = "acme"`, see [`crate::acme`]). A secret, like the app's env: whoever may read the
//! env may read it, and servers keep the key 0600.
//!
//! Both sides check a pair the same way ([`inspect`], [`CertificateInfo::check`]): the key
//! belongs to the first certificate of the chain, its names cover the app's server names, and
//! it has not expired. The controller checks before it uploads, every server again before it
//! installs, so a bad pair never replaces a good one.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::names::{AppName, GroupName};
use crate::store::{Condition, Store, StoreError};

/// Two weeks: a certificate that expires sooner is a warning in `status`.
pub const EXPIRY_WARNING_SECS: u64 = 14 * 24 * 3600;

pub fn key(group: &GroupName, app: &AppName) -> String {
    crate::layout::tls(group, app)
}

/// Where a stored certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Provided,
    Acme,
}

/// The stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredCertificate {
    pub source: Source,
    /// The names and expiry, for reading without parsing the chain (`status`).
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_after: u64,
    /// PEM: the certificate first, then its intermediates.
    pub chain: String,
    /// PEM (PKCS#8): the private key.
    pub key: String,
}

impl StoredCertificate {
    pub fn parse(text: &str) -> Result<Self, TlsError> {
        toml::from_str(text).map_err(|e| TlsError::Malformed(e.to_string()))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a stored certificate serializes")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the certificate is not PEM X.509: {0}")]
    BadCertificate(String),
    #[error(
        "the key is not a PEM private key (PKCS#8, `BEGIN PRIVATE KEY`; convert with `openssl pkcs8 -topk8 -nocrypt`): {0}"
    )]
    BadKey(String),
    #[error(
        "the key does not belong to the certificate (its public key differs): give the key the certificate was issued for"
    )]
    KeyMismatch,
    #[error("the certificate does not cover {missing}: it names {names}")]
    NamesNotCovered { missing: String, names: String },
    #[error("the certificate expired at {0}")]
    Expired(String),
    #[error("the certificate is not valid before {0}")]
    NotYetValid(String),
    #[error("the stored certificate is broken: {0}")]
    Malformed(String),
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Its DNS names (subject alternative names, else the common name).
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: u64,
    pub not_after: u64,
}

/// Reads the first certificate of `chain` and checks that `key` is its private key.
pub fn inspect(chain: &str, key: &str) -> Result<CertificateInfo, TlsError> {
    let key = rcgen::KeyPair::from_pem(key).map_err(|e| TlsError::BadKey(e.to_string()))?;
    with_certificate(chain, |cert| {
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(TlsError::KeyMismatch);
        }
        Ok(info(cert))
    })
}

/// What the first certificate of `chain` says about itself.
pub fn certificate_info(chain: &str) -> Result<CertificateInfo, TlsError> {
    with_certificate(chain, |cert| Ok(info(cert)))
}

fn with_certificate<T>(
    chain: &str,
    then: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> Result<T, TlsError>,
) -> Result<T, TlsError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain.as_bytes())
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    then(&cert)
}

fn info(cert: &x509_parser::certificate::X509Certificate<'_>) -> CertificateInfo {
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
            .collect();
    }
    let secs = |t: x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
    CertificateInfo {
        names,
        not_before: secs(cert.validity().not_before),
        not_after: secs(cert.validity().not_after),
    }
}

impl CertificateInfo {
    /// Checks that it covers every name in `server_names` and is valid at `now` (Unix seconds).
    pub fn check(&self, server_names: &[String], now: u64) -> Result<(), TlsError> {
        let missing: Vec<&str> = server_names
            .iter()
            .filter(|host| !self.names.iter().any(|name| covers(name, host)))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(TlsError::NamesNotCovered {
                missing: missing.join(", "),
                names: self.names.join(", "),
            });
        }
        if now >= self.not_after {
            return Err(TlsError::Expired(time_text(self.not_after)));
        }
        if now < self.not_before {
            return Err(TlsError::NotYetValid(time_text(self.not_before)));
        }
        Ok(())
    }
}

/// Whether the certificate name `name` (maybe `*.example.com`) covers the host `host`: a
/// wildcard covers exactly one label.
pub fn covers(name: &str, host: &str) -> bool {
    let (name, host) = (name.to_ascii_lowercase(), host.to_ascii_lowercase());
    match name.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => name == host,
    }
}

/// Unix seconds as RFC 3339.
pub fn time_text(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

/// Now, in Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes an app's certificate (checked by the caller), replacing any.
pub async fn write(
    store: &Store,
    group: &GroupName,
    app: &AppName,
    cert: &StoredCertificate,
) -> Result<(), StoreError> {
    store
        .put(
            &key(group, app),
            cert.to_toml().into_bytes(),
            Condition::None,
        )
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_pair_is_read_and_a_foreign_key_refused() {
        let (chain, key) = pair(&["shop.example", "*.shop.example"]);
        let info = inspect(&chain, &key).unwrap();
        assert_eq!(info.names, ["shop.example", "*.shop.example"]);
        let hosts = ["shop.example".to_owned(), "www.shop.example".to_owned()];
        info.check(&hosts, now()).unwrap();
        let (_, other_key) = pair(&["shop.example"]);
        assert!(matches!(
            inspect(&chain, &other_key),
            Err(TlsError::KeyMismatch)
        ));
        assert!(matches!(
            inspect("not pem", &key),
            Err(TlsError::BadCertificate(_))
        ));
        assert!(matches!(
            inspect(&chain, "not pem"),
            Err(TlsError::BadKey(_))
        ));
    }

    #[test]
    fn names_and_dates_are_checked() {
        let (chain, key) = pair(&["shop.example"]);
        let info = inspect(&chain, &key).unwrap();
        let err = info
            .check(&["shop.example".into(), "api.example".into()], now())
            .unwrap_err();
        assert!(err.to_string().contains("api.example"), "{err}");
        assert!(matches!(
            info.check(&["shop.example".into()], info.not_after),
            Err(TlsError::Expired(_))
        ));
        assert!(covers("*.example.com", "a.example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(covers("Shop.Example", "shop.example"));
    }

    #[test]
    fn the_stored_object_round_trips() {
        let (chain, key) = pair(&["shop.example"]);
        let stored = StoredCertificate {
            source: Source::Provided,
            names: vec!["shop.example".into()],
            not_after: 1,
            chain,
            key,
        };
        assert_eq!(StoredCertificate::parse(&stored.to_toml()).unwrap(), stored);
    }
}
