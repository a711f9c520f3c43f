//! Hooks run a package's own code (collectstatic, migrations), so they run as an unprivileged
//! user, never as root. The release stays root's: that user may read it, and write only to
//! its HOME (`APPS/<app>/home`), `/tmp`, and, while the per-server hooks run, the release's
//! static dir (the manifest's `static_dir`, collectstatic's STATIC_ROOT). When they end, the
//! agent takes the static dir back ([`freeze_tree`]), so neither the app nor a hook's leftover
//! process can change what nginx serves.
//!
//! Root walks trees the hook user could write to, so every walk here is ordered so that user
//! can no longer rename anything in a directory by the time root looks into it: a symlink
//! swapped in at the right moment must never make root chown or chmod a file elsewhere.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::WebError;

/// The account hooks run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookUser {
    pub name: String,
    pub uid: u32,
    /// The account's primary group, from its passwd entry.
    pub gid: u32,
}

impl HookUser {
    /// Looks `name` up through the system's name service (local files, LDAP, sssd …);
    /// refuses root (uid 0).
    pub fn lookup(name: &str) -> Result<Self, WebError> {
        super::validate::account("hook user", name)?;
        let refused = |reason: String| WebError::HookUser {
            user: name.to_owned(),
            reason,
        };
        let account = nix::unistd::User::from_name(name)
            .map_err(|errno| refused(format!("looking it up failed: {errno}")))?
            .ok_or_else(|| refused("there is no such user on this server".to_owned()))?;
        let user = HookUser {
            name: name.to_owned(),
            uid: account.uid.as_raw(),
            gid: account.gid.as_raw(),
        };
        if user.uid == 0 {
            return Err(WebError::HookUser {
                user: name.to_owned(),
                reason: "it is root (uid 0); hooks run the package's code and never run as root"
                    .to_owned(),
            });
        }
        Ok(user)
    }
}

/// The effective uid and gid of this process.
pub(crate) fn own_ids() -> Result<(u32, u32), WebError> {
    Ok((
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    ))
}

/// `release/rel` as a real directory: created if missing, and refused if it or any directory
/// on the way is a symlink (a package could point `static_dir` at its own code through one).
pub fn real_dir_in(release: &Path, rel: &Path) -> Result<PathBuf, WebError> {
    let mut path = release.to_owned();
    for component in rel.components() {
        let Component::Normal(part) = component else {
            return Err(WebError::invalid(
                "static dir",
                rel.display().to_string(),
                "must be a plain relative path inside the release",
            ));
        };
        path.push(part);
        match fs_err::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(WebError::invalid(
                    "static dir",
                    path.display().to_string(),
                    "must be a directory of the release, not a symlink or a file",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs_err::create_dir(&path)?;
                fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(path)
}

/// Gives `dir` and everything in it to `user`, for the per-server hooks. `dir` and its parent
/// must be root's (call [`freeze_tree`] first). Children are given before their directory, so
/// while root looks into a directory, it is still root's and its entries cannot be swapped.
pub fn give_tree(dir: &Path, user: &HookUser) -> Result<(), WebError> {
    let meta = fs_err::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(WebError::invalid(
            "static dir",
            dir.display().to_string(),
            "must be a directory",
        ));
    }
    give_dir(dir, user)
}

fn give_dir(dir: &Path, user: &HookUser) -> Result<(), WebError> {
    for entry in fs_err::read_dir(dir)? {
        let path = entry?.path();
        if fs_err::symlink_metadata(&path)?.is_dir() {
            give_dir(&path, user)?;
        } else {
            lchown(&path, user.uid, user.gid)?;
        }
    }
    lchown(dir, user.uid, user.gid)
}

/// Takes `dir` back from the hook user: everything in it becomes the agent's (root's), with
/// modes 0755 for directories and executables, 0644 for other files (no setuid, no group or
/// world write). Hard links and special files are deleted: a hook has no use for them in
/// static files, and a hard link would make root change a file elsewhere. Safe while a hook's
/// process still runs: a directory is taken back before it is listed, so what is listed stays.
pub fn freeze_tree(dir: &Path) -> Result<(), WebError> {
    if !fs_err::symlink_metadata(dir)?.is_dir() {
        return Err(WebError::invalid(
            "static dir",
            dir.display().to_string(),
            "must be a directory",
        ));
    }
    let (uid, gid) = own_ids()?;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        // Seen as a directory (not a symlink) in a directory that is already root's: the name
        // still means the same directory.
        lchown(&dir, uid, gid)?;
        fs_err::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        for entry in fs_err::read_dir(&dir)? {
            let path = entry?.path();
            let meta = fs_err::symlink_metadata(&path)?;
            let kind = meta.file_type();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_symlink() {
                lchown(&path, uid, gid)?;
            } else if kind.is_file() && meta.nlink() == 1 {
                lchown(&path, uid, gid)?;
                let mode = if meta.mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            } else {
                tracing::warn!(
                    "deleting {}: a hook left a hard link or a special file in the static dir",
                    path.display()
                );
                fs_err::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

/// The hook user's HOME: a directory of its own (0700) beside the app's releases, kept across
/// releases (caches) and deleted with the app.
pub fn ensure_home(home: &Path, user: &HookUser) -> Result<(), WebError> {
    match fs_err::symlink_metadata(home) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(WebError::invalid(
                "hook user's home",
                home.display().to_string(),
                "must be a directory",
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs_err::create_dir_all(home)?,
        Err(e) => return Err(e.into()),
    }
    lchown(home, user.uid, user.gid)?;
    fs_err::set_permissions(home, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

fn lchown(path: &Path, uid: u32, gid: u32) -> Result<(), WebError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| {
        WebError::Io(std::io::Error::new(
            e.kind(),
            format!(
                "changing the owner of {} to {uid}:{gid}: {e}",
                path.display()
            ),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> HookUser {
        HookUser::lookup("nobody").expect("the nobody account exists")
    }

    #[test]
    fn lookup_finds_real_accounts_and_refuses_root() {
        let user = nobody();
        assert_eq!(user.name, "nobody");
        assert_ne!(user.uid, 0);
        // What `getent passwd nobody` says, read another way than the lookup's.
        let getent = std::process::Command::new("getent")
            .args(["passwd", "nobody"])
            .output()
            .unwrap();
        assert!(getent.status.success());
        let entry = String::from_utf8(getent.stdout).unwrap();
        let fields: Vec<&str> = entry.trim().split(':').collect();
        assert_eq!(
            (user.uid.to_string(), user.gid.to_string()),
            (fields[2].to_owned(), fields[3].to_owned())
        );

        let err = HookUser::lookup("root").unwrap_err().to_string();
        assert!(err.contains("never run as root"), "{err}");
        let err = HookUser::lookup("no-such-user-here")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such user"), "{err}");
        assert!(HookUser::lookup("a:b").is_err());
    }

    #[test]
    fn static_dir_through_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path();
        std::fs::create_dir(release.join("code")).unwrap();
        std::os::unix::fs::symlink("code", release.join("static")).unwrap();
        let err = real_dir_in(release, Path::new("static/collected"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a symlink"), "{err}");
        let made = real_dir_in(release, Path::new("out/static")).unwrap();
        assert!(made.is_dir());
    }

    /// Needs root (the tests run as root, as the agent does): chown to another user.
    #[test]
    fn give_then_freeze_leaves_nothing_to_the_hook_user() {
        if own_ids().unwrap().0 != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let user = nobody();
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "root's").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600)).unwrap();
        let stat = dir.path().join("static");
        std::fs::create_dir_all(stat.join("pages")).unwrap();
        std::fs::write(stat.join("pages/site.css"), "body {}").unwrap();
        give_tree(&stat, &user).unwrap();
        for path in [
            stat.clone(),
            stat.join("pages"),
            stat.join("pages/site.css"),
        ] {
            assert_eq!(std::fs::metadata(&path).unwrap().uid(), user.uid);
        }

        // What a hook might leave: a group/world-writable dir, a setuid file, a symlink out,
        // a hard link, a fifo.
        let sub = stat.join("admin");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(sub.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(sub.join("tool"), std::fs::Permissions::from_mode(0o4777))
            .unwrap();
        std::os::unix::fs::symlink(&outside, stat.join("escape")).unwrap();
        let users_file = dir.path().join("users-own.txt");
        std::fs::write(&users_file, "the hook user's").unwrap();
        lchown(&users_file, user.uid, user.gid).unwrap();
        std::fs::hard_link(&users_file, stat.join("linked.css")).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(stat.join("pipe"))
            .status()
            .unwrap();
        assert!(fifo.success());
        for path in [sub.clone(), sub.join("tool")] {
            lchown(&path, user.uid, user.gid).unwrap();
        }

        freeze_tree(&stat).unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&stat), 0o755);
        assert_eq!(mode(&sub), 0o755);
        assert_eq!(mode(&sub.join("tool")), 0o755, "setuid bit dropped");
        for path in [
            stat.clone(),
            sub.clone(),
            sub.join("tool"),
            stat.join("escape"),
        ] {
            assert_eq!(std::fs::symlink_metadata(&path).unwrap().uid(), 0);
        }
        assert!(!stat.join("linked.css").exists(), "hard link deleted");
        assert_eq!(
            std::fs::metadata(&users_file).unwrap().uid(),
            user.uid,
            "the file it linked to elsewhere is untouched"
        );
        assert!(!stat.join("pipe").exists(), "fifo deleted");
        assert_eq!(mode(&stat.join("pages/site.css")), 0o644);
        assert_eq!(mode(&outside), 0o600, "the symlink's target is untouched");
    }

    #[test]
    fn home_belongs_to_the_hook_user_alone() {
        if own_ids().unwrap().0 != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let user = nobody();
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("app/home");
        ensure_home(&home, &user).unwrap();
        ensure_home(&home, &user).unwrap();
        let meta = std::fs::metadata(&home).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (user.uid, 0o700));
    }
}
