//! Facts about a project's source tree: its version, commit and source date from git.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::names::Version;

/// What git says about a checkout, if it is one.
#[derive(Debug, Clone, Default)]
pub struct GitState {
    /// `git describe --tags`, if there is a tag.
    pub describe: Option<String>,
    /// The full commit id of HEAD.
    pub commit: Option<String>,
    pub short_commit: Option<String>,
    /// The commit's time.
    pub commit_time: Option<SystemTime>,
    /// Uncommitted changes in tracked files.
    pub dirty: bool,
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

impl GitState {
    pub fn read(dir: &Path) -> Self {
        let Some(commit) = git(dir, &["rev-parse", "HEAD"]) else {
            return Self::default();
        };
        Self {
            describe: git(dir, &["describe", "--tags"]),
            short_commit: git(dir, &["rev-parse", "--short", "HEAD"]),
            commit_time: git(dir, &["log", "-1", "--format=%ct"])
                .and_then(|s| s.parse().ok())
                .map(|secs| UNIX_EPOCH + Duration::from_secs(secs)),
            dirty: git(dir, &["status", "--porcelain", "--untracked-files=no"]).is_some(),
            commit: Some(commit),
        }
    }

    /// The commit as recorded in a manifest.
    pub fn commit_label(&self) -> Option<String> {
        let commit = self.commit.clone()?;
        Some(if self.dirty {
            format!("{commit}-dirty")
        } else {
            commit
        })
    }
}

/// The version a package gets when none is given: `git describe --tags`, else the short commit,
/// else the source date as `YYYYMMDD.HHMMSS`. A modified checkout adds `-dirty.<source date>`, so
/// packing changed files never collides with the clean release of the same commit.
pub fn default_version(git: &GitState, source_date: SystemTime) -> Option<Version> {
    let stamp = humantime::format_rfc3339_seconds(source_date)
        .to_string()
        .replace(['-', ':', 'Z'], "")
        .replace('T', ".");
    let base = git.describe.clone().or_else(|| git.short_commit.clone());
    let version = match (base, git.dirty) {
        (Some(base), false) => base,
        (Some(base), true) => format!("{base}-dirty.{stamp}"),
        (None, _) => stamp,
    };
    Version::new(version).ok()
}

/// `SOURCE_DATE_EPOCH` if set, else the commit time of a clean checkout, else `newest_mtime`.
pub fn source_date(git: &GitState, newest_mtime: SystemTime) -> SystemTime {
    if let Some(epoch) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return UNIX_EPOCH + Duration::from_secs(epoch);
    }
    match git.commit_time {
        Some(time) if !git.dirty => time,
        _ => newest_mtime,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_describe_commit_or_date() {
        let date = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let none = GitState::default();
        assert_eq!(
            default_version(&none, date).unwrap().as_str(),
            "20261118.110640"
        );
        let tagged = GitState {
            describe: Some("v1.2-3-gabc1234".into()),
            short_commit: Some("abc1234".into()),
            ..GitState::default()
        };
        assert_eq!(
            default_version(&tagged, date).unwrap().as_str(),
            "v1.2-3-gabc1234"
        );
        let untagged_dirty = GitState {
            short_commit: Some("abc1234".into()),
            dirty: true,
            ..GitState::default()
        };
        assert_eq!(
            default_version(&untagged_dirty, date).unwrap().as_str(),
            "abc1234-dirty.20261118.110640"
        );
    }
}
