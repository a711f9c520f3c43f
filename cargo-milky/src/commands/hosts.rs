//! `cargo milky hosts`: the servers' reports.

use clap::{Args, Subcommand};
use milky_core::{GroupName, HostName, layout};

use crate::cli::GlobalArgs;
use crate::exit::user_error;
use crate::progress::Printer;
use crate::settings::Settings;

/// List the servers that report to a group, or forget a dead one.
#[derive(Debug, Args)]
pub struct HostsArgs {
    #[command(subcommand)]
    pub command: HostsCommand,
}

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Drop a server's report (a server that is gone for good); a live one writes it again
    Forget { group: GroupName, host: HostName },
}

pub async fn run(args: HostsArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let store = settings.open_store().await?;
    match args.command {
        HostsCommand::Forget { group, host } => {
            let key = layout::host_status(&group, &host);
            if store.head(&key).await?.is_none() {
                return Err(user_error(format!("{group} has no report from {host}")));
            }
            store.delete(&key).await?;
            printer.status(format!("forgot {host} in {group}"));
            Ok(())
        }
    }
}
