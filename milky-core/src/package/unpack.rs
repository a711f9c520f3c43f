//! Unpacking a package on a server: the agent's security boundary.
//!
//! The archive comes from the store, which others can write to, so nothing in it is trusted:
//! every entry's path must stay inside the target, only directories, regular files and symlinks
//! that stay inside are accepted, nothing is ever written through a symlink, sizes and counts are
//! capped against decompression bombs, and modes are normalised (no setuid, world-readable).
//! Any refusal leaves a half-filled target that the caller discards: unpack into a staging dir.

use std::collections::HashSet;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::Manifest;
use super::writers::{MAX_QUEUED_FILE, WriteJob, Writers};
use crate::project::FILE_NAME;

/// Caps against decompression bombs.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_bytes: 4 << 30,
            max_entries: 200_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("package entry {entry:?} refused: {why}")]
    Refused { entry: String, why: String },
    #[error(
        "package unpacks to more than {limit} bytes; refused as a possible decompression bomb (raise the limit if it is real)"
    )]
    TooLarge { limit: u64 },
    #[error(
        "package has more than {limit} entries; refused as a possible decompression bomb (raise the limit if it is real)"
    )]
    TooManyEntries { limit: u64 },
    #[error("package is corrupt or truncated: {0}")]
    Corrupt(io::Error),
    #[error("package has no milky.toml manifest at its root")]
    NoManifest,
    #[error("package manifest is invalid: {0}")]
    BadManifest(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The file system of the target is full (or out of inodes). `needed` is what the whole
    /// package unpacks to, counted on through the rest of the archive without writing it.
    #[error(
        "no space left on device writing {path}: the package unpacks to {needed} bytes in {entries} entries"
    )]
    NoSpace {
        path: PathBuf,
        needed: u64,
        entries: u64,
    },
}

impl UnpackError {
    fn is_no_space(&self) -> bool {
        matches!(self, UnpackError::Io { source, .. } if is_disk_full(source))
    }
}

/// Whether an I/O error means the file system (or the writer's quota) is full.
pub fn is_disk_full(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// What the tar loop has seen so far.
#[derive(Default)]
struct Progress {
    symlinks: HashSet<PathBuf>,
    /// Directories this unpack made (or found): each is made once, not once per file in it
    /// (directory calls are slow on some file systems).
    dirs: HashSet<PathBuf>,
    total: u64,
    count: u64,
}

impl Progress {
    fn ensure_dir(&mut self, dir: &Path) -> Result<(), UnpackError> {
        if self.dirs.contains(dir) {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(|source| UnpackError::Io {
            path: dir.to_owned(),
            source,
        })?;
        self.dirs.insert(dir.to_owned());
        Ok(())
    }
}

/// Unpacks a `.tar.bz2` read from `archive` into the existing, empty directory `target` and
/// returns its manifest.
pub fn unpack(
    archive: impl Read,
    target: &Path,
    limits: UnpackLimits,
) -> Result<Manifest, UnpackError> {
    unpack_tar(bzip2::read::MultiBzDecoder::new(archive), target, limits)
}

/// [`unpack`] of an already decompressed tar stream, e.g. from [`super::decompress`]: every check
/// lives here, whoever decompresses.
pub fn unpack_tar(
    tar_stream: impl Read,
    target: &Path,
    limits: UnpackLimits,
) -> Result<Manifest, UnpackError> {
    let mut tar = tar::Archive::new(tar_stream);
    let mut progress = Progress::default();
    let writers = Writers::new();
    let mut entries = tar.entries().map_err(UnpackError::Corrupt)?;
    loop {
        let next = entries.next();
        let result = match next {
            Some(entry) => entry
                .map_err(UnpackError::Corrupt)
                .and_then(|entry| unpack_entry(entry, target, limits, &mut progress, &writers)),
            None => break,
        };
        if let Err(err) = result.and_then(|()| writers.check()) {
            if !err.is_no_space() {
                return Err(err);
            }
            let UnpackError::Io { path, .. } = err else {
                unreachable!("is_no_space is only true for Io")
            };
            // Count the rest, so the error can say how much room the release needs.
            let (mut needed, mut count) = (progress.total, progress.count);
            for entry in entries.by_ref() {
                let Ok(entry) = entry else { break };
                count += 1;
                if entry.header().entry_type().is_file() {
                    needed = needed.saturating_add(entry.header().size().unwrap_or(0));
                }
                if needed > limits.max_bytes || count > limits.max_entries {
                    break;
                }
            }
            return Err(UnpackError::NoSpace {
                path,
                needed,
                entries: count,
            });
        }
    }
    // Every queued file is on disk before the manifest is read; a full disk met by a writer
    // at the very end still gets its clear error.
    writers.finish().map_err(|err| match err {
        UnpackError::Io { path, .. } if err.is_no_space() => UnpackError::NoSpace {
            path,
            needed: progress.total,
            entries: progress.count,
        },
        err => err,
    })?;
    let symlinks = progress.symlinks;
    let manifest_path = target.join(FILE_NAME);
    if symlinks.contains(Path::new(FILE_NAME)) {
        return Err(UnpackError::BadManifest("milky.toml is a symlink".into()));
    }
    let text = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(UnpackError::NoManifest),
        Err(source) => {
            return Err(UnpackError::Io {
                path: manifest_path,
                source,
            });
        }
    };
    Manifest::parse(&text).map_err(UnpackError::BadManifest)
}

/// Checks and writes one entry of the archive.
fn unpack_entry<R: Read>(
    mut entry: tar::Entry<'_, R>,
    target: &Path,
    limits: UnpackLimits,
    progress: &mut Progress,
    writers: &Writers,
) -> Result<(), UnpackError> {
    progress.count += 1;
    if progress.count > limits.max_entries {
        return Err(UnpackError::TooManyEntries {
            limit: limits.max_entries,
        });
    }
    let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    let refuse = |why: &str| UnpackError::Refused {
        entry: raw_name.clone(),
        why: why.to_owned(),
    };
    let rel = safe_relative_path(&raw_name).map_err(&refuse)?;
    if rel.as_os_str().is_empty() {
        return Ok(()); // "./" itself
    }
    if rel
        .ancestors()
        .skip(1)
        .any(|parent| progress.symlinks.contains(parent))
    {
        return Err(refuse(
            "it would be written through a symlink of the same package",
        ));
    }
    let dest = target.join(&rel);
    let io_err = |source| UnpackError::Io {
        path: dest.clone(),
        source,
    };
    let kind = entry.header().entry_type();
    match kind {
        tar::EntryType::Directory => {
            progress.ensure_dir(&dest)?;
            set_mode(&dest, 0o755)?;
        }
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            let size = entry.header().size().map_err(UnpackError::Corrupt)?;
            progress.total = progress.total.saturating_add(size);
            if progress.total > limits.max_bytes {
                return Err(UnpackError::TooLarge {
                    limit: limits.max_bytes,
                });
            }
            if let Some(parent) = dest.parent() {
                progress.ensure_dir(parent)?;
            }
            let executable = entry.header().mode().map_err(UnpackError::Corrupt)? & 0o111 != 0;
            let mode = if executable { 0o755 } else { 0o644 };
            if size <= MAX_QUEUED_FILE {
                let mut bytes = Vec::with_capacity(size as usize);
                (&mut entry)
                    .take(size)
                    .read_to_end(&mut bytes)
                    .map_err(UnpackError::Corrupt)?;
                if bytes.len() as u64 != size {
                    return Err(UnpackError::Corrupt(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{raw_name} is truncated"),
                    )));
                }
                return writers.send(WriteJob {
                    entry: raw_name.clone(),
                    dest,
                    mode,
                    bytes,
                });
            }
            // create_new: never replace (or follow) something already there.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&dest)
                .map_err(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        refuse("the same path appears twice")
                    } else {
                        UnpackError::Io {
                            path: dest.clone(),
                            source: e,
                        }
                    }
                })?;
            // Reading is the package's fault (corrupt), writing the disk's (e.g. full).
            let mut copied = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            let mut data = (&mut entry).take(size);
            loop {
                let n = match data.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(UnpackError::Corrupt(e)),
                };
                io::Write::write_all(&mut file, &buf[..n]).map_err(io_err)?;
                copied += n as u64;
            }
            if copied != size {
                return Err(UnpackError::Corrupt(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{raw_name} is truncated"),
                )));
            }
            // The umask may have taken bits off; set on the open file, no second path lookup.
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(io_err)?;
        }
        tar::EntryType::Symlink => {
            let target_path = entry
                .link_name()
                .map_err(UnpackError::Corrupt)?
                .ok_or_else(|| refuse("symlink without a target"))?;
            if !symlink_stays_inside(&rel, &target_path) {
                return Err(refuse(&format!(
                    "symlink to {} points outside the release",
                    target_path.display()
                )));
            }
            if let Some(parent) = dest.parent() {
                progress.ensure_dir(parent)?;
            }
            std::os::unix::fs::symlink(&target_path, &dest).map_err(io_err)?;
            progress.symlinks.insert(rel);
        }
        tar::EntryType::Link => return Err(refuse("hard links are not allowed in packages")),
        tar::EntryType::Char | tar::EntryType::Block => {
            return Err(refuse("device files are not allowed in packages"));
        }
        tar::EntryType::Fifo => return Err(refuse("fifos are not allowed in packages")),
        tar::EntryType::XGlobalHeader
        | tar::EntryType::XHeader
        | tar::EntryType::GNULongName
        | tar::EntryType::GNULongLink => {}
        other => {
            return Err(refuse(&format!(
                "entry type {other:?} is not allowed in packages"
            )));
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), UnpackError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        UnpackError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

/// The entry's path as plain relative components, or why it is refused.
fn safe_relative_path(name: &str) -> Result<PathBuf, &'static str> {
    if name.contains('\0') {
        return Err("its path holds a NUL byte");
    }
    let mut rel = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("its path climbs out with '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("its path is absolute"),
        }
    }
    Ok(rel)
}

/// Whether a symlink at `link` (relative to the release root) with `target` resolves, lexically,
/// to somewhere inside the release.
fn symlink_stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth = link.components().count() as i64 - 1;
    for component in target.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Reads the manifest of a package file without unpacking it.
pub fn read_manifest(path: &Path) -> Result<Manifest, UnpackError> {
    if let Some(text) = manifest_from_tail(path) {
        return Manifest::parse(&text).map_err(UnpackError::BadManifest);
    }
    let io_error = |source| UnpackError::Io {
        path: path.to_owned(),
        source,
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    // Not at the end where the packer puts it: decoding on every core halves the wait for it.
    super::decompress::with_decoded(path, threads, |decoded| {
        let mut tar = tar::Archive::new(decoded);
        for entry in tar.entries().map_err(UnpackError::Corrupt)? {
            let mut entry = entry.map_err(UnpackError::Corrupt)?;
            let is_manifest = entry.path().map_err(UnpackError::Corrupt)?.as_os_str() == FILE_NAME;
            if is_manifest && entry.header().entry_type().is_file() {
                let mut text = String::new();
                entry
                    .read_to_string(&mut text)
                    .map_err(UnpackError::Corrupt)?;
                return Manifest::parse(&text).map_err(UnpackError::BadManifest);
            }
        }
        Err(UnpackError::NoManifest)
    })
    .map_err(io_error)?
}

/// The manifest's text when it is the archive's last entry, as the packer writes it: then the
/// last bzip2 streams hold it, and decoding those alone saves decoding the whole package (~0.5 s
/// for 40 MB on 2 cores). `None` when it is not found there; the caller reads everything then.
/// (`upload FILE` and `sign` read manifests this way; the agent unpacks the whole archive and
/// checks the manifest it finds there against the index entry.)
pub(crate) fn manifest_from_tail(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let starts = super::decompress::stream_starts(&file).ok()?;
    for streams in [1, 2, 4, 8] {
        // Candidates only: one that is not a real stream start fails to decode.
        let from = *starts.get(starts.len().checked_sub(streams)?)?;
        if let Some(tail) = super::decompress::decode_segment(&file, from, len)
            && let Some(text) = last_entry_manifest(&tail)
        {
            return Some(text);
        }
    }
    None
}

/// In `tail`, the end of a tar archive: the text of its last entry if that is the manifest. Its
/// header is found by position: a valid header named `milky.toml` whose data, padded to whole
/// blocks, ends right where the end-of-archive blocks begin.
fn last_entry_manifest(tail: &[u8]) -> Option<String> {
    const BLOCK: usize = 512;
    const MAX_BLOCKS: usize = 2048;
    let mut end = tail.len();
    while end >= BLOCK && tail[end - BLOCK..end].iter().all(|&b| b == 0) {
        end -= BLOCK;
    }
    if end == tail.len() {
        return None;
    }
    for blocks in 1..=MAX_BLOCKS {
        let at = end.checked_sub((blocks + 1) * BLOCK)?;
        let bytes = &tail[at..at + BLOCK];
        let header = tar::Header::from_byte_slice(bytes);
        // The checksum counts its own 8 bytes as spaces.
        let sum: u32 = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        let named = header.path_bytes().as_ref() == FILE_NAME.as_bytes();
        if named && header.entry_type().is_file() && header.cksum().ok() == Some(sum) {
            let size = usize::try_from(header.size().ok()?).ok()?;
            let data = at + BLOCK;
            return (size.div_ceil(BLOCK) == blocks)
                .then(|| String::from_utf8(tail[data..data + size].to_vec()).ok())?;
        }
    }
    None
}
