//! `cargo milky version`: switch a group to an uploaded version.

use anyhow::Context;
use clap::Args;
use milky_core::{AppName, GroupName, IndexError, Version, layout};

use crate::cli::GlobalArgs;
use crate::exit::user_error;
use crate::progress::Printer;
use crate::settings::Settings;

/// Switch a group to another uploaded version of an app (forward or back).
///
/// The package must really be in the store: it is checked there, not only in the index. Servers
/// switch on their next pass; a version they still have on disk needs no download.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  cargo milky version stable myapp v1022")]
pub struct VersionArgs {
    pub group: GroupName,
    pub app: AppName,
    pub version: Version,
    /// Show what would change; write nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub new_group: crate::groups::NewGroupArgs,
    #[command(flatten)]
    pub wait: crate::wait::WaitArgs,
}

pub async fn run(args: VersionArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let store = settings.open_store_for(!args.dry_run).await?;
    // A broken index is reported before anything else, and never written over.
    let Some((mut index, _)) = store.read_index().await? else {
        return Err(user_error(
            "the store has no version.info yet; upload something first",
        ));
    };
    crate::groups::allow_new(&store, Some(&index), &args.group, &args.new_group).await?;
    let key = layout::package(&args.app, &args.version);
    if store.head(&key).await?.is_none() {
        return Err(user_error(format!(
            "{} {} is not in the store ({} is missing); upload it first",
            args.app, args.version, key
        )));
    }
    let (group, app, version) = (&args.group, &args.app, &args.version);
    if args.dry_run {
        let previous = index.set_version(group, app, version)?;
        printer.status("dry run: version.info not changed");
        outln!(
            "{group} would run {app} {version}{}",
            was(previous.as_ref(), version)
        );
        return Ok(());
    }
    let (previous, _) = store
        .edit_index(|index| -> Result<_, IndexError> { index.set_version(group, app, version) })
        .await
        .context("updating version.info")?;
    crate::group_state::after_edit(&settings, None, &store, group, printer).await?;
    outln!(
        "{group} now runs {app} {version}{}",
        was(previous.as_ref(), version)
    );
    if args.wait.wait {
        crate::wait::until_converged(&store, group, app, &args.wait, printer).await?;
    }
    Ok(())
}

pub fn was(previous: Option<&Version>, now: &Version) -> String {
    match previous {
        Some(previous) if previous == now => " (unchanged)".into(),
        Some(previous) => format!(" (was {previous})"),
        None => String::new(),
    }
}
