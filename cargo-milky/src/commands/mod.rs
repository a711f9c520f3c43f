//! One module per command, each with its clap `Args` and its `run`.

pub mod doctor;
pub mod env;
pub mod hooks;
pub mod hosts;
pub mod info;
pub mod init;
pub mod keygen;
pub mod keys;
pub mod logs;
pub mod package;
pub mod promote;
pub mod prune;
pub mod remove;
pub mod rollback;
pub mod sign;
pub mod sign_state;
pub mod status;
pub mod tls;
pub mod upload;
pub mod version;

use crate::cli::{Command, MilkyArgs};
use crate::progress::Printer;

pub async fn run(args: MilkyArgs) -> anyhow::Result<()> {
    let printer = Printer {
        quiet: args.global.quiet,
    };
    match args.command {
        Command::Init(a) => init::run(a, &args.global, printer),
        Command::Package(a) => package::run(a, printer).map(|_| ()),
        Command::Upload(a) => upload::run(a, &args.global, printer).await,
        Command::Version(a) => version::run(a, &args.global, printer).await,
        Command::Remove(a) => remove::run(a, &args.global, printer).await,
        Command::Info(a) => info::run(a, &args.global).await,
        Command::Status(a) => status::run(a, &args.global).await,
        Command::Rollback(a) => rollback::run(a, &args.global, printer).await,
        Command::Promote(a) => promote::run(a, &args.global, printer).await,
        Command::Prune(a) => prune::run(a, &args.global, printer).await,
        Command::Hosts(a) => hosts::run(a, &args.global, printer).await,
        Command::Hooks(a) => hooks::run(a, &args.global, printer).await,
        Command::Doctor(a) => doctor::run(a, &args.global).await,
        Command::Env(a) => env::run(a, &args.global, printer).await,
        Command::Logs(a) => logs::run(a, &args.global, printer).await,
        Command::Keygen(a) => keygen::run(a, printer),
        Command::Sign(a) => sign::run(a, &args.global, printer).await,
        Command::Tls(a) => tls::run(a, &args.global, printer).await,
        Command::SignState(a) => sign_state::run(a, &args.global, printer).await,
        Command::Keys(a) => keys::run(a, &args.global).await,
    }
}

/// Prints a value as pretty JSON on stdout, for `--json`.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
