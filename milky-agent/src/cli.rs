//! The agent's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{AgentConfig, DEFAULT_PATH};
use crate::logfile::{BoundedLog, QUIET};
use crate::reconcile::{Agent, PassReport};

/// Make this server run what the index in the store gives its group, on nginx + Apache mod_wsgi.
///
/// Exit codes: 0 when the server matches the index (or another pass is already running),
/// 1 when a step failed (the server keeps serving what it served) or another pass is stuck,
/// 2 on bad settings, or credentials the store refuses (or none found).
#[derive(Debug, Parser)]
#[command(name = "milky-agent", version, about, long_about)]
pub struct Cli {
    /// The agent's settings
    #[arg(long, global = true, default_value = DEFAULT_PATH, value_name = "FILE")]
    pub config: PathBuf,
    /// More output (-vv for debug logs); RUST_LOG works too
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One pass: what cron runs every 5 minutes and what runs at boot
    Sync,
    /// Passes in a loop, for a long-running service; stops cleanly on SIGTERM or Ctrl-C
    Run {
        /// Time between the start of one pass and the next
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match AgentConfig::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(
        cli.verbose,
        BoundedLog::new(
            config.paths.logs.join("agent.log"),
            config.logs.local_max_bytes,
        ),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    runtime.block_on(async {
        let agent = match Agent::open(config).await {
            Ok(agent) => agent,
            Err(err) => {
                tracing::error!("{err:#}");
                return ExitCode::from(2);
            }
        };
        match cli.command {
            Command::Sync => exit_code(&one_pass(&agent).await),
            Command::Run { interval } => run_loop(&agent, interval).await,
        }
    })
}

async fn one_pass(agent: &Agent) -> PassReport {
    let report = match agent.pass().await {
        Ok(report) => report,
        Err(err) => PassReport {
            errors: vec![format!("{err:#}")],
            ..PassReport::default()
        },
    };
    if report.busy {
        tracing::info!(target: QUIET, "another pass is running; nothing to do");
    }
    report.changes.iter().for_each(|c| tracing::info!("{c}"));
    report.waiting.iter().for_each(|w| tracing::info!("{w}"));
    report.errors.iter().for_each(|e| tracing::error!("{e}"));
    if !report.busy && report.ok() && report.changes.is_empty() && report.waiting.is_empty() {
        tracing::info!(target: QUIET, "up to date");
    }
    report
}

fn exit_code(report: &PassReport) -> ExitCode {
    if report.refused {
        ExitCode::from(2)
    } else if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn run_loop(agent: &Agent, interval: Duration) -> ExitCode {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    loop {
        let started = tokio::time::Instant::now();
        one_pass(agent).await;
        tokio::select! {
            _ = tokio::time::sleep_until(started + interval) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!("stopping");
    ExitCode::SUCCESS
}

/// Colour on stderr only when a person may read it there: stderr is a terminal and `NO_COLOR`
/// (no-color.org) is unset or empty. Under cron, systemd or a pipe, stderr ends up in mail, the
/// journal or a file, where escape codes are noise.
pub fn colour_stderr() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Logs to stderr and to the agent's log file (`[paths] logs`/agent.log, bounded), which the
/// agent ships to the store with the other logs. The file never holds colour codes.
fn init_logging(verbose: u8, file: BoundedLog) {
    use tracing_subscriber::prelude::*;
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour_stderr())
        .with_target(false);
    let to_file = tracing_subscriber::fmt::layer()
        .with_writer(file)
        .with_ansi(false)
        .with_target(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.target() != QUIET
        }));
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(to_file)
        .init();
}
