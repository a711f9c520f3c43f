//! A release the web servers can read: every directory above it searchable by others, and the
//! tree itself readable (Apache runs as www-data, nginx's workers as nobody).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::WebError;

/// Every directory above the release must let others through, else www-data and nobody get
/// "permission denied" at request time (e.g. a release under /root, mode 700).
pub(super) fn check_reachable(release: &Path) -> Result<(), WebError> {
    if !release.is_absolute() {
        return Err(WebError::invalid(
            "release dir",
            release.display().to_string(),
            "must be an absolute path",
        ));
    }
    for dir in release.ancestors().skip(1) {
        let mode = fs_err::metadata(dir)?.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(WebError::NotWorldReadable {
                release: release.to_owned(),
                path: dir.to_owned(),
                mode: mode & 0o7777,
                needs: "search (o+x)",
            });
        }
    }
    Ok(())
}

/// Adds o+r to every file and o+rx to every directory (and o+x to files others' owner may run)
/// of the release. Temp dirs and some unpackers create 0700/0600 entries.
pub(super) fn make_world_readable(release: &Path) -> Result<(), WebError> {
    for entry in walkdir::WalkDir::new(release).follow_links(false) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(release).to_owned();
            WebError::Io(std::io::Error::other(format!("{}: {e}", path.display())))
        })?;
        if entry.file_type().is_symlink() {
            continue;
        }
        let meta = entry.metadata().map_err(|e| {
            WebError::Io(std::io::Error::other(format!(
                "{}: {e}",
                entry.path().display()
            )))
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        let wanted = if meta.is_dir() || mode & 0o100 != 0 {
            mode | 0o005
        } else {
            mode | 0o004
        };
        if wanted != mode {
            fs_err::set_permissions(entry.path(), std::fs::Permissions::from_mode(wanted))?;
        }
    }
    Ok(())
}
