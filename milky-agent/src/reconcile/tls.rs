//! Each HTTPS app's certificate, from the store to nginx: checked here again (key, names,
//! dates) before it replaces what nginx serves, so a bad one never takes a good one's place.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use milky_core::status::TlsStatus;
use milky_core::tls::{self, StoredCertificate};
use milky_core::{AppName, layout};

use super::{Agent, Wanted};

impl Agent {
    /// Installs the group's stored certificate of `app` when it differs from the installed one
    /// and passes the checks for `server_names`. A deploy of an HTTPS app calls it before the
    /// switch (the app cannot be served without one), every pass calls it for what serves.
    pub(super) async fn sync_certificate(
        &self,
        app: &AppName,
        server_names: &[String],
    ) -> anyhow::Result<()> {
        let group = &self.config.group;
        let key = layout::tls(group, app);
        let Some(object) = self.store.get(&key).await? else {
            if self.web.installed_certificate(app.as_str())?.is_some() {
                // Deleted from the store: what is installed keeps serving.
                return Ok(());
            }
            bail!(
                "no certificate for {app} in {group}: run `cargo milky tls set {group} {app} --cert FILE --key FILE`"
            );
        };
        let stored = StoredCertificate::parse(&String::from_utf8_lossy(&object.bytes))
            .with_context(|| format!("{key} in {}", self.store.url()))?;
        let checked = tls::inspect(&stored.chain, &stored.key)
            .and_then(|info| info.check(server_names, tls::now()));
        if let Err(err) = checked {
            bail!(
                "the stored certificate is refused, the installed one (if any) keeps serving: {err}"
            );
        }
        let changed = tokio::task::block_in_place(|| {
            self.web
                .install_certificate(app.as_str(), &stored.chain, &stored.key)
        })?;
        if changed {
            tracing::info!(%app, "installed the certificate for {}", stored.names.join(", "));
        }
        Ok(())
    }

    /// Brings the certificate of every HTTPS app this server serves up to date; a failure is
    /// the app's error (unless it has one already), and the installed certificate stays.
    /// Returns the HTTPS of every app with `tls`, for the status report.
    pub(super) async fn refresh_certificates(
        &self,
        wanted: &Wanted,
        app_errors: &mut BTreeMap<AppName, String>,
    ) -> BTreeMap<AppName, TlsStatus> {
        let mut statuses = BTreeMap::new();
        for app in wanted.keys() {
            let Some(version) = self.running_version(app) else {
                continue;
            };
            let Some(manifest) = self.releases.manifest(app, &version) else {
                continue;
            };
            let Some(mode) = manifest.app.tls else {
                continue;
            };
            let mut status = TlsStatus {
                mode: mode.as_str().to_owned(),
                ..TlsStatus::default()
            };
            if mode.terminates_here() {
                if let Err(err) = self.sync_certificate(app, &manifest.app.server_names).await {
                    let err = format!("{err:#}");
                    app_errors
                        .entry(app.clone())
                        .or_insert_with(|| format!("certificate: {err}"));
                    status.error = Some(err);
                }
                let installed = self.web.installed_certificate(app.as_str()).ok().flatten();
                if let Some(info) = installed.and_then(|c| tls::certificate_info(&c).ok()) {
                    status.names = info.names;
                    status.expires = Some(tls::time_text(info.not_after));
                }
            }
            statuses.insert(app.clone(), status);
        }
        statuses
    }
}
