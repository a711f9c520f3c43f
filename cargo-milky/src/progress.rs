//! What the user sees while work runs: logs and progress on stderr, data on stdout. Progress
//! bars only on a terminal; plain lines in CI and cron.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Colour only on a terminal, and never with `NO_COLOR` set (no-color.org): CI logs and files
/// that stderr is redirected to get plain text.
fn colour_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

pub fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        // The store's errors are one line; -v adds the SDK's full account of each.
        (false, 1) => "info,milky_core::store=debug",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_stderr())
        .with_target(false)
        .without_time()
        .init();
}

/// Says what is happening, on stderr, unless --quiet.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub quiet: bool,
}

impl Printer {
    pub fn status(&self, message: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{message}");
        }
    }

    /// A byte-counting progress display for a transfer of `total` bytes.
    pub fn transfer(&self, label: &str, total: u64) -> Transfer {
        let bar = (!self.quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(label.to_owned());
            bar
        });
        Transfer {
            label: label.to_owned(),
            total,
            bar,
            quiet: self.quiet,
            last_tenth: Mutex::new(0),
        }
    }

    /// A "done/total" bar on a terminal (None elsewhere: callers print plain lines).
    pub fn counter(&self, label: &str) -> Option<ProgressBar> {
        (!self.quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_message(label.to_owned());
            bar
        })
    }

    /// A spinner on a terminal, one line otherwise, for work without a byte count.
    pub fn spinner(&self, message: &str) -> Option<ProgressBar> {
        if self.quiet {
            return None;
        }
        if std::io::stderr().is_terminal() {
            let spinner = ProgressBar::new_spinner().with_message(message.to_owned());
            spinner.enable_steady_tick(Duration::from_millis(100));
            Some(spinner)
        } else {
            eprintln!("{message}");
            None
        }
    }
}

pub struct Transfer {
    label: String,
    total: u64,
    bar: Option<ProgressBar>,
    quiet: bool,
    last_tenth: Mutex<u64>,
}

impl Transfer {
    pub fn update(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if !self.quiet && self.total > 0 {
            // Plain lines at every tenth, so CI logs show movement without flooding.
            let tenth = done * 10 / self.total;
            let mut last = self.last_tenth.lock().expect("not poisoned");
            if tenth > *last {
                *last = tenth;
                eprintln!(
                    "{}: {}% ({} of {} bytes)",
                    self.label,
                    tenth * 10,
                    done,
                    self.total
                );
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
