//! `cargo milky remove`: take an app out of a group.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Args;
use milky_core::{AppName, GroupName, IndexError};

use crate::cli::GlobalArgs;
use crate::exit::user_error;
use crate::progress::Printer;
use crate::settings::Settings;

/// Take an app out of a group: its servers stop serving it and delete its files on their next
/// pass. Its packages stay in the store, so `cargo milky version` can bring it back.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  cargo milky remove stable oldapp")]
pub struct RemoveArgs {
    pub group: GroupName,
    pub app: AppName,
    /// Do not ask for confirmation (needed when not on a terminal)
    #[arg(long, short)]
    pub yes: bool,
    /// Show what would change; write nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(args: RemoveArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let store = settings.open_store_for(!args.dry_run).await?;
    let (group, app) = (&args.group, &args.app);
    let Some((index, _)) = store.read_index().await? else {
        return Err(user_error(
            "the store has no version.info yet; nothing to remove",
        ));
    };
    let Some(version) = index.group(group).remove(app) else {
        return Err(IndexError::NotInGroup {
            group: group.clone(),
            app: app.clone(),
        }
        .into());
    };
    if args.dry_run {
        printer.status("dry run: version.info not changed");
        outln!("{group} would stop running {app} {version}");
        return Ok(());
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
            return Err(user_error(format!(
                "removing {app} from {group} needs confirmation: pass --yes when not on a terminal"
            )));
        }
        let confirmed = dialoguer::Confirm::new()
            .with_prompt(format!(
                "Remove {app} (running {version}) from every server of {group}?"
            ))
            .default(false)
            .interact()?;
        if !confirmed {
            return Err(user_error("not removed"));
        }
    }
    let (version, _) = store
        .edit_index(|index| -> Result<_, IndexError> { index.remove_app(group, app) })
        .await
        .context("updating version.info")?;
    crate::group_state::after_edit(&settings, None, &store, group, printer).await?;
    outln!("{group} no longer runs {app} (was {version}); its packages stay in the store");
    Ok(())
}
