//! `cargo milky rollback`: back to the version a group ran before.

use anyhow::Context;
use clap::Args;
use milky_core::{AppName, GroupName, IndexError, Rollback, Version};

use crate::cli::GlobalArgs;
use crate::exit::user_error;
use crate::progress::Printer;
use crate::settings::Settings;
use crate::wait::{WaitArgs, until_converged};

/// Switch a group back to the version of an app it ran before (the index keeps a short history
/// per group and app; each rollback goes one step further back).
///
/// Versions that never served on any server of the group (a release that failed its health check
/// everywhere) are passed over, and the command says so. Servers record the versions they serve
/// in the store; for an app whose servers have recorded none yet (agents older than this
/// feature), every version in the history counts as served.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo milky rollback stable myapp --dry-run\n  cargo milky rollback stable myapp --wait"
)]
pub struct RollbackArgs {
    pub group: GroupName,
    pub app: AppName,
    /// Say which version the group would go back to; write nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

pub async fn run(args: RollbackArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let store = settings.open_store_for(!args.dry_run).await?;
    let (group, app) = (&args.group, &args.app);
    let served = milky_core::served::versions(&store, group, app)
        .await
        .context("reading which versions served")?;
    let has_served = |v: &Version| served.is_empty() || served.contains(v);
    let rollback = if args.dry_run {
        let Some((mut index, _)) = store.read_index().await? else {
            return Err(user_error(
                "the store has no version.info yet; upload something first",
            ));
        };
        let rollback = index.rollback(group, app, has_served)?;
        printer.status("dry run: version.info not changed");
        rollback
    } else {
        let (rollback, _) = store
            .edit_index(|index| -> Result<_, IndexError> { index.rollback(group, app, has_served) })
            .await
            .context("updating version.info")?;
        crate::group_state::after_edit(&settings, None, &store, group, printer).await?;
        rollback
    };
    let Rollback {
        from,
        to,
        never_served,
    } = rollback;
    if !never_served.is_empty() {
        let list: Vec<&str> = never_served.iter().map(Version::as_str).collect();
        tracing::warn!(
            "passed over {} of {app}: never served on any server of {group}",
            list.join(", ")
        );
    }
    let verb = if args.dry_run {
        "would run"
    } else {
        "now runs"
    };
    outln!("{group} {verb} {app} {to} (rolled back from {from})");
    if args.wait.wait && !args.dry_run {
        until_converged(&store, group, app, &args.wait, printer).await?;
    }
    Ok(())
}
