//! Package signatures on this server: the keys it trusts, and the check every deploy passes
//! before anything is downloaded or started.
//!
//! The check is on the index entry: its signature covers app, version, sha256 and size, and
//! the release store then checks the downloaded bytes against that sha256 and size. Together
//! they pin the package to what the key holder uploaded. A release already on disk is checked
//! the same way (a switch back needs no download but the same signature), and against the
//! sha256 it was unpacked from.

use anyhow::bail;
use milky_core::env::AppEnv;
use milky_core::signing::{PublicKey, TrustedKeys};
use milky_core::status::{SignatureCheck, Signatures};
use milky_core::{AppName, GroupName, PackageEntry, Version};

use crate::config::Signing;

/// What this server does with signatures in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verifier {
    /// No trusted keys configured: every entry is accepted, as before signing existed.
    Off,
    /// Only entries signed by one of these keys are accepted.
    On(TrustedKeys),
    /// Trusted keys are configured but cannot be read: every entry is refused.
    Broken(String),
}

impl Verifier {
    /// The keys of `[signing]`: the inline ones (checked when the settings loaded) and those of
    /// the keys file, read now so a changed file counts from the next pass on.
    pub fn load(signing: &Signing) -> Self {
        let mut keys: Vec<PublicKey> = signing.trusted_keys.clone();
        if let Some(path) = &signing.trusted_keys_file {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(err) => {
                    return Self::Broken(format!(
                        "reading trusted_keys_file {}: {err}",
                        path.display()
                    ));
                }
            };
            match TrustedKeys::parse_file(&text, path) {
                Ok(found) if found.is_empty() => {
                    return Self::Broken(format!(
                        "trusted_keys_file {} holds no keys",
                        path.display()
                    ));
                }
                Ok(found) => keys.extend(found),
                Err(err) => return Self::Broken(err.to_string()),
            }
        }
        if keys.is_empty() {
            Self::Off
        } else {
            Self::On(TrustedKeys::new(keys))
        }
    }

    /// Whether `entry` may be installed (or kept installed) as `version` of `app`.
    /// `unpacked_from` is the sha256 a release already on disk was unpacked from, if known.
    pub fn check(
        &self,
        app: &AppName,
        version: &Version,
        entry: &PackageEntry,
        unpacked_from: Option<&str>,
    ) -> anyhow::Result<()> {
        match self {
            Self::Off => Ok(()),
            Self::Broken(why) => {
                bail!("{app} {version} not installed: the trusted keys cannot be read ({why})")
            }
            Self::On(keys) => {
                let signer = keys.verify_entry(app, version, entry)?;
                if let Some(sha256) = unpacked_from
                    && sha256 != entry.sha256
                {
                    bail!(
                        "{app} {version} on disk was unpacked from sha256 {sha256}, the signed index entry names {}; refused (delete the release dir to download it again)",
                        entry.sha256
                    );
                }
                tracing::debug!(%app, %version, %signer, "signature verified");
                Ok(())
            }
        }
    }

    /// Whether an app's env may be used: with trusted keys, only one they signed for exactly
    /// this group, app, generation and variables.
    pub fn check_env(&self, group: &GroupName, app: &AppName, env: &AppEnv) -> anyhow::Result<()> {
        match self {
            Self::Off => Ok(()),
            Self::Broken(why) => {
                bail!("the env of {app} is not used: the trusted keys cannot be read ({why})")
            }
            Self::On(keys) => {
                let signer = keys.verify_env(
                    group,
                    app,
                    env.generation,
                    &env.vars,
                    env.signature.as_deref(),
                )?;
                tracing::debug!(%app, generation = env.generation, %signer, "env signature verified");
                Ok(())
            }
        }
    }

    /// What the status report says about signatures here.
    pub fn status(&self) -> Signatures {
        match self {
            Self::Off => Signatures {
                check: SignatureCheck::NotVerifying,
                trusted_keys: Vec::new(),
                note: Some("no trusted keys configured ([signing] in agent.toml)".into()),
            },
            Self::On(keys) => Signatures {
                check: SignatureCheck::Verifying,
                trusted_keys: keys.ids().iter().map(ToString::to_string).collect(),
                note: None,
            },
            Self::Broken(why) => Signatures {
                check: SignatureCheck::Broken,
                trusted_keys: Vec::new(),
                note: Some(why.clone()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use milky_core::signing::SecretKey;

    use super::*;

    fn entry(key: Option<&SecretKey>) -> PackageEntry {
        let mut entry = PackageEntry {
            sha256: "ab".repeat(32),
            size: 10,
            uploaded: "t".into(),
            signature: None,
            python: None,
        };
        if let Some(key) = key {
            entry.signature = Some(key.sign_entry(&app(), &v(), &entry));
        }
        entry
    }
    fn app() -> AppName {
        "shop".parse().unwrap()
    }
    fn v() -> Version {
        "v1".parse().unwrap()
    }

    #[test]
    fn keys_come_from_the_settings_and_the_keys_file() {
        assert_eq!(Verifier::load(&Signing::default()), Verifier::Off);
        let off = Verifier::Off;
        off.check(&app(), &v(), &entry(None), None).unwrap();
        assert_eq!(off.status().check, SignatureCheck::NotVerifying);

        let (inline, listed) = (
            SecretKey::generate().unwrap(),
            SecretKey::generate().unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trusted_keys");
        std::fs::write(&file, format!("# release key\n{}\n", listed.public())).unwrap();
        let signing = Signing {
            trusted_keys: vec![inline.public()],
            trusted_keys_file: Some(file.clone()),
            ..Signing::default()
        };
        let on = Verifier::load(&signing);
        for key in [&inline, &listed] {
            on.check(&app(), &v(), &entry(Some(key)), None).unwrap();
        }
        let err = on.check(&app(), &v(), &entry(None), None).unwrap_err();
        assert!(err.to_string().contains("shop v1 is unsigned"), "{err}");
        let status = on.status();
        assert_eq!(status.check, SignatureCheck::Verifying);
        assert_eq!(status.trusted_keys.len(), 2);

        // A release on disk from other bytes than the signed entry names is refused.
        let signed = entry(Some(&inline));
        on.check(&app(), &v(), &signed, Some(&signed.sha256))
            .unwrap();
        let err = on
            .check(&app(), &v(), &signed, Some(&"cd".repeat(32)))
            .unwrap_err();
        assert!(
            err.to_string().contains("on disk was unpacked from"),
            "{err}"
        );

        // A keys file that is set but unusable refuses everything.
        for (text, why) in [
            (None, "reading trusted_keys_file"),
            (Some("# none\n"), "holds no keys"),
            (Some("junk\n"), "line 1"),
        ] {
            let path: PathBuf = match text {
                Some(text) => {
                    std::fs::write(&file, text).unwrap();
                    file.clone()
                }
                None => dir.path().join("missing"),
            };
            let broken = Verifier::load(&Signing {
                trusted_keys: vec![inline.public()],
                trusted_keys_file: Some(path),
                ..Signing::default()
            });
            assert!(
                matches!(&broken, Verifier::Broken(w) if w.contains(why)),
                "{broken:?}"
            );
            let err = broken
                .check(&app(), &v(), &entry(Some(&inline)), None)
                .unwrap_err();
            assert!(
                err.to_string().contains("trusted keys cannot be read"),
                "{err}"
            );
            assert_eq!(broken.status().check, SignatureCheck::Broken);
        }
    }

    #[test]
    fn envs_are_checked_like_entries() {
        let key = SecretKey::generate().unwrap();
        let group: GroupName = "stable".parse().unwrap();
        let mut env = AppEnv {
            generation: 2,
            signature: None,
            vars: [("SECRET_KEY".to_owned(), "s".to_owned())].into(),
        };
        Verifier::Off.check_env(&group, &app(), &env).unwrap();
        let on = Verifier::On(TrustedKeys::new(vec![key.public()]));
        let err = on.check_env(&group, &app(), &env).unwrap_err();
        assert!(
            err.to_string()
                .contains("the env of shop in stable is unsigned"),
            "{err}"
        );
        env.sign(&group, &app(), &key);
        on.check_env(&group, &app(), &env).unwrap();
        env.vars.insert("DEBUG".to_owned(), "1".to_owned());
        let err = on.check_env(&group, &app(), &env).unwrap_err();
        assert!(err.to_string().contains("does not match the env"), "{err}");
        let broken = Verifier::Broken("no file".into());
        assert!(broken.check_env(&group, &app(), &env).is_err());
    }
}
