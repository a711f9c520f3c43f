//! Each app's persistent data dir (`MILKY_DATA_DIR`): kept across releases and when the app is
//! removed, writable by the app's processes and hooks, with `media/` inside for uploads, which
//! nginx serves when the manifest names a `media_url`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{WebError, validate};

/// The folder of uploads inside an app's data dir (Django's `MEDIA_ROOT`).
pub const MEDIA: &str = "media";

/// Makes `root/<app>` and its `media/` exist, owned by `uid`:`gid` (the account the app and
/// its hooks run as). The data dir is 0711: nginx's workers reach `media/` (0755) through it,
/// but nobody else can list what the app keeps there. Existing contents are never touched.
pub fn ensure(root: &Path, app: &str, uid: u32, gid: u32) -> Result<PathBuf, WebError> {
    validate::app_name(app)?;
    let dir = root.join(app);
    let media = dir.join(MEDIA);
    fs_err::create_dir_all(root)?;
    for (path, mode) in [(&dir, 0o711), (&media, 0o755)] {
        // Not a link: creating, chown and chmod would follow it out of the data root.
        match std::fs::symlink_metadata(path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => fs_err::create_dir(path)?,
            Err(err) => return Err(err.into()),
            Ok(_) => {}
        }
        let meta = fs_err::symlink_metadata(path)?;
        if !meta.is_dir() {
            return Err(WebError::invalid(
                "data dir",
                path.display().to_string(),
                "must be a directory, not a link or a file",
            ));
        }
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| {
            WebError::Io(std::io::Error::new(
                source.kind(),
                format!("giving {} to uid {uid}: {source}", path.display()),
            ))
        })?;
        fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    // The root itself: searchable by everyone (nginx), writable by root only.
    let mode = fs_err::metadata(root)?.permissions().mode();
    if mode & 0o011 != 0o011 {
        fs_err::set_permissions(
            root,
            std::fs::Permissions::from_mode((mode | 0o711) & 0o7755),
        )?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// This process's ids, as the owner of a dir it just made.
    fn own_ids(dir: &Path) -> (u32, u32) {
        let meta = fs_err::metadata(dir).unwrap();
        (meta.uid(), meta.gid())
    }

    #[test]
    fn makes_the_dir_and_media_and_keeps_what_is_there() {
        let root = tempfile::tempdir().unwrap();
        let (uid, gid) = own_ids(root.path());
        let dir = ensure(root.path(), "shop", uid, gid).unwrap();
        assert_eq!(dir, root.path().join("shop"));
        let mode = |p: &Path| fs_err::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o711);
        assert_eq!(mode(&dir.join(MEDIA)), 0o755);
        fs_err::write(dir.join("db.sqlite3"), "data").unwrap();
        fs_err::write(dir.join(MEDIA).join("a.png"), "png").unwrap();
        ensure(root.path(), "shop", uid, gid).unwrap();
        assert_eq!(
            fs_err::read_to_string(dir.join("db.sqlite3")).unwrap(),
            "data"
        );
        assert_eq!(
            fs_err::read_to_string(dir.join("media/a.png")).unwrap(),
            "png"
        );
    }

    #[test]
    fn refuses_a_link_and_a_bad_name() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join("shop")).unwrap();
        let (uid, gid) = own_ids(root.path());
        assert!(ensure(root.path(), "shop", uid, gid).is_err());
        assert!(!elsewhere.path().join(MEDIA).exists());
        assert!(ensure(root.path(), "../x", uid, gid).is_err());
    }
}
