//! Each HTTPS app's certificate, from the store to nginx: checked here again (key, names,
//! dates) before it replaces what nginx serves, so a bad one never takes a good one's place.
//! For `tls = "acme"` the group's certificate is first ordered or renewed when due
//! ([`crate::acme`]), by whichever server of the group gets the lease.

use std::collections::BTreeMap;

use anyhow::bail;
use milky_core::project::TlsMode;
use milky_core::status::TlsStatus;
use milky_core::tls::{self, StoredCertificate};
use milky_core::{AppName, layout};

use super::{Agent, Wanted};
use crate::acme::{GroupAcme, read_stored};

/// What syncing an app's certificate found.
#[derive(Debug, Default)]
pub(super) struct Synced {
    /// No certificate yet and none can be installed now (another server orders it).
    pub waiting: Option<String>,
    /// `acme`: why the group's last order failed; the current certificate serves on.
    pub renewal_error: Option<String>,
}

impl Agent {
    fn group_acme(&self) -> GroupAcme<'_> {
        GroupAcme {
            store: &self.store,
            group: &self.config.group,
            host: &self.host,
            web: &self.web,
            settings: &self.config.acme,
            state_dir: self.state_dir.root.join("acme"),
        }
    }

    /// Installs the group's stored certificate of `app` when it differs from the installed one
    /// and passes the checks for `server_names`; with `acme`, orders or renews it first when
    /// due. A deploy of an HTTPS app calls it before the switch (the app cannot be served
    /// without one), every pass calls it for what serves.
    pub(super) async fn sync_certificate(
        &self,
        app: &AppName,
        server_names: &[String],
        mode: TlsMode,
    ) -> anyhow::Result<Synced> {
        let group = &self.config.group;
        let mut synced = Synced::default();
        let mut stored = read_stored(&self.store, group, app).await?;
        if mode == TlsMode::Acme {
            let acme = self.group_acme();
            let orders = acme.sync_challenges().await?;
            let info = stored
                .as_ref()
                .and_then(|s| tls::certificate_info(&s.chain).ok());
            let ensured = acme.ensure(app, server_names, &orders, info.as_ref()).await;
            synced.renewal_error = ensured.renewal_error;
            if ensured.issued {
                stored = read_stored(&self.store, group, app).await?;
            }
            if ensured.waiting.is_some() && self.web.installed_certificate(app.as_str())?.is_none()
            {
                synced.waiting = ensured.waiting;
                return Ok(synced);
            }
        }
        let Some(stored) = stored else {
            if self.web.installed_certificate(app.as_str())?.is_some() {
                // Deleted from the store: what is installed keeps serving.
                return Ok(synced);
            }
            if mode == TlsMode::Acme {
                match &synced.renewal_error {
                    Some(err) => bail!("no certificate yet: the order failed: {err}"),
                    None => bail!("no certificate in {} yet", layout::tls(group, app)),
                }
            }
            bail!(
                "no certificate for {app} in {group}: run `cargo milky tls set {group} {app} --cert FILE --key FILE`"
            );
        };
        self.install(app, server_names, &stored)?;
        Ok(synced)
    }

    fn install(
        &self,
        app: &AppName,
        server_names: &[String],
        stored: &StoredCertificate,
    ) -> anyhow::Result<()> {
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
                match self
                    .sync_certificate(app, &manifest.app.server_names, mode)
                    .await
                {
                    Ok(synced) => status.renewal_error = synced.renewal_error,
                    Err(err) => {
                        let err = format!("{err:#}");
                        app_errors
                            .entry(app.clone())
                            .or_insert_with(|| format!("certificate: {err}"));
                        status.error = Some(err);
                    }
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
