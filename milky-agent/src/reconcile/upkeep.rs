//! What a pass does once its plan is carried out: the releases that serve checked again against
//! the trusted keys, what a killed pass left tidied and old releases pruned, and the server's
//! logs shipped. None of it changes what serves.

use std::collections::BTreeMap;

use milky_core::{AppName, Version};

use super::{Agent, Wanted};
use crate::logship::{self, Shipper};
use crate::verify::Verifier;

impl Agent {
    /// What serves already is checked too, so a server that verifies says when it runs a
    /// release it would not install now (e.g. one installed before keys were configured).
    pub(super) fn check_served(
        &self,
        wanted: &Wanted,
        verifier: &Verifier,
        app_errors: &mut BTreeMap<AppName, String>,
    ) {
        if let Verifier::On(_) = verifier {
            for (app, (version, entry)) in wanted {
                if !app_errors.contains_key(app)
                    && self.running_version(app).as_ref() == Some(version)
                    && let Err(err) = verifier.check(
                        app,
                        version,
                        entry,
                        self.releases.unpacked_from(app, version).as_deref(),
                    )
                {
                    app_errors.insert(
                        app.clone(),
                        format!("serves {version}, which it would not install now: {err:#}"),
                    );
                }
            }
        }
    }

    /// Tidies what a killed pass left of each wanted app and prunes its old releases, keeping
    /// the wanted and the live one.
    pub(super) fn tidy_releases(&self, wanted: &Wanted) {
        for (app, wanted_version) in wanted.iter().map(|(a, (v, _))| (a, v)) {
            if let Err(err) = self.tidy(app) {
                tracing::warn!(%app, "{err:#}");
            }
            let live = self.running_version(app);
            let protect: Vec<&Version> = [Some(wanted_version), live.as_ref()]
                .into_iter()
                .flatten()
                .collect();
            if let Err(err) = self
                .releases
                .prune(app, self.config.releases.keep, &protect)
            {
                tracing::warn!(%app, "pruning old releases: {err:#}");
            }
        }
    }

    /// Ships what is new in this server's logs. Never fails the pass: what the store cannot
    /// take now waits on disk for a later pass.
    pub(super) async fn ship_logs(&self) {
        if !self.config.logs.ship {
            return;
        }
        let files = match logship::discover(&self.web, &self.config.paths.logs) {
            Ok(files) => files,
            Err(err) => {
                tracing::warn!("finding the logs to ship: {err:#}");
                return;
            }
        };
        let shipper = Shipper {
            store: &self.store,
            group: &self.config.group,
            host: &self.host,
            state_file: self.state_dir.root.join("logs-shipped.json"),
            settings: &self.config.logs,
        };
        let report = match shipper.ship(&files).await {
            Ok(report) => report,
            Err(err) => {
                tracing::warn!("shipping logs: {err:#}");
                return;
            }
        };
        if report.segments > 0 {
            tracing::debug!(
                "shipped {} log segments ({} bytes)",
                report.segments,
                report.bytes
            );
        }
        if report.backlog {
            tracing::info!("more logs to ship than one pass takes; the next pass goes on");
        }
        if let Some(err) = &report.store_error {
            tracing::warn!("logs wait on this server for a later pass: {err}");
        }
        report.warnings.iter().for_each(|w| tracing::warn!("{w}"));
        if report.reopen_nginx
            && let Err(err) = tokio::task::block_in_place(|| self.web.reopen_nginx_logs())
        {
            tracing::warn!("{err}");
        }
    }
}
