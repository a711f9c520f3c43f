//! `cargo milky hooks`: what the one-time hooks of an app did in a group, and running its
//! first-deploy hooks again.

use clap::{Args, Subcommand};
use milky_core::once_hooks::OnceResult;
use milky_core::{AppName, GroupName, layout};
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::progress::Printer;
use crate::settings::Settings;

/// Show whether an app's first-deploy hooks (`[hooks] first`) ran in a group, or let them run
/// once more.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo milky hooks show stable myapp\n  cargo milky hooks reset stable myapp"
)]
pub struct HooksArgs {
    #[command(subcommand)]
    pub command: HooksCommand,
}

#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// Whether the first-deploy hooks ran: where, when, and the end of their output
    Show {
        group: GroupName,
        app: AppName,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Forget that the first-deploy hooks ran: the next version a server deploys runs them again
    Reset { group: GroupName, app: AppName },
}

#[derive(Debug, Serialize)]
struct FirstHooks {
    group: String,
    app: String,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<OnceResult>,
}

pub async fn run(args: HooksArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let writes = matches!(args.command, HooksCommand::Reset { .. });
    let store = settings.open_store_for(writes).await?;
    match args.command {
        HooksCommand::Show { group, app, json } => {
            let key = layout::first_hooks_done(&group, &app);
            let result = match store.get(&key).await? {
                Some(object) => Some(
                    OnceResult::parse(&String::from_utf8_lossy(&object.bytes))
                        .map_err(|e| anyhow::anyhow!("{key} is unreadable: {e}"))?,
                ),
                None => None,
            };
            let shown = FirstHooks {
                group: group.to_string(),
                app: app.to_string(),
                done: result.is_some(),
                result,
            };
            if json {
                return super::print_json(&shown);
            }
            match &shown.result {
                Some(r) => {
                    outln!(
                        "the first-deploy hooks of {app} ran in {group} on {} at {}: {}",
                        r.host,
                        r.finished,
                        r.hooks.join("; ")
                    );
                    if !r.output_tail.trim().is_empty() {
                        outln!("{}", r.output_tail.trim_end());
                    }
                }
                None => outln!(
                    "the first-deploy hooks of {app} have not run in {group}: the next version a server deploys runs them"
                ),
            }
            Ok(())
        }
        HooksCommand::Reset { group, app } => {
            let key = layout::first_hooks_done(&group, &app);
            if store.head(&key).await?.is_none() {
                printer.status(format!(
                    "the first-deploy hooks of {app} have not run in {group}; nothing to reset"
                ));
                return Ok(());
            }
            store.delete(&key).await?;
            printer.status(format!(
                "the first-deploy hooks of {app} will run again in {group}, with the next version a server deploys"
            ));
            Ok(())
        }
    }
}
