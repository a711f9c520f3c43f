//! The store: the only thing servers share. An S3 bucket (or any S3-compatible store) or, for one
//! machine and for trying things out, a local directory with the same semantics.
//!
//! Both kinds give the guarantees the rest of MilkyWhite is built on: a conditional create
//! (`If-None-Match: *`) so a package is written once, and a compare-and-swap replace (`If-Match`)
//! so two controllers editing the index at once never lose an update. Some S3-compatible servers
//! only seem to: every index edit is read back to confirm it landed ([`Store::edit_index`]), and
//! [`probe`] tells such a store apart before anyone relies on it.

mod local;
pub mod probe;
mod s3;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use local::LocalStore;
pub use s3::{S3Options, S3Store};

use crate::index::{Index, IndexError};
use crate::layout;

/// A store named by one URL: `s3://BUCKET/PREFIX` or `file:///PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    S3 { bucket: String, prefix: String },
    Local { root: PathBuf },
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| StoreError::BadUrl {
            url: s.to_owned(),
            why: why.to_owned(),
        };
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("the bucket name is missing"));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|part| part == ".." || part == ".") {
                return Err(bad("the prefix may not contain '.' or '..' parts"));
            }
            Ok(StoreUrl::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            })
        } else if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "a file:// store needs an absolute path, as in file:///srv/milky-store",
                ));
            }
            Ok(StoreUrl::Local {
                root: PathBuf::from(path),
            })
        } else {
            Err(bad("expected s3://BUCKET/PREFIX or file:///PATH"))
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StoreUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            StoreUrl::Local { root } => write!(f, "file://{}", root.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bad store URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("{key} does not exist in {store}")]
    NotFound { store: String, key: String },
    #[error("{key} in {store} changed or appeared since it was read (precondition failed)")]
    PreconditionFailed { store: String, key: String },
    #[error("access denied to {key} in {store}: {detail}")]
    AccessDenied {
        store: String,
        key: String,
        detail: String,
    },
    #[error("cannot reach the store {store}: {detail}")]
    Unreachable { store: String, detail: String },
    #[error("{op} {key} in {store} failed: {detail}")]
    Other {
        store: String,
        op: &'static str,
        key: String,
        detail: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "gave up editing {key} in {store} after {attempts} attempts: other writers kept changing it"
    )]
    TooManyRaces {
        store: String,
        key: String,
        attempts: u32,
    },
    #[error(
        "{key} in {store}: the store accepted this edit {lost} times and each time it was missing when read back: another writer overwrote it, so the store does not apply conditional writes (If-Match / If-None-Match) atomically; this edit is not in the index. Use a store that does (`cargo milky doctor` checks)"
    )]
    LostEdits {
        store: String,
        key: String,
        lost: u32,
    },
    #[error("{op} {key} in {store} failed after {attempts} attempts: {detail}")]
    Unreadable {
        store: String,
        op: &'static str,
        key: String,
        attempts: u32,
        detail: String,
    },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

/// An object's bytes and the tag that names this exact content.
#[derive(Debug, Clone)]
pub struct Object {
    pub bytes: Vec<u8>,
    pub etag: String,
}

/// What a conditional read found.
#[derive(Debug)]
pub enum Fetched {
    Changed(Object),
    NotModified,
    Missing,
}

/// What a write requires of the object it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Write whatever is there.
    None,
    /// Create only: fail if the key exists (`If-None-Match: *`).
    IfAbsent,
    /// Replace only this exact content (`If-Match: ETAG`).
    IfMatch(String),
}

/// Size, tag and recorded sha256 of a stored object, without its bytes.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub size: u64,
    pub etag: String,
    /// The sha256 recorded when the object was written by [`Store::put_file`], if any.
    pub sha256: Option<String>,
}

/// An object as a listing shows it: enough to tell whether it changed, how big and how old it is,
/// without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// Changes whenever the object does: S3's ETag (time and size from a store that lists no
    /// ETag); for a local store, inode, size and mtime.
    pub tag: String,
    /// When it was last written, if the store says.
    pub modified: Option<std::time::SystemTime>,
}

/// Called with the number of bytes moved so far.
pub type Progress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// An open store.
#[derive(Debug, Clone)]
pub enum Store {
    S3(S3Store),
    Local(LocalStore),
}

/// How many times an index edit re-reads and re-applies after losing a race.
const EDIT_ATTEMPTS: u32 = 40;
/// How many accepted edits may turn out lost on read-back before the store is blamed.
const LOST_EDITS: u32 = 5;
/// How many reads of an index that does not parse, looking for two that agree.
const INDEX_READS: u32 = 4;

/// The error of an index edit: the store's, the index's, or the caller's own.
#[derive(Debug, thiserror::Error)]
pub enum EditError<E> {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{INDEX_KEY} in {store}: {source}")]
    Index { store: String, source: IndexError },
    #[error(transparent)]
    Edit(E),
}

const INDEX_KEY: &str = layout::INDEX;

impl Store {
    /// Opens the store a URL names. S3 settings come from the standard AWS chain (environment,
    /// profiles, instance roles) plus `options`.
    pub async fn open(url: &StoreUrl, options: &S3Options) -> Result<Self, StoreError> {
        Ok(match url {
            StoreUrl::S3 { bucket, prefix } => {
                Store::S3(S3Store::new(bucket.clone(), prefix.clone(), options).await)
            }
            StoreUrl::Local { root } => Store::Local(LocalStore::open(root)?),
        })
    }

    /// The URL, for messages.
    pub fn url(&self) -> String {
        match self {
            Store::S3(s) => s.url(),
            Store::Local(l) => l.url(),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        match self {
            Store::S3(s) => s.get(key).await,
            Store::Local(l) => l.get(key),
        }
    }

    /// Reads `key` unless it still has `etag`: an unchanged object costs one small request.
    pub async fn get_if_changed(
        &self,
        key: &str,
        etag: Option<&str>,
    ) -> Result<Fetched, StoreError> {
        match self {
            Store::S3(s) => s.get_if_changed(key, etag).await,
            Store::Local(l) => l.get_if_changed(key, etag),
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self {
            Store::S3(s) => s.head(key).await,
            Store::Local(l) => l.head(key),
        }
    }

    /// Writes a small object under a condition; returns its new ETag.
    pub async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        condition: Condition,
    ) -> Result<String, StoreError> {
        match self {
            Store::S3(s) => s.put(key, bytes, &condition).await,
            Store::Local(l) => l.put(key, &bytes, &condition),
        }
    }

    /// Uploads a file (multipart when large) under a condition, recording its sha256 with it.
    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        sha256: &str,
        condition: Condition,
        progress: Progress<'_>,
    ) -> Result<String, StoreError> {
        match self {
            Store::S3(s) => s.put_file(key, path, sha256, &condition, progress).await,
            Store::Local(l) => l.put_file(key, path, &condition, progress),
        }
    }

    /// Streams an object into a file; returns the number of bytes written.
    pub async fn download(
        &self,
        key: &str,
        dest: &Path,
        progress: Progress<'_>,
    ) -> Result<u64, StoreError> {
        match self {
            Store::S3(s) => s.download(key, dest, progress).await,
            Store::Local(l) => l.download(key, dest, progress),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::S3(s) => s.delete(key).await,
            Store::Local(l) => l.delete(key),
        }
    }

    /// Every key under a prefix, relative to the store's own prefix, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::S3(s) => s.list(prefix).await,
            Store::Local(l) => l.list(prefix),
        }
    }

    /// As [`Store::list`], with each object's size, change tag and time: one listing, no reads.
    pub async fn list_entries(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        match self {
            Store::S3(s) => s.list_entries(prefix).await,
            Store::Local(l) => l.list_entries(prefix),
        }
    }

    /// As [`Store::list_entries`], a page at a time as the store answers (S3: up to 1,000 objects
    /// a page, in key order; a local store: one page), so a caller can work on a page while the
    /// next is listed.
    pub async fn list_entries_by_page(
        &self,
        prefix: &str,
        mut on_page: impl FnMut(Vec<Listed>),
    ) -> Result<(), StoreError> {
        match self {
            Store::S3(s) => s.list_entries_by_page(prefix, on_page).await,
            Store::Local(l) => {
                on_page(l.list_entries(prefix)?);
                Ok(())
            }
        }
    }

    /// The names one level below `prefix` (which ends in `/`), like directories: `logs/g/` gives
    /// the hosts that shipped logs. Sorted.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::S3(s) => s.list_dirs(prefix).await,
            Store::Local(l) => l.list_dirs(prefix),
        }
    }

    /// Reads the index; `None` when nothing was ever uploaded to this store.
    pub async fn read_index(
        &self,
    ) -> Result<Option<(Index, String)>, EditError<std::convert::Infallible>> {
        self.fetch_index().await
    }

    /// Reads and parses the index. A body that does not parse is read again: a reply torn on its
    /// way from a busy store reads differently the next time, so the index is broken only when
    /// two reads agree on the same bytes.
    async fn fetch_index<E>(&self) -> Result<Option<(Index, String)>, EditError<E>> {
        let mut previous: Option<Vec<u8>> = None;
        for attempt in 1..=INDEX_READS {
            let Some(object) = self.get(layout::INDEX).await? else {
                return Ok(None);
            };
            match Index::parse(&String::from_utf8_lossy(&object.bytes)) {
                Ok(index) => return Ok(Some((index, object.etag))),
                Err(source)
                    if attempt == INDEX_READS || previous.as_ref() == Some(&object.bytes) =>
                {
                    return Err(EditError::Index {
                        store: self.url(),
                        source,
                    });
                }
                Err(source) => {
                    tracing::debug!(
                        attempt,
                        "{INDEX_KEY} did not parse ({source}); reading it again"
                    );
                    previous = Some(object.bytes);
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Read-modify-write of the index, guarded by its ETag. `edit` may run several times: when
    /// another writer got in between, the index is read again and the edit re-applied to it, so no
    /// update is ever lost. An index that does not parse is never overwritten. Returns what the
    /// last run of `edit` returned and the index as written.
    ///
    /// A store's "OK" is not taken on trust: each write adds a random id to the index's list of
    /// recent edits (which every edit keeps), and the index is read back; an edit whose id is
    /// missing was overwritten by a writer that the store let through too, and is made again.
    pub async fn edit_index<T, E>(
        &self,
        mut edit: impl FnMut(&mut Index) -> Result<T, E>,
    ) -> Result<(T, Index), EditError<E>> {
        let mut lost = 0;
        for attempt in 1..=EDIT_ATTEMPTS {
            let (mut index, condition, before) = match self.fetch_index().await? {
                Some((index, etag)) => {
                    let before = index.to_string();
                    (index, Condition::IfMatch(etag), Some(before))
                }
                None => (Index::new(), Condition::IfAbsent, None),
            };
            let outcome = edit(&mut index).map_err(EditError::Edit)?;
            if before.as_deref() == Some(index.to_string().as_str()) {
                return Ok((outcome, index));
            }
            if !self.still_as_read(&condition).await? {
                tracing::debug!(
                    attempt,
                    "the index changed since it was read; reading it again"
                );
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            let id = format!("{:012x}", rand::random::<u64>() >> 16);
            index.record_edit(&id);
            let started = Instant::now();
            match self
                .put(layout::INDEX, index.to_string().into_bytes(), condition)
                .await
            {
                Ok(_) => {
                    if self.edit_landed(&id, started.elapsed()).await? {
                        return Ok((outcome, index));
                    }
                    lost += 1;
                    tracing::warn!(
                        "{INDEX_KEY} in {}: the store accepted an edit that is missing when read back ({lost} of {LOST_EDITS}); editing again",
                        self.url()
                    );
                    if lost == LOST_EDITS {
                        return Err(StoreError::LostEdits {
                            store: self.url(),
                            key: layout::INDEX.into(),
                            lost,
                        }
                        .into());
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(StoreError::PreconditionFailed { .. }) => {
                    tracing::debug!(attempt, "lost a race on the index; reading it again");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(StoreError::TooManyRaces {
            store: self.url(),
            key: layout::INDEX.into(),
            attempts: EDIT_ATTEMPTS,
        }
        .into())
    }

    /// On a store used although it failed the write probe, whether the index is still what the
    /// edit read (the store may ignore the write's condition, so it is checked here too): a writer
    /// that read long ago then overwrites only when it stalls between this check and its write,
    /// not anywhere since its read. Always true on a store that applies conditions.
    async fn still_as_read<E>(&self, condition: &Condition) -> Result<bool, EditError<E>> {
        if !self.unsafe_writes() {
            return Ok(true);
        }
        let now = self.head(layout::INDEX).await?;
        Ok(match condition {
            Condition::IfMatch(etag) => now.is_some_and(|info| info.etag == *etag),
            Condition::IfAbsent => now.is_none(),
            Condition::None => true,
        })
    }

    /// Whether the index read back holds the edit `id`, written in `took`.
    async fn edit_landed<E>(&self, id: &str, took: Duration) -> Result<bool, EditError<E>> {
        self.settle(took).await;
        Ok(self
            .fetch_index()
            .await?
            .is_some_and(|(index, _)| index.recent_edits().iter().any(|known| known == id)))
    }

    /// On a store used although it failed the write probe ([`Store::allow_unsafe_writes`]),
    /// waits before a read-back: a racing write that the store checked before ours landed may
    /// still be on its way, and would overwrite ours after the read. Proportional to how long
    /// our own write took, since theirs was as slow.
    pub async fn settle(&self, took: Duration) {
        if self.unsafe_writes() {
            tokio::time::sleep((took * 4).max(UNSAFE_SETTLE)).await;
        }
    }

    /// Marks the store as one used although it failed [`probe::probe`], at the user's risk:
    /// read-backs then wait for racing writes to land ([`Store::settle`]).
    pub fn allow_unsafe_writes(&mut self) {
        if let Store::S3(s) = self {
            s.unsafe_writes = true;
        }
    }

    fn unsafe_writes(&self) -> bool {
        matches!(self, Store::S3(s) if s.unsafe_writes)
    }

    /// Where the store is, for remembering what a probe found: the endpoint and the bucket (or
    /// the directory). None for a local directory, whose guarantees are this program's own.
    pub fn endpoint_id(&self) -> Option<String> {
        match self {
            Store::S3(s) => Some(s.endpoint_id()),
            Store::Local(_) => None,
        }
    }
}

/// The least time a read-back waits on a store known to let racing writes through.
const UNSAFE_SETTLE: Duration = Duration::from_secs(1);

/// Jittered exponential backoff, capped at half a second, so racing writers spread out.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let cap_ms = (10u64 << attempt.min(6)).min(500);
    Duration::from_millis(rand::random_range(1..=cap_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_and_print() {
        let url: StoreUrl = "s3://bucket/some/prefix/".parse().unwrap();
        assert_eq!(
            url,
            StoreUrl::S3 {
                bucket: "bucket".into(),
                prefix: "some/prefix".into()
            }
        );
        assert_eq!(url.to_string(), "s3://bucket/some/prefix");
        assert_eq!("s3://b".parse::<StoreUrl>().unwrap().to_string(), "s3://b");
        let local: StoreUrl = "file:///srv/store".parse().unwrap();
        assert_eq!(
            local,
            StoreUrl::Local {
                root: "/srv/store".into()
            }
        );
        for bad in [
            "s3://",
            "file://relative",
            "http://x",
            "s3://b/../x",
            "/srv/store",
        ] {
            let err = bad.parse::<StoreUrl>().unwrap_err().to_string();
            assert!(err.starts_with("bad store URL"), "{bad}: {err}");
        }
    }
}
