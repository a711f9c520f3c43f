//! Medians with their spread, and timing a command.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::tools::display;

/// Samples of one measure (seconds, MB, counts …).
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn push(&mut self, value: f64) {
        self.0.push(value);
    }

    pub fn median(&self) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    pub fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    /// `median (min–max)` with `digits` decimals and a unit.
    pub fn show(&self, digits: usize, unit: &str) -> String {
        if self.0.is_empty() {
            return "—".into();
        }
        if self.0.len() == 1 {
            return format!("{:.digits$}{unit}", self.0[0]);
        }
        format!(
            "{:.digits$}{unit} ({:.digits$}–{:.digits$})",
            self.median(),
            self.min(),
            self.max()
        )
    }
}

/// Runs a command to completion, failing on a non-zero exit; returns its wall time in seconds.
pub fn timed(command: &mut Command) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("starting {}", display(command)))?;
    let wall = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            display(command),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(wall)
}

/// What `/usr/bin/time` says about one run.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub wall: f64,
    pub cpu: f64,
    pub max_rss_mb: f64,
}

/// Runs `program args…` under GNU time; fails unless it exits 0.
pub fn usage(
    program: &Path,
    args: &[&str],
    env: &[(&str, String)],
    scratch: &Path,
) -> anyhow::Result<Usage> {
    let report = scratch.join("time.out");
    let mut command = Command::new("/usr/bin/time");
    command
        .args(["-f", "%e %U %S %M", "-o"])
        .arg(&report)
        .arg(program)
        .args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    // Wall time from our clock: GNU time's %e has only 10 ms steps.
    let wall = timed(&mut command)?;
    let text = std::fs::read_to_string(&report)
        .with_context(|| format!("reading {}", report.display()))?;
    let fields: Vec<f64> = text
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [_, user, system, rss_kb] = fields[..] else {
        bail!("unexpected /usr/bin/time output: {text:?}");
    };
    Ok(Usage {
        wall,
        cpu: user + system,
        max_rss_mb: rss_kb / 1024.0,
    })
}
