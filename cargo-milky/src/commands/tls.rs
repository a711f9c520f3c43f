//! `cargo milky tls`: the certificate of an app in a group: `set` for `tls = "provided"`,
//! `renew` for `tls = "acme"`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use milky_core::project::ProjectConfig;
use milky_core::tls::{self, Source, StoredCertificate};
use milky_core::{AppName, GroupName};

use crate::cli::GlobalArgs;
use crate::exit::user_error;
use crate::progress::Printer;
use crate::settings::Settings;

/// The certificate and key of an app: given (`tls = "provided"`) or renewed now (`tls = "acme"`).
///
/// Stored in the store (groups/GROUP/tls/APP.toml) like the app's env: a secret that whoever
/// may read the group's env may read. Each server installs it on its next pass (key 0600,
/// readable by nginx's master only) and reloads nginx; a pair it finds wrong (key, names,
/// dates) is refused and the one it has keeps serving. `cargo milky status` shows each
/// server's expiry.
#[derive(Debug, Args)]
pub struct TlsArgs {
    #[command(subcommand)]
    pub command: TlsCommand,
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Store a certificate and its key for an app; checked first, nothing is stored if it fails
    #[command(
        after_help = "The key must belong to the certificate, the certificate must not have expired, and its names\nmust cover the app's server_names (read from milky.toml when it is this app's; the servers\ncheck them again against the release they run).\n\nExample:\n  cargo milky tls set stable shop --cert fullchain.pem --key privkey.pem"
    )]
    Set {
        group: GroupName,
        app: AppName,
        /// The certificate, then its intermediates (PEM)
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// Its private key (PEM, PKCS#8)
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[command(flatten)]
        new_group: crate::groups::NewGroupArgs,
    },
    /// Renew an ACME certificate (`tls = "acme"`) at the servers' next pass, whatever its expiry
    #[command(
        after_help = "One server of the group orders a new certificate from the CA on its next pass (a failed\norder's backoff is skipped); every server then installs it, the current one serving until\nthen. `cargo milky status` shows the new expiry, or why the order failed.\n\nExample:\n  cargo milky tls renew stable shop"
    )]
    Renew { group: GroupName, app: AppName },
}

pub async fn run(args: TlsArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    match args.command {
        TlsCommand::Set {
            group,
            app,
            cert,
            key,
            new_group,
        } => {
            // Checked before the store is even opened: a wrong pair changes nothing.
            let stored = checked_pair(&cert, &key, &server_names(&global.config, &app))?;
            let settings = Settings::resolve(global)?;
            let store = settings.open_store().await?;
            let index = store.read_index().await?.map(|(index, _)| index);
            crate::groups::allow_new(&store, index.as_ref(), &group, &new_group).await?;
            tls::write(&store, &group, &app, &stored)
                .await
                .context("storing the certificate")?;
            printer.status(format!(
                "stored the certificate of {app} in {group} ({}, expires {}); servers install it on their next pass",
                stored.names.join(", "),
                tls::time_text(stored.not_after)
            ));
            Ok(())
        }
        TlsCommand::Renew { group, app } => {
            let settings = Settings::resolve(global)?;
            let store = settings.open_store().await?;
            let index = store.read_index().await?.map(|(index, _)| index);
            if !index.is_some_and(|index| index.group(&group).contains_key(&app)) {
                return Err(user_error(format!(
                    "{group} does not run {app} (see `cargo milky status {group}`): no certificate to renew; nothing was requested"
                )));
            }
            if let Some(warning) = mode_warning(&store, &group, &app).await {
                printer.status(warning);
            }
            let requested =
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            milky_core::acme::edit(&store, &group, |orders| {
                let order = orders.apps.entry(app.clone()).or_default();
                order.renew_requested = Some(requested.clone());
                order.retry_after = None;
            })
            .await
            .context("requesting the renewal")?;
            printer.status(format!(
                "renewal of the certificate of {app} in {group} requested; a server of {group} orders it on its next pass"
            ));
            Ok(())
        }
    }
}

/// A warning when the group's servers report `app` with a TLS mode other than `acme` (a
/// renewal request then changes nothing until a release with `tls = "acme"` runs there).
async fn mode_warning(
    store: &milky_core::Store,
    group: &GroupName,
    app: &AppName,
) -> Option<String> {
    let reports = match milky_core::status::read_group(store, group).await {
        Ok(reports) => reports,
        Err(err) => {
            return Some(format!(
                "warning: could not read {group}'s status reports: {err}"
            ));
        }
    };
    let others: Vec<String> = reports
        .iter()
        .filter_map(|(host, report)| {
            let mode = match report.as_ref().ok()?.apps.get(app)?.tls.as_ref() {
                Some(tls) if tls.mode == "acme" => return None,
                Some(tls) => tls.mode.clone(),
                None => "none".to_owned(),
            };
            Some(format!("{host}: {mode}"))
        })
        .collect();
    (!others.is_empty()).then(|| {
        format!(
            "warning: {app} does not run with tls = \"acme\" on every server of {group} ({}); only servers running it with acme order and install the renewed certificate",
            others.join(", ")
        )
    })
}

/// The app's server names from the project file, when it is this app's.
fn server_names(config: &Path, app: &AppName) -> Vec<String> {
    std::fs::read_to_string(config)
        .ok()
        .and_then(|text| ProjectConfig::parse(&text).ok())
        .filter(|project| project.app.name == *app)
        .map(|project| project.app.server_names)
        .unwrap_or_default()
}

fn checked_pair(
    cert: &Path,
    key: &Path,
    server_names: &[String],
) -> anyhow::Result<StoredCertificate> {
    let chain = fs_err::read_to_string(cert)?;
    let key_text = fs_err::read_to_string(key)?;
    let refuse = |e: tls::TlsError| {
        user_error(format!(
            "{} with {}: {e}; nothing was stored",
            cert.display(),
            key.display()
        ))
    };
    let info = tls::inspect(&chain, &key_text).map_err(refuse)?;
    info.check(server_names, tls::now()).map_err(refuse)?;
    Ok(StoredCertificate {
        source: Source::Provided,
        names: info.names,
        not_after: info.not_after,
        chain,
        key: key_text,
    })
}
