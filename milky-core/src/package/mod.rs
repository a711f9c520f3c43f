//! The package: `<app>-<version>.tar.bz2`, a project tree with its manifest `milky.toml` at the
//! root. Deterministic — sorted entries, one mtime, no owners — so the same tree gives the same
//! bytes, and compressed on every core as concatenated bzip2 streams (see [`compress`]).

pub mod build;
pub mod compress;
pub mod decompress;
mod memory;
pub mod source;
pub mod unpack;
mod writers;

use serde::{Deserialize, Serialize};

use crate::names::Version;
use crate::project::{AppSettings, Hooks, Snippets};

pub use build::{BuildRequest, BuiltPackage, ProjectTree, build};
pub use unpack::{UnpackError, UnpackLimits, read_manifest, unpack};

/// The package format this build writes and reads.
pub const FORMAT: u32 = 1;

/// The manifest, `milky.toml` at the root of every package: the project's `[app]`, `[hooks]` and
/// `[snippets]` as packed, and what the packer resolved. The project's `[deploy]` settings are
/// never packed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub app: AppSettings,
    pub hooks: Hooks,
    #[serde(default)]
    pub snippets: Snippets,
    pub release: ReleaseInfo,
}

/// What `cargo milky package` resolved for one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseInfo {
    pub version: Version,
    /// The source date (RFC 3339): the commit's time, `SOURCE_DATE_EPOCH`, or the newest file's
    /// mtime — never the wall clock, so that packing twice gives the same bytes.
    pub built: String,
    /// The git commit the tree was packed from, if it was a git checkout (`-dirty` if modified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// sha256 over the sorted listing of every packed entry with its mode and content hash.
    pub content_sha256: String,
    /// Number of entries packed, directories included, manifest excluded.
    pub entries: u64,
    /// Whether `wheels/` holds every requirement, for offline installs.
    pub wheels: bool,
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        if manifest.format != FORMAT {
            return Err(format!(
                "package format {} is not {FORMAT}, the one this build reads",
                manifest.format
            ));
        }
        manifest.app.validate()?;
        Ok(manifest)
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("manifest serializes");
        format!(
            "# Written by `cargo milky package`: what this release is and how servers run it.\n{body}"
        )
    }
}

#[cfg(test)]
mod tests;
