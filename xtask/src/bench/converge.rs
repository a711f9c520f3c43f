//! Benchmark 4 — Time to converge: 8 servers in `run --interval 2s`; from `cargo milky upload`
//! returning to every server answering with the new version through its nginx, with each
//! server's breakdown from its own log lines (read as they are written) and its download file's
//! size. Two fleets in the same run: one installing with `python -m venv` and pip (the
//! baseline), one with uv (a cold cache at the first install, warm at the upgrades); then one
//! server of the uv fleet alone, to measure what sharing the machine's cores costs the eight.
//! Each round also counts the CPU the servers used (each in a cgroup of its own), and so the
//! floor of its time: no schedule of that work on this machine's cores ends sooner.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Bench;
use super::report::Report;
use super::servers::{Lines, Server};
use super::stats::Samples;
use super::unpack::watch_size;

const SERVERS: usize = 8;

/// The target of the uv upgrade: every server serving within this after the upload returns.
const TARGET_SECS: f64 = 10.0;

/// Seconds of a Debug-formatted Duration at the start of `text` (`1.234s`, `12ms`, …), the
/// fields possibly in colour.
fn duration_at(text: &str) -> Option<f64> {
    let d = text
        .split(|c: char| c.is_whitespace() || c == '\u{1b}')
        .next()?;
    let (number, scale) = if let Some(n) = d.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = d.strip_suffix("µs") {
        (n, 1e-6)
    } else if let Some(n) = d.strip_suffix("ns") {
        (n, 1e-9)
    } else {
        (d.strip_suffix('s')?, 1.0)
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// Sum of the durations in `hook `…` ran in 1.234s` lines.
fn hook_seconds(lines: &[(Instant, String)]) -> f64 {
    lines
        .iter()
        .filter_map(|(_, l)| l.split(" ran in ").nth(1))
        .filter_map(duration_at)
        .sum()
}

/// The agent's own timing of the bytecode it compiles once the release serves (uv only).
fn compile_seconds(lines: &[(Instant, String)]) -> Option<f64> {
    lines
        .iter()
        .filter(|(_, l)| l.contains("compiled the venv's bytecode"))
        .find_map(|(_, l)| duration_at(l.split("took=").nth(1)?))
}

#[derive(Default)]
struct Phases {
    detect: Samples,
    download: Samples,
    unpack: Samples,
    venv: Samples,
    dependencies: Samples,
    hooks: Samples,
    switch: Samples,
    compile: Samples,
    total: Samples,
    /// CPU seconds of the servers (all they started included) from just before the upload to
    /// each one's first answer of the new version, summed; `None` when not counted.
    cpu_to_serving: Option<f64>,
    /// The same to the end of every server's pass, the bytecode compiled after the switch included.
    cpu_to_end: Option<f64>,
    /// Whether every pass had ended when `cpu_to_end` was read (the wait for them is bounded).
    passes_ended: bool,
}

impl Phases {
    /// The phase with the largest median, for the targets' "what limits it".
    fn largest(&self) -> (&'static str, f64) {
        [
            ("detect", &self.detect),
            ("download", &self.download),
            ("verify + unpack", &self.unpack),
            ("venv", &self.venv),
            ("dependencies", &self.dependencies),
            ("server hooks", &self.hooks),
            ("once hooks + slot start + health + switch", &self.switch),
        ]
        .into_iter()
        .map(|(name, s)| (name, s.median()))
        .filter(|(_, m)| m.is_finite())
        .fold(("—", 0.0), |a, b| if b.1 > a.1 { b } else { a })
    }
}

/// Servers of one group, each in its `run` loop, with their logs.
struct Fleet {
    group: String,
    servers: Vec<Server>,
    logs: Vec<Lines>,
    /// Why the servers' CPU is not counted, if it is not.
    uncounted: Option<String>,
}

impl Fleet {
    fn start(bench: &Bench, group: &str, prefix: &str, extra: &str) -> anyhow::Result<Self> {
        let mut servers = Vec::new();
        let mut logs = Vec::new();
        let mut uncounted = None;
        for n in 1..=SERVERS {
            let mut server = Server::new(bench, group, &format!("{prefix}{n}"), extra)?;
            if uncounted.is_none()
                && let Err(why) = server.count_cpu()
            {
                eprintln!("bench 4: the servers' CPU is not counted: {why}");
                uncounted = Some(why);
            }
            logs.push(server.start_run("2s")?);
            servers.push(server);
        }
        Ok(Fleet {
            group: group.to_owned(),
            servers,
            logs,
            uncounted,
        })
    }

    /// The CPU each server has used so far.
    fn cpu(&self) -> Vec<Option<Duration>> {
        self.servers.iter().map(Server::cpu).collect()
    }

    /// Keeps the first `n` servers; the others are stopped and removed.
    fn keep(&mut self, n: usize) {
        self.servers.drain(n..).for_each(Server::remove);
        self.logs.truncate(n);
    }

    fn remove(self) {
        self.servers.into_iter().for_each(Server::remove);
    }

    /// Uploads `version` and measures each server until it serves it.
    fn round(&self, bench: &Bench, version: &str) -> anyhow::Result<Phases> {
        let package = bench.package(version)?;
        let size = std::fs::metadata(&package)?.len();
        let stop = Arc::new(AtomicBool::new(false));
        let watchers: Vec<_> = self
            .servers
            .iter()
            .map(|s| {
                watch_size(
                    s.root
                        .join(format!("state/downloads/shop-{version}.tar.bz2.part")),
                    size,
                    stop.clone(),
                )
            })
            .collect();
        let marks: Vec<usize> = self
            .logs
            .iter()
            .map(|l| l.lock().expect("lines").len())
            .collect();
        let cpu_before = self.cpu();
        bench.milky_ok(&[
            "upload",
            "--new-group",
            "--group",
            &self.group,
            &package.to_string_lossy(),
        ])?;
        let t0 = Instant::now();
        let mut serving: Vec<Option<Instant>> = vec![None; self.servers.len()];
        let mut cpu_serving: Vec<Option<Duration>> = vec![None; self.servers.len()];
        while serving.iter().any(Option::is_none) && t0.elapsed() < Duration::from_secs(1200) {
            for (i, server) in self.servers.iter().enumerate() {
                if serving[i].is_none() && server.serving().as_deref() == Some(version) {
                    serving[i] = Some(Instant::now());
                    cpu_serving[i] = server.cpu();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        let downloaded: Vec<Option<Instant>> = watchers
            .into_iter()
            .map(|w| w.join().ok().flatten())
            .collect();
        anyhow::ensure!(
            serving.iter().all(Option::is_some),
            "not every server serves {version} after 20 min:\n{}",
            super::servers::text(
                &self.logs[serving.iter().position(Option::is_none).unwrap_or(0)]
                    .lock()
                    .expect("lines")
            )
        );
        // The deploy goes on after the switch (the old slot's stop, the bytecode): its lines
        // are read once every server has logged its end, or after a minute.
        let ended = |i: usize| {
            self.logs[i].lock().expect("lines")[marks[i]..]
                .iter()
                .any(|(_, l)| {
                    l.contains(&format!("-> {version}"))
                        || l.contains(&format!("{version} installed"))
                })
        };
        let waited = Instant::now();
        while !(0..self.servers.len()).all(ended) && waited.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut phases = Phases {
            cpu_to_serving: cpu_used(&cpu_before, &cpu_serving),
            cpu_to_end: cpu_used(&cpu_before, &self.cpu()),
            passes_ended: (0..self.servers.len()).all(ended),
            ..Phases::default()
        };
        for (i, log) in self.logs.iter().enumerate() {
            let lines: Vec<(Instant, String)> = log.lock().expect("lines")[marks[i]..].to_vec();
            let at = |needle: &str| {
                lines
                    .iter()
                    .find(|(_, l)| l.contains(needle))
                    .map(|(t, _)| *t)
            };
            let secs = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
                (Some(a), Some(b)) if b >= a => Some((b - a).as_secs_f64()),
                _ => None,
            };
            let started = at(&format!("downloading packages/shop/shop-{version}"));
            let unpacked = at("unpacked into");
            let venv = at("creating venv");
            let dependencies = at("installing requirements");
            let hooks_logged = at("hook `");
            let switched =
                at(&format!("-> {version}")).or_else(|| at(&format!("{version} installed")));
            let hooks = hook_seconds(&lines);
            let prepared = hooks_logged.or(switched);
            let put = |samples: &mut Samples, value: Option<f64>| {
                if let Some(v) = value {
                    samples.push(v);
                }
            };
            put(&mut phases.detect, secs(Some(t0), started));
            put(&mut phases.download, secs(started, downloaded[i]));
            put(&mut phases.unpack, secs(downloaded[i], unpacked));
            put(&mut phases.venv, secs(venv, dependencies));
            put(
                &mut phases.dependencies,
                secs(dependencies, prepared)
                    .map(|s| s - if hooks_logged.is_some() { hooks } else { 0.0 }),
            );
            put(&mut phases.hooks, Some(hooks));
            // To the first answer of the new release through nginx: the agent logs the end of
            // its pass only after the old slot has drained.
            put(&mut phases.switch, secs(prepared, serving[i]));
            put(&mut phases.compile, compile_seconds(&lines));
            put(&mut phases.total, secs(Some(t0), serving[i]));
        }
        Ok(phases)
    }
}

/// CPU seconds used by all the servers between two readings; `None` if one is missing.
fn cpu_used(before: &[Option<Duration>], after: &[Option<Duration>]) -> Option<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| Some(a.as_ref()?.saturating_sub(*b.as_ref()?).as_secs_f64()))
        .sum()
}

/// The machine's cores this process may use (its affinity and cgroup quota counted).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The shortest time `cpu` seconds of work can take on this machine's cores.
fn floor(cpu: f64) -> f64 {
    cpu / cores() as f64
}

fn row(body: &mut String, fleet: &str, round: &str, phases: &Phases) {
    let seconds = |cpu: Option<f64>| cpu.map_or("—".to_owned(), |c| format!("{c:.1} s"));
    let _ = writeln!(
        body,
        "| {fleet} | {round} | {:.1} s | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}{} |",
        phases.total.max(),
        phases.detect.show(2, " s"),
        phases.download.show(2, " s"),
        phases.unpack.show(2, " s"),
        phases.venv.show(2, " s"),
        phases.dependencies.show(1, " s"),
        phases.hooks.show(1, " s"),
        phases.switch.show(1, " s"),
        seconds(phases.cpu_to_serving),
        seconds(phases.cpu_to_serving.map(floor)),
        seconds(phases.cpu_to_end),
        if phases.passes_ended || phases.cpu_to_end.is_none() {
            ""
        } else {
            " (some passes still running)"
        },
    );
}

pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let uv = crate::tools::tools_venv().join("bin/uv");
    anyhow::ensure!(uv.is_file(), "no uv at {}", uv.display());
    let upgrades = if bench.quick { 1 } else { 2 };
    let cores = cores();
    let mut body = format!(
        "| installs with | round | all serving | detect | download | verify + unpack | venv | dependencies | server hooks | once hooks + slot start + health + switch | CPU of the servers, to serving | floor: CPU ÷ {cores} cores | CPU of the servers, to the passes' end |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );

    eprintln!("bench 4: the pip fleet ({SERVERS} servers)");
    let pip = Fleet::start(bench, "fleet", "f", "")?;
    let mut pip_upgrades = Samples::default();
    for n in 0..=upgrades {
        let version = format!("c{}", n + 1);
        let kind = if n == 0 { "install" } else { "upgrade" };
        eprintln!("bench 4: pip, {kind} {version}");
        let phases = pip.round(bench, &version)?;
        if n > 0 {
            pip_upgrades.push(phases.total.max());
        }
        row(
            &mut body,
            "pip (baseline)",
            &format!("{kind} {version}"),
            &phases,
        );
    }
    pip.remove();

    eprintln!("bench 4: the uv fleet ({SERVERS} servers)");
    let extra = format!("[python]\nuv = \"{}\"\n", uv.display());
    let mut fleet = Fleet::start(bench, "fleet-uv", "u", &extra)?;
    let mut uv_upgrades = Samples::default();
    // The slowest uv upgrade: (all serving, CPU to serving).
    let mut slowest_uv: Option<(f64, Option<f64>)> = None;
    let mut uv_limits = Phases::default();
    let mut compile = Samples::default();
    let mut cold = 0.0;
    for n in 0..=upgrades {
        let version = format!("u{}", n + 1);
        let (kind, cache) = if n == 0 {
            ("install", "cold uv cache")
        } else {
            ("upgrade", "warm uv cache")
        };
        eprintln!("bench 4: uv, {kind} {version}");
        let phases = fleet.round(bench, &version)?;
        compile.0.extend(&phases.compile.0);
        if n == 0 {
            cold = phases.total.max();
        } else {
            uv_upgrades.push(phases.total.max());
            if slowest_uv.is_none_or(|(total, _)| phases.total.max() > total) {
                slowest_uv = Some((phases.total.max(), phases.cpu_to_serving));
            }
        }
        row(
            &mut body,
            "uv",
            &format!("{kind} {version}, {cache}"),
            &phases,
        );
        if n == upgrades {
            uv_limits = phases;
        }
    }
    // The same upgrade on one server that has the machine to itself.
    fleet.keep(1);
    let version = format!("u{}", upgrades + 2);
    eprintln!("bench 4: uv, one server alone, upgrade {version}");
    let alone = fleet.round(bench, &version)?;
    row(
        &mut body,
        "uv, 1 server alone",
        &format!("upgrade {version}, warm uv cache"),
        &alone,
    );
    let uncounted = fleet.uncounted.clone();
    fleet.remove();

    let uv_upgrade = uv_upgrades.max();
    let pip_upgrade = pip_upgrades.max();
    let alone_total = alone.total.max();
    let (limit, limit_secs) = uv_limits.largest();
    let _ = writeln!(
        body,
        "\nPhases: median over the servers (min–max). *all serving*: from `cargo milky upload` returning to\n\
         the last server answering `/` with the new `X-Milky-Version` through its nginx (polled every 100 ms).\n\
         *detect*: to the agent's `downloading` line (passes every 2 s). *download*: until its download file\n\
         has the package's size. *venv*: `python -m venv` (pip) or `uv venv`, to the agent's `installing\n\
         requirements` line. *dependencies*: pip's or uv's install of the vendored wheels (`--no-index`), pip\n\
         compiling bytecode as it installs; uv's cache is each server's own (`uv-cache` in its state dir),\n\
         empty at the first install. uv leaves the bytecode to after the switch: it took {} per server there,\n\
         outside these columns. *server hooks*: `collectstatic`. The last column holds the once hook\n\
         (`migrate`, run by one server while the others wait for it), starting the new Apache slot, its\n\
         health check and the nginx switch, up to the first answer of the new release through nginx.\n\n\
         All servers of a fleet share this machine's cores. The same uv upgrade on one server alone took\n\
         {alone_total:.1} s; the eight took {:.1}× that. uv's upgrades: {:.1}× faster than pip's (all 8 serving,\n\
         the slowest upgrade of each).",
        compile.show(1, " s"),
        uv_upgrade / alone_total,
        pip_upgrade / uv_upgrade,
    );
    // How far the slowest uv upgrade is above what the servers' CPU allows on these cores.
    let bound = slowest_uv.and_then(|(total, cpu)| Some((total, cpu?)));
    match (&uncounted, bound) {
        (Some(why), _) => {
            let _ = writeln!(body, "\nThe servers' CPU was not counted: {why}.");
        }
        (None, None) => {
            let _ = writeln!(body, "\nThe servers' CPU was not counted.");
        }
        (None, Some((total, cpu))) => {
            let _ = writeln!(
                body,
                "\n*CPU of the servers*: user + system time of each server's agent and all it started (uv,\n\
                 the hooks, Apache with mod_wsgi, nginx), counted by a cgroup v2 per server from just before\n\
                 the upload and summed over the servers: *to serving* up to each server's first answer of the\n\
                 new version, *to the passes' end* up to the end of every pass, which includes the bytecode\n\
                 compiled after the switch (at the lowest CPU priority). *floor*: the CPU to serving ÷ this\n\
                 machine's {cores} cores, the shortest time that work can take here; moto, the bench's polls and\n\
                 anything else running on the machine come on top. The slowest uv upgrade: all serving in\n\
                 {total:.1} s, {:.2}× its floor ({cpu:.1} CPU-s ÷ {cores} = {:.1} s).{}",
                total / floor(cpu),
                floor(cpu),
                alone
                    .cpu_to_serving
                    .map(|one| format!(
                        " One server alone used {one:.1} CPU-s to serving;\n\
                         each of the eight {:.1} CPU-s on average, {:.2}× that.",
                        cpu / SERVERS as f64,
                        cpu / (SERVERS as f64 * one)
                    ))
                    .unwrap_or_default(),
            );
        }
    }
    let limit_text = match bound {
        Some((total, cpu)) if total <= 1.3 * floor(cpu) => format!(
            "the 8 servers' CPU on this machine's {cores} cores: {cpu:.1} CPU-s to serving ÷ {cores} = {:.1} s, and all 8 served in {total:.1} s ({:.2}× that floor)",
            floor(cpu),
            total / floor(cpu)
        ),
        Some((total, cpu)) => format!(
            "the largest phase of the 8: {limit} ({limit_secs:.1} s median), the 8 servers sharing this machine's cores (their CPU allows {:.1} s: {total:.1} s is {:.2}× that)",
            floor(cpu),
            total / floor(cpu)
        ),
        None => format!(
            "the largest phase of the 8: {limit} ({limit_secs:.1} s median), the 8 servers sharing this machine's cores"
        ),
    };
    report.target(
        "4",
        &format!(
            "uv upgrade (warm cache): all 8 serving ≤ {TARGET_SECS:.0} s after the upload returns"
        ),
        format!(
            "{} (cold cache: {cold:.1} s; one server alone: {alone_total:.1} s)",
            uv_upgrades.show(1, " s")
        ),
        uv_upgrade <= TARGET_SECS,
        &limit_text,
    );
    report.target(
        "4",
        "uv faster than pip (the baseline, this run)",
        format!(
            "{:.1}× ({uv_upgrade:.1} s vs {pip_upgrade:.1} s, slowest upgrade to all 8)",
            pip_upgrade / uv_upgrade
        ),
        pip_upgrade > uv_upgrade,
        "",
    );
    report.section("4. Time to converge (8 servers, `run --interval 2s`)", body);
    Ok(())
}
