//! The uploaded packages the index lists, per app and version: recorded once, never changed
//! (other bytes under a known version are refused), and signed in place.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml_edit::{Item, Table, value};

use super::document::table_at;
use super::{Index, IndexError};
use crate::names::{AppName, Version};

/// What the store holds of one uploaded package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageEntry {
    /// sha256 of the `.tar.bz2` file, hex.
    pub sha256: String,
    /// Size of the `.tar.bz2` file in bytes.
    pub size: u64,
    /// When it was uploaded (RFC 3339).
    pub uploaded: String,
    /// `<key-id>:<base64>`: the admin's signature over app, version, sha256 and size (see
    /// [`crate::signing`]). Agents with trusted keys refuse entries without a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The package's `[app] python`, copied from its manifest, so a server that has no such
    /// Python refuses the release before it downloads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
}

/// The outcome of recording an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    New,
    /// The same bytes were uploaded before: nothing to do.
    AlreadyThere,
    /// The same bytes were uploaded before without a signature; the new one was added.
    Signed,
}

impl Index {
    /// Every app with its uploaded versions.
    pub fn apps(&self) -> BTreeMap<AppName, BTreeMap<Version, PackageEntry>> {
        self.data()
            .apps
            .iter()
            .map(|(app, data)| (app.clone(), data.versions.clone()))
            .collect()
    }

    /// The uploaded versions of one app, without copying the rest of the index.
    pub fn versions(&self, app: &AppName) -> Option<&BTreeMap<Version, PackageEntry>> {
        Some(&self.data().apps.get(app)?.versions)
    }

    pub fn package(&self, app: &AppName, version: &Version) -> Option<PackageEntry> {
        self.versions(app)?.get(version).cloned()
    }

    /// Records an uploaded package. The same bytes again are [`Added::AlreadyThere`], or
    /// [`Added::Signed`] when the entry had no signature and `entry` brings one (so releases
    /// uploaded before signing can be signed by uploading them again); other bytes under a known
    /// version are refused, because a version never changes once uploaded.
    pub fn add_package(
        &mut self,
        app: &AppName,
        version: &Version,
        entry: &PackageEntry,
    ) -> Result<Added, IndexError> {
        if let Some(existing) = self.package(app, version) {
            return if existing.sha256 == entry.sha256 {
                match &entry.signature {
                    Some(signature) if existing.signature.is_none() => {
                        if existing.size != entry.size {
                            return Err(IndexError::SizeMismatch {
                                app: app.clone(),
                                version: version.clone(),
                                listed: existing.size,
                                size: entry.size,
                            });
                        }
                        self.set_signature(app, version, signature)?;
                        Ok(Added::Signed)
                    }
                    _ => Ok(Added::AlreadyThere),
                }
            } else {
                Err(IndexError::VersionConflict {
                    app: app.clone(),
                    version: version.clone(),
                    existing: existing.sha256,
                    new: entry.sha256.clone(),
                })
            };
        }
        let versions = table_at(self.doc_mut(), &["apps", app.as_str(), "versions"]);
        let mut row = Table::new();
        row["sha256"] = value(&entry.sha256);
        row["size"] = value(i64::try_from(entry.size).unwrap_or(i64::MAX));
        row["uploaded"] = value(&entry.uploaded);
        if let Some(signature) = &entry.signature {
            row["signature"] = value(signature);
        }
        if let Some(python) = &entry.python {
            row["python"] = value(python);
        }
        versions.insert(version.as_str(), Item::Table(row));
        Ok(Added::New)
    }

    /// Sets (or replaces) the signature of an uploaded version's entry; the rest of the entry,
    /// and any comments on it, stay as they are.
    pub fn set_signature(
        &mut self,
        app: &AppName,
        version: &Version,
        signature: &str,
    ) -> Result<(), IndexError> {
        if self.package(app, version).is_none() {
            return Err(IndexError::UnknownVersion {
                app: app.clone(),
                version: version.clone(),
                known: self.known_versions(app),
            });
        }
        let row = table_at(self.doc_mut(), &["apps", app.as_str(), "versions"])
            .get_mut(version.as_str())
            .and_then(Item::as_table_like_mut)
            .expect("a listed version has a table");
        match row.get_mut("signature").and_then(Item::as_value_mut) {
            // Keeps the key's decor (a trailing comment, say).
            Some(existing) => {
                let decor = existing.decor().clone();
                *existing = signature.into();
                *existing.decor_mut() = decor;
            }
            None => {
                row.insert("signature", value(signature));
            }
        }
        Ok(())
    }

    pub(super) fn known_versions(&self, app: &AppName) -> String {
        self.versions(app)
            .map(|versions| {
                versions
                    .keys()
                    .map(Version::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|list| !list.is_empty())
            .unwrap_or_else(|| "none".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::{app, entry, version};

    #[test]
    fn same_bytes_again_are_a_no_op_other_bytes_are_refused() {
        let mut index = Index::new();
        assert_eq!(
            index
                .add_package(&app("a"), &version("v1"), &entry('a'))
                .unwrap(),
            Added::New
        );
        assert_eq!(
            index
                .add_package(&app("a"), &version("v1"), &entry('a'))
                .unwrap(),
            Added::AlreadyThere
        );
        let err = index
            .add_package(&app("a"), &version("v1"), &entry('b'))
            .unwrap_err();
        assert!(matches!(err, IndexError::VersionConflict { .. }), "{err}");
    }

    #[test]
    fn a_signature_is_written_added_to_an_unsigned_entry_and_replaced_in_place() {
        let mut index = Index::new();
        let signed = PackageEntry {
            signature: Some("0011223344556677:c2ln".into()),
            python: None,
            ..entry('a')
        };
        index
            .add_package(&app("a"), &version("v1"), &signed)
            .unwrap();
        assert!(
            index.to_string().contains(
                "uploaded = \"2026-11-25T04:25:00Z\"\nsignature = \"0011223344556677:c2ln\"\n"
            ),
            "{index}"
        );
        assert_eq!(
            index.package(&app("a"), &version("v1")),
            Some(signed.clone())
        );

        // An unsigned entry, uploaded again with a key, gets the signature; a signed one keeps its.
        index
            .add_package(&app("a"), &version("v2"), &entry('b'))
            .unwrap();
        let v2 = PackageEntry {
            signature: Some("0011223344556677:djI=".into()),
            python: None,
            ..entry('b')
        };
        assert_eq!(
            index.add_package(&app("a"), &version("v2"), &v2).unwrap(),
            Added::Signed
        );
        assert_eq!(
            index.package(&app("a"), &version("v2")).unwrap().signature,
            v2.signature
        );
        let other = PackageEntry {
            signature: Some("8899aabbccddeeff:b3RoZXI=".into()),
            python: None,
            ..entry('b')
        };
        assert_eq!(
            index
                .add_package(&app("a"), &version("v2"), &other)
                .unwrap(),
            Added::AlreadyThere
        );
        assert_eq!(
            index.package(&app("a"), &version("v2")).unwrap().signature,
            v2.signature
        );
        // The same sha256 with another size is not signed.
        let unsigned_v3 = entry('c');
        index
            .add_package(&app("a"), &version("v3"), &unsigned_v3)
            .unwrap();
        let err = index
            .add_package(
                &app("a"),
                &version("v3"),
                &PackageEntry {
                    size: 1,
                    signature: Some("x".into()),
                    python: None,
                    ..entry('c')
                },
            )
            .unwrap_err();
        assert!(matches!(err, IndexError::SizeMismatch { .. }), "{err}");

        // set_signature replaces in place and keeps a comment on the line.
        let text = index.to_string().replace(
            "signature = \"0011223344556677:c2ln\"",
            "signature = \"0011223344556677:c2ln\" # release key",
        );
        let mut index = Index::parse(&text).unwrap();
        index
            .set_signature(&app("a"), &version("v1"), "8899aabbccddeeff:bmV3")
            .unwrap();
        assert!(
            index
                .to_string()
                .contains("signature = \"8899aabbccddeeff:bmV3\" # release key\n"),
            "{index}"
        );
        let err = index
            .set_signature(&app("a"), &version("v9"), "x")
            .unwrap_err();
        assert!(matches!(err, IndexError::UnknownVersion { .. }), "{err}");
    }
}
