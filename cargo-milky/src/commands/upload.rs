//! `cargo milky upload`: put a package into the store and make a group run it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use milky_core::index::Added;
use milky_core::package::build::file_sha256;
use milky_core::store::{Condition, ObjectInfo, StoreError};
use milky_core::{GroupName, IndexError, Manifest, PackageEntry, layout, signing};
use serde::Serialize;

use super::package::{BuildArgs, build_package};
use crate::cli::GlobalArgs;
use crate::exit::user_error;
use crate::progress::Printer;
use crate::settings::Settings;

/// Upload a package and make a group run it.
///
/// Given a directory, packs it first (see `cargo milky package`); given a .tar.bz2, uploads that.
/// The package is written once and never overwritten: the same version with the same bytes again
/// is a no-op, with other bytes it is refused. Then version.info is edited (compare-and-swap) so
/// GROUP runs this version; servers pick it up on their next pass.
///
/// With a signing key (--sign-key, MILKY_SIGNING_KEY or `signing_key` under [deploy]), the index
/// entry is signed, so servers that trust the key's public half install it; uploading an
/// unsigned version again with a key adds the signature.
///
/// Both `upload --group GROUP PATH` and `upload GROUP PATH` work. A group that does not exist yet
/// is created only with --new-group (or a yes at the terminal), so a typo cannot make one.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo milky upload --group stable ./myapp\n  cargo milky upload --new-group --group staging ./myapp\n  cargo milky upload stable target/milky/myapp-v1022.tar.bz2\n  cargo milky upload --group stable --sign-key ~/.config/milky/signing.key ./myapp"
)]
pub struct UploadArgs {
    /// The group that will run the uploaded version [default: [deploy] group in milky.toml]
    #[arg(long, short)]
    pub group: Option<GroupName>,
    /// [GROUP] PATH: a project directory or a .tar.bz2 package [default: .]
    #[arg(value_name = "ARGS", num_args = 0..=2)]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub build: BuildArgs,
    /// Sign the index entry with this secret key (from `cargo milky keygen`) [default: $MILKY_SIGNING_KEY, else [deploy] signing_key in milky.toml]
    #[arg(long, value_name = "PATH")]
    pub sign_key: Option<PathBuf>,
    #[command(flatten)]
    pub new_group: crate::groups::NewGroupArgs,
    #[command(flatten)]
    pub wait: crate::wait::WaitArgs,
    /// Show what would happen; write nothing to the store
    #[arg(long)]
    pub dry_run: bool,
    /// Print the outcome as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Outcome {
    group: GroupName,
    app: String,
    version: String,
    sha256: String,
    size: u64,
    /// Whether the bytes were sent (false: the store already had them).
    uploaded: bool,
    previous: Option<String>,
    /// The id of the key whose signature the entry carries now, if any.
    signed_by: Option<String>,
    dry_run: bool,
}

pub async fn run(args: UploadArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let (group, path) = match (args.group.clone(), args.targets.as_slice()) {
        (Some(group), []) => (group, ".".to_owned()),
        (Some(group), [path]) => (group, path.clone()),
        (None, [group, path]) => (group.parse()?, path.clone()),
        (None, [path]) => (settings.group(None)?, path.clone()),
        (None, []) => (settings.group(None)?, ".".to_owned()),
        (Some(_), [_, _]) => {
            return Err(user_error(
                "give the group either with --group or as the first argument, not both",
            ));
        }
        _ => return Err(user_error("expected [GROUP] PATH")),
    };
    let path = PathBuf::from(path);
    // A bad key is found before anything is packed or sent.
    let signing_key = settings.signing_key(args.sign_key.as_deref())?;
    if let Some(key) = &signing_key
        && path.is_dir()
        && inside(&key.path, &path)
    {
        return Err(user_error(format!(
            "the signing key {} is inside the project {} and could be packed into the package; keep it outside (cargo milky keygen writes to ~/.config/milky)",
            key.path.display(),
            path.display()
        )));
    }
    // A group that does not exist is refused before anything is packed or sent.
    let store = settings.open_store_for(!args.dry_run).await?;
    let index = store.read_index().await?.map(|(index, _)| index);
    crate::groups::allow_new(&store, index.as_ref(), &group, &args.new_group).await?;
    let (package, manifest, sha256, size) = if path.is_dir() {
        let built = build_package(&path, &args.build, printer)?;
        (built.path, built.manifest, built.sha256, built.size)
    } else if path.is_file() {
        let manifest = milky_core::package::read_manifest(&path)
            .with_context(|| format!("{} is not a MilkyWhite package", path.display()))?;
        let sha256 = file_sha256(&path).with_context(|| format!("reading {}", path.display()))?;
        let size = fs_err::metadata(&path)?.len();
        (path, manifest, sha256, size)
    } else {
        return Err(user_error(format!(
            "{} is neither a project directory nor a package file",
            path.display()
        )));
    };
    let Manifest {
        app: settings_app,
        release,
        ..
    } = &manifest;
    let (app, version) = (&settings_app.name, &release.version);
    let mut entry = PackageEntry {
        sha256: sha256.clone(),
        size,
        uploaded: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        signature: None,
        python: settings_app.python.clone(),
    };
    if let Some(key) = &signing_key {
        entry.signature = Some(key.key.sign_entry(app, version, &entry));
    }

    // Refuse a conflicting version before sending any bytes.
    let known = match store.read_index().await.map_err(anyhow::Error::from)? {
        Some((index, _)) => index.package(app, version),
        None => None,
    };
    if let Some(existing) = &known
        && existing.sha256 != sha256
    {
        return Err(IndexError::VersionConflict {
            app: app.clone(),
            version: version.clone(),
            existing: existing.sha256.clone(),
            new: sha256,
        }
        .into());
    }

    let key = layout::package(app, version);
    let mut uploaded = false;
    if args.dry_run {
        printer.status(format!(
            "dry run: would upload {} to {}/{key}",
            package.display(),
            store.url()
        ));
    } else if known.is_none() {
        uploaded = put_package(&store, &key, &package, &sha256, size, printer).await?;
    } else {
        printer.status(format!(
            "{app} {version} is already in the store with the same bytes"
        ));
    }

    let key_id = signing_key.as_ref().map(|k| k.key.public().id());
    let (previous, signed_by) = if args.dry_run {
        // As `Index::add_package` does: a signed entry keeps its signature.
        let before = known.as_ref().and_then(signing::signer);
        if let (None, Some(id)) = (before, key_id) {
            printer.status(format!("dry run: would sign the entry with key {id}"));
        }
        (None, before.or(key_id))
    } else {
        let ((added, previous), written) = store
            .edit_index(|index| -> Result<_, IndexError> {
                let added = index.add_package(app, version, &entry)?;
                Ok((added, index.set_version(&group, app, version)?))
            })
            .await
            .context("updating version.info")?;
        let key = args.sign_key.as_deref();
        crate::group_state::after_edit(&settings, key, &store, &group, printer).await?;
        let signed_by = written
            .package(app, version)
            .as_ref()
            .and_then(signing::signer);
        match (added, key_id, signed_by) {
            (Added::Signed, Some(id), _) => {
                printer.status(format!("signed the entry of {app} {version} with key {id}"));
            }
            (_, Some(id), Some(before)) if before != id => printer.status(format!(
                "{app} {version} keeps its signature by key {before}; `cargo milky sign` replaces it"
            )),
            _ => {}
        }
        super::prune::after_upload(&store, &written, printer).await;
        (previous, signed_by)
    };
    let outcome = Outcome {
        group: group.clone(),
        app: app.to_string(),
        version: version.to_string(),
        sha256,
        size,
        uploaded,
        previous: previous.as_ref().map(ToString::to_string),
        signed_by: signed_by.map(|id| id.to_string()),
        dry_run: args.dry_run,
    };
    if args.json {
        super::print_json(&outcome)?;
    } else {
        print_outcome(&outcome, previous.as_ref(), version, args.dry_run);
    }
    if args.wait.wait && !args.dry_run {
        crate::wait::until_converged(&store, &group, app, &args.wait, printer).await?;
    }
    Ok(())
}

/// Whether `path` lies inside `dir` (both resolved, so `./key` and `key` are the same file).
fn inside(path: &std::path::Path, dir: &std::path::Path) -> bool {
    match (std::fs::canonicalize(path), std::fs::canonicalize(dir)) {
        (Ok(path), Ok(dir)) => path.starts_with(dir),
        _ => false,
    }
}

fn print_outcome(
    outcome: &Outcome,
    previous: Option<&milky_core::Version>,
    version: &milky_core::Version,
    dry_run: bool,
) {
    let (group, app) = (&outcome.group, &outcome.app);
    let was = super::version::was(previous, version);
    let verb = if dry_run { "would run" } else { "now runs" };
    outln!("{group} {verb} {app} {version}{was}");
}

/// Writes the package once. Returns whether bytes were sent: if the key already holds the same
/// bytes (an earlier upload that stopped before editing the index), there is nothing to send.
///
/// The store's word is checked, since some accept a create over an existing object: the key is
/// looked at before the upload, and after it the store must hold these bytes (the ETag it gave
/// us, or this sha256) before the index may name them.
async fn put_package(
    store: &milky_core::Store,
    key: &str,
    package: &std::path::Path,
    sha256: &str,
    size: u64,
    printer: Printer,
) -> anyhow::Result<bool> {
    if let Some(existing) = store.head(key).await? {
        same_bytes(key, &existing, sha256)?;
        return Ok(false);
    }
    let transfer = printer.transfer(&format!("uploading {key}"), size);
    let started = std::time::Instant::now();
    let result = store
        .put_file(key, package, sha256, Condition::IfAbsent, &|done| {
            transfer.update(done)
        })
        .await;
    transfer.finish();
    match result {
        Ok(etag) => {
            // On a store used at the user's risk, a racing upload may still be landing.
            store.settle(started.elapsed()).await;
            let stored = store.head(key).await?.ok_or_else(|| {
                anyhow::anyhow!("{key} is missing from the store right after it was uploaded")
            })?;
            if stored.etag != etag {
                same_bytes(key, &stored, sha256)?;
            }
            printer.status(format!("uploaded {key} ({size} bytes)"));
            Ok(true)
        }
        Err(StoreError::PreconditionFailed { .. }) => {
            let existing = store.head(key).await?.ok_or_else(|| {
                anyhow::anyhow!("{key} was refused as existing, and then was not there")
            })?;
            same_bytes(key, &existing, sha256)?;
            Ok(false)
        }
        Err(other) => {
            Err(anyhow::Error::from(other).context(format!("uploading {}", package.display())))
        }
    }
}

/// Ok if the object at `key` is the package with `sha256`; else the refusal.
fn same_bytes(key: &str, stored: &ObjectInfo, sha256: &str) -> anyhow::Result<()> {
    match &stored.sha256 {
        Some(theirs) if theirs == sha256 => Ok(()),
        Some(theirs) => Err(user_error(format!(
            "{key} already exists in the store with other bytes (sha256 {theirs}, this package {sha256}); versions are immutable, pick a new version"
        ))),
        None => Err(user_error(format!(
            "{key} already exists in the store and its sha256 is unknown; pick a new version"
        ))),
    }
}
