//! `cargo milky rollback`: back to the version a group ran before.

use anyhow::Context;
use clap::Args;
use milky_core::{AppName, GroupName, IndexError};

use crate::cli::GlobalArgs;
use crate::progress::Printer;
use crate::settings::Settings;
use crate::wait::{WaitArgs, until_converged};

/// Switch a group back to the version of an app it ran before (the index keeps a short history
/// per group and app; each rollback goes one step further back).
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  cargo milky rollback stable myapp --wait")]
pub struct RollbackArgs {
    pub group: GroupName,
    pub app: AppName,
    #[command(flatten)]
    pub wait: WaitArgs,
}

pub async fn run(args: RollbackArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let store = settings.open_store().await?;
    let ((from, to), _) = store
        .edit_index(|index| -> Result<_, IndexError> { index.rollback(&args.group, &args.app) })
        .await
        .context("updating version.info")?;
    outln!(
        "{} now runs {} {to} (rolled back from {from})",
        args.group,
        args.app
    );
    if args.wait.wait {
        until_converged(&store, &args.group, &args.app, &args.wait, printer).await?;
    }
    Ok(())
}
