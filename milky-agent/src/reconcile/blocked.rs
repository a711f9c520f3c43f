//! A pass that found the run lock taken: it does nothing, unless the pass holding the lock has
//! held it longer than `[limits] stuck_pass`; then it says so, since the stuck pass cannot.

use std::time::SystemTime;

use milky_core::status::StuckPass;

use super::{Agent, PassReport, lock};

impl Agent {
    /// A pass that found the run lock taken: nothing to do, unless the pass that holds it has
    /// held it for too long. The stuck pass cannot say so itself, so this one does, on stderr
    /// and in the server's status report.
    pub(super) async fn blocked(&self, holder: &lock::Holder) -> PassReport {
        let limit = self.config.limits.stuck_pass;
        let held = SystemTime::now()
            .duration_since(holder.since)
            .unwrap_or_default();
        let mut report = PassReport {
            busy: true,
            ..PassReport::default()
        };
        if held <= limit {
            return report;
        }
        let stuck = StuckPass {
            since: humantime::format_rfc3339_seconds(holder.since).to_string(),
            pid: holder.pid,
        };
        self.reporter().stuck(&stuck).await;
        let fix = match holder.pid {
            Some(pid) => format!(
                "see what it waits for (`ps -o pid,etime,args --ppid {pid}`) or end it (`kill {pid}`)"
            ),
            None => "its pid is not in the lock file".to_owned(),
        };
        report.errors.push(format!(
            "{}: it has held the run lock ({}) longer than [limits] stuck_pass ({}), so no other pass runs on this server; {fix}",
            stuck.describe(),
            self.state_dir.lock_path().display(),
            humantime::format_duration(limit),
        ));
        report
    }
}
