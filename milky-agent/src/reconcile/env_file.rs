//! The secret env of each app (`cargo milky env`), as the WSGI wrapper loads it at start:
//! `<state>/env/<app>.json`, a JSON object, mode 0600 and owned by Apache's user, so neither
//! nginx's workers nor other users can read it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use milky_core::AppName;
use nix::unistd::{Group, User};

/// The env files in a state dir.
pub(super) struct EnvFiles {
    dir: PathBuf,
}

impl EnvFiles {
    pub fn in_state_dir(state: &Path) -> Self {
        Self {
            dir: state.join("env"),
        }
    }

    fn path(&self, app: &AppName) -> PathBuf {
        self.dir.join(format!("{app}.json"))
    }

    /// Replaces `app`'s file with `vars`, given to `user` and `group`. The directory is 0711:
    /// others may reach a file they know the name of, not list them.
    pub fn write(
        &self,
        app: &AppName,
        vars: &BTreeMap<String, String>,
        user: &str,
        group: &str,
    ) -> anyhow::Result<PathBuf> {
        fs_err::create_dir_all(&self.dir)?;
        fs_err::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o711))?;
        let (uid, gid) = account_ids(user, group)?;
        let path = self.path(app);
        let mut temp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::io::Write::write_all(&mut temp, serde_json::to_string(vars)?.as_bytes())?;
        std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o600))?;
        std::os::unix::fs::chown(temp.path(), Some(uid), Some(gid))
            .with_context(|| format!("giving {} to {user}", temp.path().display()))?;
        temp.persist(&path)
            .with_context(|| format!("replacing {}", path.display()))?;
        Ok(path)
    }

    /// Deletes `app`'s file, if there is one.
    pub fn remove(&self, app: &AppName) {
        let _ = std::fs::remove_file(self.path(app));
    }

    /// Deletes the files of apps for which `keep` says no, and the temp files of writes that
    /// were killed. Other files are left alone.
    pub fn remove_others(&self, keep: impl Fn(&AppName) -> bool) {
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let gone = match name.strip_suffix(".json") {
                Some(app) => app.parse::<AppName>().is_ok_and(|app| !keep(&app)),
                None => name.starts_with(".tmp"),
            };
            if gone && let Err(err) = std::fs::remove_file(entry.path()) {
                tracing::warn!("deleting {}: {err}", entry.path().display());
            }
        }
    }
}

/// The uid of `user` and gid of `group`, through the system's name service (local files,
/// LDAP, sssd …).
pub(super) fn account_ids(user: &str, group: &str) -> anyhow::Result<(u32, u32)> {
    let uid = User::from_name(user)
        .with_context(|| format!("looking up the user {user:?}"))?
        .with_context(|| format!("there is no user {user:?} on this server"))?
        .uid;
    let gid = Group::from_name(group)
        .with_context(|| format!("looking up the group {group:?}"))?
        .with_context(|| format!("there is no group {group:?} on this server"))?
        .gid;
    Ok((uid.as_raw(), gid.as_raw()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use nix::unistd::{Gid, Uid};

    use super::*;

    /// The names of the account the tests run as (root on a test server, like the agent).
    fn own_account() -> (String, String, u32, u32) {
        let user = User::from_uid(Uid::effective()).unwrap().unwrap();
        let group = Group::from_gid(Gid::effective()).unwrap().unwrap();
        (user.name, group.name, user.uid.as_raw(), group.gid.as_raw())
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_env_is_written_0600_for_its_owner_alone() {
        let state = tempfile::tempdir().unwrap();
        let files = EnvFiles::in_state_dir(state.path());
        let app: AppName = "shop".parse().unwrap();
        let (user, group, uid, gid) = own_account();
        let first = vars(&[
            ("DATABASE_URL", "postgres://db/shop"),
            ("TOKEN", "s3cr\"et"),
        ]);
        let path = files.write(&app, &first, &user, &group).unwrap();
        assert_eq!(path, state.path().join("env/shop.json"));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o600, uid, gid)
        );
        let dir_mode = std::fs::metadata(state.path().join("env")).unwrap().mode() & 0o7777;
        assert_eq!(dir_mode, 0o711);
        let read: BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(read, first);

        let second = vars(&[("TOKEN", "rotated")]);
        files.write(&app, &second, &user, &group).unwrap();
        let read: BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(read, second);
        let names: Vec<_> = std::fs::read_dir(state.path().join("env"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["shop.json"], "no temp file left behind");
    }

    /// Needs root, as the agent: the file is given to Apache's user.
    #[test]
    fn the_env_belongs_to_apache_s_user() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let state = tempfile::tempdir().unwrap();
        let files = EnvFiles::in_state_dir(state.path());
        let path = files
            .write(
                &"shop".parse().unwrap(),
                &vars(&[("A", "1")]),
                "www-data",
                "www-data",
            )
            .unwrap();
        let www = User::from_name("www-data").unwrap().unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (www.uid.as_raw(), www.gid.as_raw())
        );
    }

    #[test]
    fn an_unknown_account_writes_nothing_and_says_who() {
        let state = tempfile::tempdir().unwrap();
        let files = EnvFiles::in_state_dir(state.path());
        let app: AppName = "shop".parse().unwrap();
        let (user, group, _, _) = own_account();
        let err = files
            .write(&app, &vars(&[("A", "1")]), "no-such-user-here", &group)
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("no user \"no-such-user-here\""),
            "{err:#}"
        );
        let err = files
            .write(&app, &vars(&[("A", "1")]), &user, "no-such-group-here")
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("no group \"no-such-group-here\""),
            "{err:#}"
        );
        assert!(!state.path().join("env/shop.json").exists());
    }

    #[test]
    fn files_of_gone_apps_and_killed_writes_are_deleted() {
        let state = tempfile::tempdir().unwrap();
        let files = EnvFiles::in_state_dir(state.path());
        files.remove_others(|_| false);
        let dir = state.path().join("env");
        std::fs::create_dir(&dir).unwrap();
        for name in [
            "shop.json",
            "blog.json",
            ".tmpAbC123",
            "notes.txt",
            "Not An App.json",
        ] {
            std::fs::write(dir.join(name), "{}").unwrap();
        }
        files.remove_others(|app| app.as_str() == "shop");
        let mut left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["Not An App.json", "notes.txt", "shop.json"]);
        files.remove(&"shop".parse().unwrap());
        files.remove(&"shop".parse().unwrap());
        assert!(!dir.join("shop.json").exists());
    }
}
