//! `cargo milky`: the controller of MilkyWhite. Packages Django apps, uploads them to the store
//! and edits the index that says which version of which app each server group runs. It never
//! talks to a server: servers pull from the store.

use std::process::ExitCode;

use clap::Parser;

// First, so that its `outln!` is there for the modules below.
#[macro_use]
mod stdout;

mod cli;
mod commands;
mod exit;
mod group_state;
mod groups;
mod progress;
mod settings;
mod store_check;
mod wait;

fn main() -> ExitCode {
    let cli::Cargo::Milky(args) = cli::Cargo::parse();
    progress::init_logging(args.global.verbose, args.global.quiet);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    match runtime.block_on(commands::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => exit::report(&err),
    }
}
