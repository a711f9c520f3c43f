//! The output of an app's hooks, appended to `[paths] logs`/hooks/<app>.log (bounded, and
//! shipped with the other logs), each line stamped and tagged with the release and the hook.

use std::fmt::Display;
use std::path::Path;
use std::time::SystemTime;

use milky_core::{AppName, Version};

use crate::logfile::BoundedLog;
use crate::logship;
use crate::web::{HookRun, WebError};

/// Where the hooks of one release write.
pub(super) struct HookLog<'a> {
    pub app: &'a AppName,
    pub version: &'a Version,
    /// `[paths] logs`.
    pub logs_dir: &'a Path,
    pub max_bytes: u64,
}

impl HookLog<'_> {
    /// The hooks' output, their blank lines left out, and how long each took.
    pub fn runs(&self, runs: &[HookRun]) {
        let stamp = humantime::format_rfc3339_micros(SystemTime::now());
        self.append(&self.runs_text(stamp, runs));
    }

    /// Why the hooks failed (a failed command's error carries its output).
    pub fn failure(&self, err: &WebError) {
        let stamp = humantime::format_rfc3339_micros(SystemTime::now());
        self.append(&self.failure_text(stamp, err));
    }

    fn runs_text(&self, stamp: impl Display, runs: &[HookRun]) -> String {
        let (app, version) = (self.app, self.version);
        let mut text = String::new();
        for run in runs {
            let tag = format!("{stamp} {app} {version} [{}]", run.hook);
            for line in run.output.lines().filter(|l| !l.trim().is_empty()) {
                text.push_str(&format!("{tag} {line}\n"));
            }
            text.push_str(&format!("{tag} finished in {:.1?}\n", run.duration));
        }
        text
    }

    fn failure_text(&self, stamp: impl Display, err: &WebError) -> String {
        let (app, version) = (self.app, self.version);
        err.to_string()
            .lines()
            .map(|line| format!("{stamp} {app} {version} [failed] {line}\n"))
            .collect()
    }

    /// Never fails a deploy: a log that cannot be written is said on stderr.
    fn append(&self, text: &str) {
        let path = logship::hooks_dir(self.logs_dir).join(format!("{}.log", self.app));
        let log = BoundedLog::new(&path, self.max_bytes);
        if let Err(err) = log.append(text.as_bytes()) {
            tracing::warn!("writing {}: {err}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn run(hook: &str, output: &str, millis: u64) -> HookRun {
        HookRun {
            hook: hook.into(),
            output: output.into(),
            duration: Duration::from_millis(millis),
        }
    }

    /// The log's lines with their time stamp (the first word) checked and cut off.
    fn lines_of(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| {
                let (stamp, rest) = line.split_once(' ').unwrap();
                assert!(humantime::parse_rfc3339(stamp).is_ok(), "{line}");
                rest.to_owned()
            })
            .collect()
    }

    #[test]
    fn hook_output_is_appended_line_by_line_with_its_tag() {
        let logs = tempfile::tempdir().unwrap();
        let (app, version) = ("shop".parse().unwrap(), "v7".parse().unwrap());
        let log = HookLog {
            app: &app,
            version: &version,
            logs_dir: logs.path(),
            max_bytes: 1 << 20,
        };
        log.runs(&[
            run(
                "collectstatic",
                "Copying 3 files\n\n   \n3 static files copied\n",
                1500,
            ),
            run("true", "", 20),
        ]);
        let path = logs.path().join("hooks/shop.log");
        assert_eq!(
            lines_of(&path),
            [
                "shop v7 [collectstatic] Copying 3 files",
                "shop v7 [collectstatic] 3 static files copied",
                "shop v7 [collectstatic] finished in 1.5s",
                "shop v7 [true] finished in 20.0ms",
            ]
        );

        log.failure(&WebError::Command {
            what: "hook migrate".into(),
            command: "python manage.py migrate".into(),
            status: "exit status: 1".into(),
            output: "Traceback\nDatabaseError: locked".into(),
        });
        let lines = lines_of(&path);
        assert_eq!(lines.len(), 7, "{lines:#?}");
        assert_eq!(
            lines[4..],
            [
                "shop v7 [failed] `python manage.py migrate` (hook migrate) failed with exit status: 1:",
                "shop v7 [failed] Traceback",
                "shop v7 [failed] DatabaseError: locked",
            ]
        );
    }

    #[test]
    fn each_app_has_its_own_log() {
        let logs = tempfile::tempdir().unwrap();
        let version = "v1".parse().unwrap();
        for name in ["blog", "shop"] {
            let app = name.parse().unwrap();
            HookLog {
                app: &app,
                version: &version,
                logs_dir: logs.path(),
                max_bytes: 1 << 20,
            }
            .runs(&[run("check", name, 1)]);
        }
        assert_eq!(
            lines_of(&logs.path().join("hooks/blog.log"))[0],
            "blog v1 [check] blog"
        );
        assert_eq!(
            lines_of(&logs.path().join("hooks/shop.log"))[0],
            "shop v1 [check] shop"
        );
    }
}
