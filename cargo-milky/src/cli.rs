//! The command line: `cargo milky <command>`, as cargo calls it (`cargo-milky milky <command>`).

use clap::{Args, Parser, Subcommand};

use crate::commands;

#[derive(Debug, Parser)]
#[command(name = "cargo", bin_name = "cargo", styles = clap::builder::styling::Styles::styled())]
pub enum Cargo {
    Milky(MilkyArgs),
}

/// Package Django apps, upload them to S3 and choose which version each server group runs.
///
/// Servers run `milky-agent`, which pulls the index (version.info) from the same store and makes
/// the server match it. This tool only ever writes to the store.
#[derive(Debug, Args)]
#[command(
    version,
    about,
    long_about,
    after_help = "Examples:\n  cargo milky init\n  cargo milky upload --new-group --group stable ./myapp\n  cargo milky version stable myapp v1022\n  cargo milky remove stable oldapp\n  cargo milky info\n  cargo milky status\n  cargo milky prune --dry-run\n  cargo milky logs stable --since 1h"
)]
pub struct MilkyArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The store: s3://BUCKET/PREFIX or file:///PATH [default: $MILKY_STORE, else [deploy] store in ./milky.toml]
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,
    /// An S3-compatible endpoint such as http://127.0.0.1:9000 (also: AWS_ENDPOINT_URL); implies path-style
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Write even to a store that fails `cargo milky doctor`'s conditional-write checks, at your risk [default: $MILKY_ALLOW_UNSAFE_STORE=1, else [deploy] allow_unsafe_store]
    #[arg(long, global = true)]
    pub allow_unsafe_store: bool,
    /// Where the controller's [deploy] settings are read from
    #[arg(long, global = true, value_name = "FILE", default_value = "milky.toml")]
    pub config: std::path::PathBuf,
    /// More output (-vv for debug logs); RUST_LOG works too
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Init(commands::init::InitArgs),
    Package(commands::package::PackageArgs),
    Upload(commands::upload::UploadArgs),
    Version(commands::version::VersionArgs),
    Remove(commands::remove::RemoveArgs),
    Info(commands::info::InfoArgs),
    Status(commands::status::StatusArgs),
    Rollback(commands::rollback::RollbackArgs),
    Promote(commands::promote::PromoteArgs),
    Prune(commands::prune::PruneArgs),
    Hosts(commands::hosts::HostsArgs),
    Hooks(commands::hooks::HooksArgs),
    Doctor(commands::doctor::DoctorArgs),
    Env(commands::env::EnvArgs),
    Logs(commands::logs::LogsArgs),
    Keygen(commands::keygen::KeygenArgs),
    Sign(commands::sign::SignArgs),
    Tls(commands::tls::TlsArgs),
    SignState(commands::sign_state::SignStateArgs),
    Keys(commands::keys::KeysArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_app() {
        Cargo::command().debug_assert();
    }

    #[test]
    fn help_texts() {
        let mut milky = Cargo::command();
        // Propagates "cargo milky" into every subcommand's usage line, as a real run shows it.
        milky.build();
        let milky = milky.find_subcommand_mut("milky").unwrap();
        insta::assert_snapshot!("milky", milky.render_long_help().to_string());
        // Every command, and the subcommands of those that have them, by their names: a new
        // command fails this test until it has a snapshot.
        let names: Vec<String> = milky
            .get_subcommands()
            .map(|sub| sub.get_name().to_owned())
            .filter(|name| name != "help")
            .collect();
        assert!(names.iter().any(|name| name == "env"), "{names:?}");
        for name in names {
            let sub = milky.find_subcommand_mut(&name).unwrap();
            let help = sub.render_long_help().to_string();
            insta::assert_snapshot!(name.as_str(), help);
            let inner: Vec<String> = sub
                .get_subcommands()
                .map(|inner| inner.get_name().to_owned())
                .filter(|inner| inner != "help")
                .collect();
            for inner in inner {
                let help = sub
                    .find_subcommand_mut(&inner)
                    .unwrap()
                    .render_long_help()
                    .to_string();
                insta::assert_snapshot!(format!("{name}-{inner}"), help);
            }
        }
    }
}
