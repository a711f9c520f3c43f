//! `cargo milky sign`: sign the index entry of a version that is already uploaded.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use milky_core::package::build::file_sha256;
use milky_core::{AppName, IndexError, Version, layout, signing};
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::exit::user_error;
use crate::progress::Printer;
use crate::settings::Settings;

/// Sign the index entry of an uploaded version with your key.
///
/// For versions uploaded before you signed, or signed by a key you retire. The package is
/// checked first: downloaded from the store and hashed (or, with --package, your own copy is
/// hashed), and its sha256, size and manifest must match the entry. Then the signature goes into
/// version.info (compare-and-swap), replacing one by another key. Signing vouches for what the
/// package holds: with --package you vouch for your copy, without it for what the store holds.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo milky sign myapp v1021 --sign-key ~/.config/milky/signing.key\n  cargo milky sign myapp v1021 --package target/milky/myapp-v1021.tar.bz2"
)]
pub struct SignArgs {
    /// The app
    pub app: AppName,
    /// The uploaded version whose entry is signed
    pub version: Version,
    /// The secret key (from `cargo milky keygen`) [default: $MILKY_SIGNING_KEY, else [deploy] signing_key in milky.toml]
    #[arg(long, value_name = "PATH")]
    pub sign_key: Option<PathBuf>,
    /// Check this local .tar.bz2 against the entry instead of downloading the package
    #[arg(long, value_name = "FILE")]
    pub package: Option<PathBuf>,
    /// Check and show what would change; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the outcome as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Outcome {
    app: AppName,
    version: Version,
    sha256: String,
    size: u64,
    key_id: String,
    /// The key whose signature was replaced, if another one had signed the entry.
    replaced: Option<String>,
    /// False when the entry already carried this key's signature.
    changed: bool,
    dry_run: bool,
}

pub async fn run(args: SignArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let key = settings.signing_key(args.sign_key.as_deref())?.ok_or_else(|| {
        user_error(
            "no signing key given: pass --sign-key PATH, set MILKY_SIGNING_KEY, or add `signing_key = \"…\"` under [deploy] in milky.toml",
        )
    })?;
    let store = settings.open_store_for(!args.dry_run).await?;
    let (app, version) = (&args.app, &args.version);
    let Some((index, _)) = store.read_index().await? else {
        return Err(user_error(
            "the store has no version.info yet; upload something first",
        ));
    };
    let entry = index
        .package(app, version)
        .ok_or_else(|| IndexError::UnknownVersion {
            app: app.clone(),
            version: version.clone(),
            known: index
                .apps()
                .remove(app)
                .map(|v| {
                    v.keys()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .filter(|list| !list.is_empty())
                .unwrap_or_else(|| "none".into()),
        })?;

    // What is signed must be what the entry names: hash the bytes and read their manifest.
    let download = tempfile::tempdir()?;
    let (package, what) = match &args.package {
        Some(path) => (path.clone(), path.display().to_string()),
        None => {
            let key = layout::package(app, version);
            let dest = download
                .path()
                .join(layout::package_file_name(app, version));
            let transfer = printer.transfer(&format!("downloading {key}"), entry.size);
            let result = store
                .download(&key, &dest, &|done| transfer.update(done))
                .await;
            transfer.finish();
            result.with_context(|| format!("downloading {key} to check it"))?;
            (dest, format!("{key} in the store"))
        }
    };
    let sha256 = file_sha256(&package).with_context(|| format!("reading {}", package.display()))?;
    let size = fs_err::metadata(&package)?.len();
    if sha256 != entry.sha256 || size != entry.size {
        return Err(user_error(format!(
            "{what} does not match the index entry of {app} {version} (sha256 {sha256}, {size} bytes; the entry says {}, {} bytes): not signed",
            entry.sha256, entry.size
        )));
    }
    let manifest = milky_core::package::read_manifest(&package)
        .with_context(|| format!("{what} is not a MilkyWhite package"))?;
    if &manifest.app.name != app || &manifest.release.version != version {
        return Err(user_error(format!(
            "{what} holds the manifest of {} {}, not {app} {version}: not signed",
            manifest.app.name, manifest.release.version
        )));
    }

    let public = key.key.public();
    let signature = key.key.sign_entry(app, version, &entry);
    let before = signing::signer(&entry);
    let changed = entry.signature.as_deref() != Some(signature.as_str());
    if changed && !args.dry_run {
        let (written, _) = store
            .edit_index(|index| -> Result<bool, IndexError> {
                // The signature is only good for the entry that was checked.
                match index.package(app, version) {
                    Some(now) if now.sha256 == entry.sha256 && now.size == entry.size => {
                        index.set_signature(app, version, &signature)?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            })
            .await
            .context("updating version.info")?;
        if !written {
            return Err(user_error(format!(
                "the entry of {app} {version} changed while it was being checked; nothing was signed"
            )));
        }
    }
    if changed && !args.dry_run {
        // Groups running this version get a state naming it as signed now.
        for (group, apps) in index.groups() {
            if apps.get(app) == Some(version) {
                crate::group_state::after_edit(
                    &settings,
                    args.sign_key.as_deref(),
                    &store,
                    &group,
                    printer,
                )
                .await?;
            }
        }
    }
    let replaced = before.filter(|id| *id != public.id());
    let outcome = Outcome {
        app: app.clone(),
        version: version.clone(),
        sha256,
        size,
        key_id: public.id().to_string(),
        replaced: replaced.map(|id| id.to_string()),
        changed,
        dry_run: args.dry_run,
    };
    if args.json {
        return super::print_json(&outcome);
    }
    let verb = match (changed, args.dry_run) {
        (false, _) => "is already signed",
        (true, true) => "would be signed",
        (true, false) => "signed",
    };
    let replaced = replaced
        .map(|id| format!(" (replacing the signature by key {id})"))
        .unwrap_or_default();
    outln!("{app} {version} {verb} with key {}{replaced}", public.id());
    Ok(())
}
