//! Benchmark 4 — Time to converge: 8 servers in `run --interval 2s`; from `cargo milky upload` returning to
//! every server answering with the new version through its nginx, with each server's breakdown
//! from its own log lines (read as they are written) and its download file's size.

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

/// Sum of the durations in `hook `…` ran in 1.234s` lines (Debug format of a Duration).
fn hook_seconds(lines: &[(Instant, String)]) -> f64 {
    lines
        .iter()
        .filter_map(|(_, l)| l.split(" ran in ").nth(1))
        .filter_map(|rest| {
            // `1.234s app=… version=…`, the fields possibly in colour.
            let d = rest
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
        })
        .fold(0.0, |sum, s| sum + s)
}

#[derive(Default)]
struct Phases {
    detect: Samples,
    download: Samples,
    unpack: Samples,
    venv: Samples,
    hooks: Samples,
    switch: Samples,
    total: Samples,
}

pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let mut servers = Vec::new();
    let mut logs: Vec<Lines> = Vec::new();
    for n in 1..=SERVERS {
        let mut server = Server::new(bench, "fleet", &format!("f{n}"), "")?;
        logs.push(server.start_run("2s")?);
        servers.push(server);
    }
    let rounds: Vec<(&str, &str)> = if bench.quick {
        vec![("c1", "install"), ("c2", "upgrade")]
    } else {
        vec![("c1", "install"), ("c2", "upgrade"), ("c3", "upgrade")]
    };
    let mut body = String::from(
        "| round | all 8 serving | detect | download | verify + unpack | venv + pip | server hooks | once hooks + slot start + health + switch |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut upgrade_times = Samples::default();
    for (version, kind) in &rounds {
        eprintln!("bench 4: {kind} {version} on {SERVERS} servers");
        let package = bench.package(version)?;
        let size = std::fs::metadata(&package)?.len();
        let stop = Arc::new(AtomicBool::new(false));
        let watchers: Vec<_> = servers
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
        let marks: Vec<usize> = logs
            .iter()
            .map(|l| l.lock().expect("lines").len())
            .collect();
        bench.milky_ok(&[
            "upload",
            "--new-group",
            "--group",
            "fleet",
            &package.to_string_lossy(),
        ])?;
        let t0 = Instant::now();
        let mut serving: Vec<Option<Instant>> = vec![None; SERVERS];
        while serving.iter().any(Option::is_none) && t0.elapsed() < Duration::from_secs(1200) {
            for (server, seen) in servers.iter().zip(serving.iter_mut()) {
                if seen.is_none() && server.serving().as_deref() == Some(*version) {
                    *seen = Some(Instant::now());
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
                &logs[serving.iter().position(Option::is_none).unwrap_or(0)]
                    .lock()
                    .expect("lines")
            )
        );
        let mut phases = Phases::default();
        for (i, log) in logs.iter().enumerate() {
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
            put(
                &mut phases.venv,
                secs(venv, prepared).map(|s| s - if hooks_logged.is_some() { hooks } else { 0.0 }),
            );
            put(&mut phases.hooks, Some(hooks));
            // To the first answer of the new release through nginx: the agent logs the end of
            // its pass only after the old slot has drained, which can be after this round ends.
            put(&mut phases.switch, secs(prepared, serving[i]));
            put(&mut phases.total, secs(Some(t0), serving[i]));
        }
        if *kind == "upgrade" {
            upgrade_times.push(phases.total.max());
        }
        let _ = writeln!(
            body,
            "| {kind} {version} | {:.1} s | {} | {} | {} | {} | {} | {} |",
            phases.total.max(),
            phases.detect.show(2, " s"),
            phases.download.show(2, " s"),
            phases.unpack.show(2, " s"),
            phases.venv.show(1, " s"),
            phases.hooks.show(1, " s"),
            phases.switch.show(1, " s"),
        );
    }
    servers.into_iter().for_each(Server::remove);
    let _ = writeln!(
        body,
        "\nPhases: median over the 8 servers (min–max). *all 8 serving*: from `cargo milky upload` returning to\n\
         the last server answering `/` with the new `X-Milky-Version` through its nginx (polled every 100 ms).\n\
         *detect*: to the agent's `downloading` line (passes every 2 s). *download*: until its download file\n\
         has the package's size. *venv + pip*: `python -m venv` and `pip install --no-index` of the vendored\n\
         wheels. *server hooks*: `collectstatic`. The last column holds the once hook (`migrate`, run by one\n\
         server while the others wait for it), starting the new Apache slot, its health check and the nginx\n\
         switch, up to the first answer of the new release through nginx. All 8 servers share these 2 cores, so every phase that uses CPU (unpack, pip, Django start)\n\
         runs ~4× slower than on 8 real machines: the figures are an upper bound of a real fleet's."
    );
    report.target(
        "4",
        "report the time to converge with its breakdown",
        format!("upgrade: {} to all 8", upgrade_times.show(1, " s")),
        true,
        "venv + pip of the realistic requirements dominates, on 2 shared cores",
    );
    report.section("4. Time to converge (8 servers, `run --interval 2s`)", body);
    Ok(())
}
