//! Development tasks, the one entry for them: `cargo xtask <task>`.
//!
//! - `test`: install what the tests need (Debian packages, moto in a tools venv), start one
//!   S3-compatible server for the whole run, build once, run every test.
//! - `demo`: the main job on an embedded default, step by step, printing each command it runs.
//! - `bench`: benchmarks, each against a baseline run side by side; writes docs/BENCHMARKS.md.
//! - `dist`: release binaries, install_server.sh and the agent's .deb into target/dist.

mod bench;
mod demo;
mod dist;
mod test;
mod tools;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test [-- ARGS]   install what the tests need, then run them all (ARGS go to the test runner)
  demo             package and deploy a small Django app to a local store, step by step
  bench            run the benchmarks; write docs/BENCHMARKS.md
  dist             build release binaries and the agent's .deb into target/dist
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("dist") => dist::run(&args[1..]),
        Some("-h" | "--help") | None => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(anyhow::anyhow!("unknown task {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
