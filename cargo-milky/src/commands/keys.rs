//! `cargo milky keys`: the deploy keys the offline root key allows to sign group state.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use milky_core::signing::deploy_keys::DeployKeys;
use milky_core::signing::{PublicKey, SecretKey};
use milky_core::{Condition, StoreError, layout};

use crate::cli::GlobalArgs;
use crate::exit::user_error;
use crate::settings::Settings;

/// Add, revoke or list the deploy keys that may sign group state, in a list the root key signs.
///
/// Servers that trust a root key (`[signing] root_keys` in agent.toml) accept a group's signed
/// state only from a key on the newest list the root signed (keys.toml in the store). Keep the
/// root key offline; use it only here. Each change is a new generation: servers refuse an older
/// list, so a revoked key does not come back.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo milky keys add \"$(cat ~/.config/milky/signing.pub)\" --root-key /media/usb/root.key\n  cargo milky keys revoke 0a1b2c3d4e5f6a7b --root-key /media/usb/root.key\n  cargo milky keys list"
)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Allow a deploy key (its public key line) to sign group state
    Add {
        public_key: PublicKey,
        /// The root secret key (from `cargo milky keygen`)
        #[arg(long, value_name = "FILE")]
        root_key: PathBuf,
    },
    /// Stop allowing a deploy key (its key id, or its public key line)
    Revoke {
        key: String,
        /// The root secret key
        #[arg(long, value_name = "FILE")]
        root_key: PathBuf,
    },
    /// Show the list as the store has it
    List,
}

/// An edit of the list; true when it changed something.
type Change = dyn Fn(&mut DeployKeys) -> bool;

pub async fn run(args: KeysArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let store = settings.open_store().await?;
    let (root, change): (PathBuf, Box<Change>) = match args.command {
        KeysCommand::List => {
            let list = match store.get(layout::DEPLOY_KEYS).await? {
                Some(object) => DeployKeys::parse(&String::from_utf8_lossy(&object.bytes))
                    .with_context(|| format!("{} does not parse", layout::DEPLOY_KEYS))?,
                None => {
                    outln!("no deploy key list ({} is missing)", layout::DEPLOY_KEYS);
                    return Ok(());
                }
            };
            outln!("generation {}", list.generation);
            list.keys.iter().for_each(|k| outln!("{k}"));
            return Ok(());
        }
        KeysCommand::Add {
            public_key,
            root_key,
        } => (root_key, Box::new(move |list| list.add(&public_key))),
        KeysCommand::Revoke { key, root_key } => {
            let id = match key.parse::<PublicKey>() {
                Ok(public) => public.id(),
                Err(_) => milky_core::signing::KeyId::parse(&key).ok_or_else(|| {
                    user_error(format!(
                        "{key:?} is neither a key id (16 hex digits) nor a public key line"
                    ))
                })?,
            };
            (root_key, Box::new(move |list| list.revoke(id)))
        }
    };
    let root = SecretKey::read(&root).map_err(|e| user_error(e.to_string()))?;
    for _attempt in 0..40 {
        let (mut list, condition) = match store.get(layout::DEPLOY_KEYS).await? {
            Some(object) => (
                DeployKeys::parse(&String::from_utf8_lossy(&object.bytes)).map_err(|e| {
                    user_error(format!(
                        "{} does not parse ({e}); it was not overwritten",
                        layout::DEPLOY_KEYS
                    ))
                })?,
                Condition::IfMatch(object.etag),
            ),
            None => (DeployKeys::default(), Condition::IfAbsent),
        };
        if !change(&mut list) {
            outln!("no change (generation {})", list.generation);
            return Ok(());
        }
        list.sign_next(&root)
            .map_err(|e| user_error(e.to_string()))?;
        match store
            .put(layout::DEPLOY_KEYS, list.to_toml().into_bytes(), condition)
            .await
        {
            Ok(_) => {
                outln!(
                    "{} generation {} signed by root key {}: {} deploy key(s)",
                    layout::DEPLOY_KEYS,
                    list.generation,
                    root.public().id(),
                    list.keys.len()
                );
                return Ok(());
            }
            Err(StoreError::PreconditionFailed { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(user_error("gave up: other writers kept changing keys.toml"))
}
