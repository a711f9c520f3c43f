//! Helpers shared by the unit tests of the pass's modules.

use milky_core::{AppName, PackageEntry};

pub(super) fn app(name: &str) -> AppName {
    name.parse().unwrap()
}

/// An index entry for a package the tests never download: no signature, no Python constraint.
pub(super) fn entry() -> PackageEntry {
    PackageEntry {
        sha256: "00".repeat(32),
        size: 1,
        uploaded: "2026-01-01T00:00:00Z".into(),
        signature: None,
        python: None,
    }
}
