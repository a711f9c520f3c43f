//! Releases on disk: `APPS/<app>/releases/<version>/`, filled from the store through a staging
//! dir and an atomic rename, so a release dir either holds a whole verified package or does not
//! exist.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use milky_core::package::{Manifest, UnpackError, UnpackLimits, decompress, unpack};
use milky_core::{AppName, PackageEntry, Store, Version, layout};

const STAGING_PREFIX: &str = ".staging-";
/// An app dir being deleted is first renamed to this prefix (not a valid app name), so a
/// half-deleted app is never taken for an installed one.
const REMOVING_PREFIX: &str = ".removing-";

/// The file system of the downloads or apps dir is full: a problem of this server, not of the
/// release, so the deploy is tried again on the next pass, without backoff.
#[derive(Debug, thiserror::Error)]
#[error(
    "no space left on device while {doing} {app} {version} into {}: it needs ~{} MB, {} MB are free there; the release in use is untouched",
    dir.display(),
    needed.div_ceil(1 << 20),
    free / (1 << 20)
)]
pub struct NoSpaceLeft {
    /// "downloading" or "unpacking".
    pub doing: &'static str,
    pub app: AppName,
    pub version: Version,
    pub dir: PathBuf,
    /// What the package is, or unpacks to, in bytes.
    pub needed: u64,
    /// What is free on that file system once the staging dir is gone, in bytes.
    pub free: u64,
}

/// Whether a deploy failed because the disk is full.
pub fn is_no_space(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<NoSpaceLeft>())
}

/// Whether an error comes from a full file system (or quota).
fn is_storage_full(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(err) = source {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(unpack::is_disk_full)
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// Bytes free for an unprivileged writer on the file system of `path`.
fn free_bytes(path: &Path) -> u64 {
    available_bytes(path).unwrap_or(0)
}

fn available_bytes(path: &Path) -> Option<u64> {
    let stats = rustix::fs::statvfs(path).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// The apps dir of this server.
#[derive(Debug, Clone)]
pub struct Releases {
    pub apps: PathBuf,
    pub downloads: PathBuf,
    pub limits: UnpackLimits,
}

impl Releases {
    pub fn app_dir(&self, app: &AppName) -> PathBuf {
        self.apps.join(app.as_str())
    }

    pub fn release_dir(&self, app: &AppName, version: &Version) -> PathBuf {
        self.app_dir(app).join("releases").join(version.as_str())
    }

    /// The release's manifest, if the release is on disk.
    pub fn manifest(&self, app: &AppName, version: &Version) -> Option<Manifest> {
        let text = std::fs::read_to_string(
            self.release_dir(app, version)
                .join(milky_core::project::FILE_NAME),
        )
        .ok()?;
        Manifest::parse(&text).ok()
    }

    /// For each release, the sha256 of the package it was unpacked from: in
    /// `APPS/<app>/unpacked-from/<version>`, outside the release (whose files came from the
    /// package) and outside `releases/` (which holds only releases).
    fn unpacked_from_path(&self, app: &AppName, version: &Version) -> PathBuf {
        self.app_dir(app)
            .join("unpacked-from")
            .join(version.as_str())
    }

    /// The sha256 of the package a release on disk was unpacked from; None for a release
    /// unpacked by an agent older than this record.
    pub fn unpacked_from(&self, app: &AppName, version: &Version) -> Option<String> {
        let text = std::fs::read_to_string(self.unpacked_from_path(app, version)).ok()?;
        self.manifest(app, version).map(|_| text.trim().to_owned())
    }

    /// Versions of an app on disk.
    pub fn on_disk(&self, app: &AppName) -> Vec<Version> {
        let dir = self.app_dir(app).join("releases");
        let mut versions: Vec<Version> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        versions.sort();
        versions
    }

    /// Makes sure `version` of `app` is unpacked: downloads it (streamed to a file), checks size
    /// and sha256 against the index before unpacking anything, unpacks into a staging dir,
    /// checks the manifest names this app and version, and renames it into place.
    pub async fn fetch(
        &self,
        store: &Store,
        app: &AppName,
        version: &Version,
        entry: &PackageEntry,
    ) -> anyhow::Result<(PathBuf, Manifest, bool)> {
        let target = self.release_dir(app, version);
        if let Some(manifest) = self.manifest(app, version) {
            return Ok((target, manifest, false));
        }
        let releases = target
            .parent()
            .expect("release dir has a parent")
            .to_owned();
        fs_err::create_dir_all(&releases)?;
        make_traversable(&self.apps)?;
        make_traversable(&self.app_dir(app))?;
        make_traversable(&releases)?;
        self.clean_staging(&releases)?;
        fs_err::create_dir_all(&self.downloads)?;
        let download = self.downloads.join(format!("{app}-{version}.tar.bz2.part"));
        let key = layout::package(app, version);
        tracing::info!(%app, %version, "downloading {key} ({} bytes)", entry.size);
        let no_space = |free| NoSpaceLeft {
            doing: "downloading",
            app: app.clone(),
            version: version.clone(),
            dir: self.downloads.clone(),
            needed: entry.size,
            free,
        };
        // Refused before a byte is fetched when it cannot fit.
        if let Some(free) = available_bytes(&self.downloads)
            && free < entry.size
        {
            return Err(no_space(free).into());
        }
        let size = match store.download(&key, &download, &|_| {}).await {
            Ok(size) => size,
            Err(err) => {
                let _ = std::fs::remove_file(&download);
                if is_storage_full(&err) {
                    return Err(no_space(free_bytes(&self.downloads)).into());
                }
                return Err(anyhow::Error::new(err).context(format!("downloading {key}")));
            }
        };
        crate::crash::point("fetch:downloaded");
        let result = self.verify_and_unpack(&download, size, app, version, entry);
        let _ = std::fs::remove_file(&download);
        let manifest = result?;
        Ok((target, manifest, true))
    }

    fn verify_and_unpack(
        &self,
        download: &Path,
        size: u64,
        app: &AppName,
        version: &Version,
        entry: &PackageEntry,
    ) -> anyhow::Result<Manifest> {
        let target = self.release_dir(app, version);
        let releases = target.parent().expect("release dir has a parent");
        if size != entry.size {
            bail!(
                "package {app} {version} is {size} bytes, the index says {}: refused",
                entry.size
            );
        }
        let sha256 = milky_core::package::build::file_sha256(download)
            .with_context(|| format!("hashing {}", download.display()))?;
        if sha256 != entry.sha256 {
            bail!(
                "package {app} {version} has sha256 {sha256}, the index says {}: refused",
                entry.sha256
            );
        }
        let staging = releases.join(format!("{STAGING_PREFIX}{version}-{}", std::process::id()));
        fs_err::create_dir_all(&staging)?;
        let unpacked = (|| -> anyhow::Result<Manifest> {
            // Decompressed on every core; the same checks as `unpack` see every entry.
            let manifest = decompress::unpack_file(download, &staging, self.limits)
                .with_context(|| format!("unpacking {app} {version}"))?;
            if &manifest.app.name != app || &manifest.release.version != version {
                bail!(
                    "package {app} {version} holds the manifest of {} {}: refused",
                    manifest.app.name,
                    manifest.release.version
                );
            }
            make_traversable(&staging)?;
            // Written first: a record without its release is harmless and replaced next time.
            fs_err::create_dir_all(self.app_dir(app).join("unpacked-from"))?;
            crate::state_dir::write_atomic(
                &self.unpacked_from_path(app, version),
                format!("{sha256}\n").as_bytes(),
            )?;
            crate::crash::point("fetch:staged");
            fs_err::rename(&staging, &target)?;
            Ok(manifest)
        })();
        if let Err(err) = &unpacked {
            let _ = std::fs::remove_dir_all(&staging);
            if let Some(UnpackError::NoSpace { needed, .. }) = err.downcast_ref() {
                return Err(NoSpaceLeft {
                    doing: "unpacking",
                    app: app.clone(),
                    version: version.clone(),
                    dir: staging,
                    needed: *needed,
                    free: free_bytes(releases),
                }
                .into());
            }
        }
        unpacked
    }

    /// Leftovers of an interrupted unpack are never used; they are removed before the next one.
    fn clean_staging(&self, releases: &Path) -> anyhow::Result<()> {
        for entry in fs_err::read_dir(releases)? {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX)
            {
                fs_err::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }

    /// The version `APPS/<app>/current` points at.
    pub fn current(&self, app: &AppName) -> Option<Version> {
        let link = std::fs::read_link(self.app_dir(app).join("current")).ok()?;
        link.file_name()?.to_str()?.parse().ok()
    }

    /// Points `APPS/<app>/current` at a release (a new symlink renamed over the old one).
    pub fn set_current(&self, app: &AppName, version: &Version) -> anyhow::Result<()> {
        let link = self.app_dir(app).join("current");
        let temp = self.app_dir(app).join(".current.new");
        let _ = std::fs::remove_file(&temp);
        std::os::unix::fs::symlink(Path::new("releases").join(version.as_str()), &temp)?;
        fs_err::rename(&temp, &link)?;
        Ok(())
    }

    /// Deletes releases beyond the newest `keep` (by unpack time), never `live` or `wanted`.
    pub fn prune(
        &self,
        app: &AppName,
        keep: usize,
        protect: &[&Version],
    ) -> anyhow::Result<Vec<Version>> {
        let mut versions: Vec<(std::time::SystemTime, Version)> = self
            .on_disk(app)
            .into_iter()
            .map(|v| {
                let time = std::fs::metadata(self.release_dir(app, &v))
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (time, v)
            })
            .collect();
        versions.sort_by(|a, b| b.cmp(a));
        let mut removed = Vec::new();
        for (kept, (_, version)) in versions.into_iter().enumerate() {
            if kept >= keep.max(1) && !protect.contains(&&version) {
                let _ = std::fs::remove_file(self.unpacked_from_path(app, &version));
                fs_err::remove_dir_all(self.release_dir(app, &version))?;
                removed.push(version);
            }
        }
        Ok(removed)
    }

    /// Apps with a dir here, installed or not: a pass that was killed while removing an app
    /// may have taken it off the web servers but left its files.
    pub fn apps_on_disk(&self) -> Vec<AppName> {
        std::fs::read_dir(&self.apps)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// Removes everything of an app: renamed aside first (atomic), then deleted, so a killed
    /// removal never leaves a half-deleted release under the app's name.
    pub fn remove_app(&self, app: &AppName) -> anyhow::Result<()> {
        let dir = self.app_dir(app);
        if dir.exists() {
            let aside = self
                .apps
                .join(format!("{REMOVING_PREFIX}{app}-{}", std::process::id()));
            fs_err::rename(&dir, &aside)?;
            crate::crash::point("remove:files-moved");
            fs_err::remove_dir_all(&aside)?;
        }
        Ok(())
    }

    /// Deletes what killed removals left aside.
    pub fn clean_removed(&self) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(&self.apps).into_iter().flatten() {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(REMOVING_PREFIX)
            {
                tracing::info!(
                    "deleting {}, left by a removal that was interrupted",
                    entry.path().display()
                );
                fs_err::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }
}

/// Directories on the way to a release must be enterable by Apache's and nginx's users.
fn make_traversable(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs_err::metadata(dir)?.permissions().mode();
    if mode & 0o055 != 0o055 {
        fs_err::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o755))?;
    }
    Ok(())
}
