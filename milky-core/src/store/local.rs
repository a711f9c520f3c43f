//! A store in a local directory, with the same guarantees as S3: atomic writes (temp file +
//! rename), create-only writes (a hard link fails if the key exists) and compare-and-swap (an
//! exclusive lock on the store held across check and rename). The ETag is the content's sha256.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Condition, Fetched, Listed, Object, ObjectInfo, Progress, StoreError};

const LOCK_FILE: &str = ".milky-store.lock";
const TEMP_PREFIX: &str = ".milky-tmp-";

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens (and creates, if missing) a store directory.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        fs_err::create_dir_all(root).map_err(|e| StoreError::io(root, e))?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        // Keys are built from validated names; refuse anything that could leave the root anyway.
        if key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|p| p == ".." || p == "." || p.is_empty())
        {
            return Err(StoreError::Other {
                store: self.url(),
                op: "resolve",
                key: key.into(),
                detail: "not a valid key".into(),
            });
        }
        Ok(self.root.join(key))
    }

    pub fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        let path = self.path(key)?;
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(Object {
                etag: sha256_hex(&bytes),
                bytes,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    pub fn get_if_changed(&self, key: &str, etag: Option<&str>) -> Result<Fetched, StoreError> {
        Ok(match self.get(key)? {
            None => Fetched::Missing,
            Some(object) if Some(object.etag.as_str()) == etag => Fetched::NotModified,
            Some(object) => Fetched::Changed(object),
        })
    }

    pub fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.path(key)?;
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(path, e)),
        };
        let mut hasher = Sha256::new();
        let size = std::io::copy(&mut file, &mut hasher).map_err(|e| StoreError::io(&path, e))?;
        let etag = hex::encode(hasher.finalize());
        Ok(Some(ObjectInfo {
            size,
            sha256: Some(etag.clone()),
            etag,
        }))
    }

    pub fn put(
        &self,
        key: &str,
        bytes: &[u8],
        condition: &Condition,
    ) -> Result<String, StoreError> {
        let path = self.path(key)?;
        let mut temp = self.temp_file(&path)?;
        temp.write_all(bytes)
            .map_err(|e| StoreError::io(temp.path(), e))?;
        self.commit(temp, key, &path, condition)?;
        Ok(sha256_hex(bytes))
    }

    pub fn put_file(
        &self,
        key: &str,
        source: &Path,
        condition: &Condition,
        progress: Progress<'_>,
    ) -> Result<String, StoreError> {
        let path = self.path(key)?;
        let mut temp = self.temp_file(&path)?;
        let mut input = fs_err::File::open(source).map_err(|e| StoreError::io(source, e))?;
        let etag = copy_hashing(&mut input, temp.as_file_mut(), progress)
            .map_err(|e| StoreError::io(source, e))?;
        self.commit(temp, key, &path, condition)?;
        Ok(etag)
    }

    pub fn download(
        &self,
        key: &str,
        dest: &Path,
        progress: Progress<'_>,
    ) -> Result<u64, StoreError> {
        let path = self.path(key)?;
        let mut input = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    store: self.url(),
                    key: key.into(),
                });
            }
            Err(e) => return Err(StoreError::io(path, e)),
        };
        let mut output = fs_err::File::create(dest).map_err(|e| StoreError::io(dest, e))?;
        let mut written = 0;
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = input.read(&mut buf).map_err(|e| StoreError::io(&path, e))?;
            if n == 0 {
                break;
            }
            output
                .write_all(&buf[..n])
                .map_err(|e| StoreError::io(dest, e))?;
            written += n as u64;
            progress(written);
        }
        Ok(written)
    }

    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    pub fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        // Walk only below the prefix's directory part: logs/ alone holds many files.
        let base = match prefix.rfind('/') {
            Some(i) => self.root.join(&prefix[..i]),
            None => self.root.clone(),
        };
        if !base.is_dir() {
            return Ok(keys);
        }
        for entry in walkdir::WalkDir::new(&base).sort_by_file_name() {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(&self.root).to_owned();
                StoreError::io(path, e.into())
            })?;
            let name = entry.file_name().to_string_lossy();
            if !entry.file_type().is_file() || name.starts_with(TEMP_PREFIX) || name == LOCK_FILE {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(&self.root)
                .expect("walk stays under root");
            let key = rel
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            if key.starts_with(prefix) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    pub fn list_entries(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let mut entries = Vec::new();
        for key in self.list(prefix)? {
            let path = self.path(&key)?;
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                // Deleted since the walk saw it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(path, e)),
            };
            // Every write renames a new file into place: a new inode, whatever the content.
            let tag = format!(
                "{}-{}-{}.{}",
                meta.ino(),
                meta.len(),
                meta.mtime(),
                meta.mtime_nsec()
            );
            entries.push(Listed {
                key,
                size: meta.len(),
                tag,
                modified: meta.modified().ok(),
            });
        }
        Ok(entries)
    }

    pub fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join(prefix.trim_end_matches('/'));
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn temp_file(&self, path: &Path) -> Result<tempfile::NamedTempFile, StoreError> {
        let dir = path.parent().expect("keys have a parent under the root");
        fs_err::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)
            .map_err(|e| StoreError::io(dir, e))
    }

    /// Moves a fully written temp file into place under `condition`.
    fn commit(
        &self,
        temp: tempfile::NamedTempFile,
        key: &str,
        path: &Path,
        condition: &Condition,
    ) -> Result<(), StoreError> {
        temp.as_file()
            .sync_all()
            .map_err(|e| StoreError::io(temp.path(), e))?;
        let precondition_failed = || StoreError::PreconditionFailed {
            store: self.url(),
            key: key.into(),
        };
        match condition {
            Condition::None => {
                temp.persist(path)
                    .map_err(|e| StoreError::io(path, e.error))?;
            }
            Condition::IfAbsent => {
                // link(2) fails if the target exists: the create is atomic without a lock.
                match std::fs::hard_link(temp.path(), path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Err(precondition_failed());
                    }
                    Err(e) => return Err(StoreError::io(path, e)),
                }
            }
            Condition::IfMatch(etag) => {
                let lock_path = self.root.join(LOCK_FILE);
                let lock = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(|e| StoreError::io(&lock_path, e))?;
                lock.lock().map_err(|e| StoreError::io(&lock_path, e))?;
                let current = self.get(key)?.map(|object| object.etag);
                if current.as_deref() != Some(etag.as_str()) {
                    return Err(precondition_failed());
                }
                temp.persist(path)
                    .map_err(|e| StoreError::io(path, e.error))?;
                // The lock is released when `lock` is dropped, after the rename.
            }
        }
        Ok(())
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn copy_hashing(
    input: &mut impl Read,
    output: &mut impl Write,
    progress: Progress<'_>,
) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    let mut done = 0;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n])?;
        done += n as u64;
        progress(done);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn create_only_and_compare_and_swap() {
        let (_dir, store) = store();
        let etag = store.put("a/b.txt", b"one", &Condition::IfAbsent).unwrap();
        let err = store
            .put("a/b.txt", b"two", &Condition::IfAbsent)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::PreconditionFailed { .. }),
            "{err}"
        );
        let err = store
            .put("a/b.txt", b"two", &Condition::IfMatch("stale".into()))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::PreconditionFailed { .. }),
            "{err}"
        );
        assert_eq!(store.get("a/b.txt").unwrap().unwrap().bytes, b"one");
        store
            .put("a/b.txt", b"two", &Condition::IfMatch(etag.clone()))
            .unwrap();
        assert_eq!(store.get("a/b.txt").unwrap().unwrap().bytes, b"two");
        assert!(matches!(
            store.get_if_changed("a/b.txt", Some(&etag)).unwrap(),
            Fetched::Changed(_)
        ));
        let now = store.get("a/b.txt").unwrap().unwrap().etag;
        assert!(matches!(
            store.get_if_changed("a/b.txt", Some(&now)).unwrap(),
            Fetched::NotModified
        ));
        assert!(matches!(
            store.get_if_changed("nope", None).unwrap(),
            Fetched::Missing
        ));
        assert_eq!(store.list("a/").unwrap(), vec!["a/b.txt".to_string()]);
        store.delete("a/b.txt").unwrap();
        assert!(store.get("a/b.txt").unwrap().is_none());
    }

    #[test]
    fn keys_cannot_leave_the_root() {
        let (_dir, store) = store();
        for bad in ["../x", "/etc/passwd", "a/../../x", "a//b", ""] {
            assert!(store.put(bad, b"x", &Condition::None).is_err(), "{bad}");
        }
    }
}
