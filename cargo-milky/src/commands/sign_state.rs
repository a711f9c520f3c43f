//! `cargo milky sign-state`: sign groups' state anew (new generation, new expiry).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use milky_core::GroupName;
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::exit::user_error;
use crate::progress::Printer;
use crate::settings::Settings;

/// Sign the state of groups anew: what each runs, a new generation and a new expiry.
///
/// Every edit of what a group runs (upload, version, rollback, promote, remove, env) signs its
/// state when a signing key is configured; servers that trust keys install nothing new once it
/// expires (unless `[signing] require_signed_state = false` in their agent.toml). Run this before
/// then, e.g. daily from CI, and once to start signing a store whose groups have no state yet.
/// Without GROUP, every group the index names.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo milky sign-state --sign-key ~/.config/milky/signing.key\n  cargo milky sign-state stable --expiry-days 7"
)]
pub struct SignStateArgs {
    /// The groups to sign [default: every group in version.info]
    pub groups: Vec<GroupName>,
    /// The secret key (from `cargo milky keygen`) [default: $MILKY_SIGNING_KEY, else [deploy] signing_key in milky.toml]
    #[arg(long, value_name = "PATH")]
    pub sign_key: Option<PathBuf>,
    /// Days the new states stay valid [default: [deploy] state_expiry_days, else 30]
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=3660))]
    pub expiry_days: Option<u32>,
    /// Print the outcome as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Signed {
    group: GroupName,
    generation: u64,
    expires: String,
    apps: usize,
    key_id: String,
}

pub async fn run(args: SignStateArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    let mut settings = Settings::resolve(global)?;
    if args.expiry_days.is_some() {
        settings.state_expiry_days = args.expiry_days;
    }
    let key = settings.signing_key(args.sign_key.as_deref())?.ok_or_else(|| {
        user_error(
            "no signing key given: pass --sign-key PATH, set MILKY_SIGNING_KEY, or add `signing_key = \"…\"` under [deploy] in milky.toml",
        )
    })?;
    let store = settings.open_store().await?;
    let groups = if args.groups.is_empty() {
        let Some((index, _)) = store.read_index().await? else {
            return Err(user_error(
                "the store has no version.info yet; upload something first",
            ));
        };
        index.known_groups().into_iter().collect()
    } else {
        args.groups.clone()
    };
    let lifetime = crate::group_state::lifetime(&settings);
    let mut signed = Vec::new();
    for group in &groups {
        let state = crate::group_state::publish(&store, &key.key, group, lifetime)
            .await
            .with_context(|| format!("signing the state of {group}"))?;
        if !args.json {
            outln!(
                "{group}: generation {} signed by {}, valid until {} ({} apps)",
                state.generation,
                key.key.public().id(),
                state.expires,
                state.apps.len()
            );
        }
        signed.push(Signed {
            group: group.clone(),
            generation: state.generation,
            expires: state.expires,
            apps: state.apps.len(),
            key_id: key.key.public().id().to_string(),
        });
    }
    if args.json {
        return super::print_json(&signed);
    }
    if signed.is_empty() {
        printer.status("no groups to sign");
    }
    Ok(())
}
