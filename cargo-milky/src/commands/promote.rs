//! `cargo milky promote`: copy versions from one group to another.

use anyhow::Context;
use clap::Args;
use milky_core::{AppName, GroupName, IndexError};

use crate::cli::GlobalArgs;
use crate::exit::user_error;
use crate::progress::Printer;
use crate::settings::Settings;
use crate::wait::{WaitArgs, until_converged};

/// Make a group run the versions another group runs (e.g. unstable → stable), without uploading
/// anything again. Without APPs, every app of FROM.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  cargo milky promote unstable stable myapp --wait")]
pub struct PromoteArgs {
    pub from: GroupName,
    pub to: GroupName,
    pub apps: Vec<AppName>,
    #[command(flatten)]
    pub new_group: crate::groups::NewGroupArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
}

pub async fn run(args: PromoteArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    if args.from == args.to {
        return Err(user_error("promote needs two different groups"));
    }
    let settings = Settings::resolve(global)?;
    let store = settings.open_store_for(true).await?;
    let index = store.read_index().await?.map(|(index, _)| index);
    crate::groups::require(&store, index.as_ref(), &args.from).await?;
    crate::groups::allow_new(&store, index.as_ref(), &args.to, &args.new_group).await?;
    let (changes, _) = store
        .edit_index(|index| -> Result<_, IndexError> {
            let source = index.group(&args.from);
            let apps: Vec<AppName> = if args.apps.is_empty() {
                source.keys().cloned().collect()
            } else {
                args.apps.clone()
            };
            let mut changes = Vec::new();
            for app in apps {
                let version = source
                    .get(&app)
                    .cloned()
                    .ok_or_else(|| IndexError::NotInGroup {
                        group: args.from.clone(),
                        app: app.clone(),
                    })?;
                let previous = index.set_version(&args.to, &app, &version)?;
                changes.push((app, version, previous));
            }
            Ok(changes)
        })
        .await
        .context("updating version.info")?;
    crate::group_state::after_edit(&settings, None, &store, &args.to, printer).await?;
    for (app, version, previous) in &changes {
        outln!(
            "{} now runs {app} {version}{}",
            args.to,
            crate::commands::version::was(previous.as_ref(), version)
        );
    }
    if args.wait.wait {
        for (app, _, _) in &changes {
            until_converged(&store, &args.to, app, &args.wait, printer).await?;
        }
    }
    Ok(())
}
