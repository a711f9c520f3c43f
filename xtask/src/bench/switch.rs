//! Benchmark 5 — Switching under load: wrk through nginx while 10 blue/green switches happen, against the
//! same load at steady state and during 10 `apache2 -k graceful` of a single Apache instance
//! (the live slot's own, behind the same nginx) — the original design's way to load new code.

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Bench;
use super::report::Report;
use super::servers::Server;

/// What wrk said.
#[derive(Debug, Default, Clone)]
struct Wrk {
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
    p50: String,
    p99: String,
    rate: String,
}

fn parse_wrk(text: &str) -> Wrk {
    let mut wrk = Wrk::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => wrk.p50 = (*v).to_owned(),
            ["99%", v] => wrk.p99 = (*v).to_owned(),
            ["Requests/sec:", v] => wrk.rate = (*v).to_owned(),
            [n, "requests", "in", ..] => wrk.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => wrk.non_2xx = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                wrk.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    wrk
}

/// wrk on the server's front; with `close`, a new connection per request.
fn start_wrk(front: u16, seconds: u64, close: bool) -> anyhow::Result<Child> {
    let mut command = Command::new("wrk");
    if close {
        command.args(["-H", "Connection: close"]);
    }
    Ok(command
        .args([
            "-t2",
            "-c32",
            &format!("-d{seconds}s"),
            "--latency",
            "-H",
            "Host: shop",
        ])
        .arg(format!("http://127.0.0.1:{front}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?)
}

fn finish_wrk(child: Child) -> anyhow::Result<Wrk> {
    let out = child.wait_with_output()?;
    Ok(parse_wrk(&String::from_utf8_lossy(&out.stdout)))
}

/// Runs `event` 10 times, one every `period`, while wrk loads the server for `10 × period`.
fn under_load(
    front: u16,
    close: bool,
    period: Duration,
    mut event: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<(Wrk, Samples)> {
    let seconds = period.as_secs() * 10;
    let wrk = start_wrk(front, seconds, close)?;
    let start = Instant::now();
    let mut took = Samples::default();
    for n in 0..10 {
        let at = period.mul_f64(n as f64) + Duration::from_millis(500);
        if let Some(wait) = at.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let began = Instant::now();
        event(n)?;
        took.push(began.elapsed().as_secs_f64());
    }
    let within = start.elapsed().as_secs() <= seconds;
    let result = finish_wrk(wrk)?;
    anyhow::ensure!(
        within,
        "the 10 events took longer than the {seconds} s load run"
    );
    Ok((result, took))
}

use super::stats::Samples;

pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("bench 5: preparing two releases on one server");
    let server = Server::new(bench, "load", "busy", "")?;
    for version in ["w1", "w2"] {
        let package = bench.package(version)?;
        bench.milky_ok(&[
            "upload",
            "--new-group",
            "--group",
            "load",
            &package.to_string_lossy(),
        ])?;
        server.sync_ok()?;
    }
    let period = Duration::from_secs(if bench.quick { 5 } else { 6 });
    let seconds = period.as_secs() * 10;

    let conf = server.live_httpd_conf()?;
    let mut rows = Vec::new();
    let (mut switch_took, mut graceful_took) = (Samples::default(), Samples::default());
    for close in [false, true] {
        let how = if close {
            "`Connection: close`"
        } else {
            "keep-alive"
        };
        eprintln!("bench 5 ({how}): steady state, {seconds} s");
        let steady = finish_wrk(start_wrk(server.front, seconds, close)?)?;
        eprintln!("bench 5 ({how}): 10 blue/green switches under load");
        let (switching, took) = under_load(server.front, close, period, |n| {
            let version = if n % 2 == 0 { "w1" } else { "w2" };
            bench.milky_ok(&["version", "--new-group", "load", "shop", version])?;
            server.sync_ok()?;
            anyhow::ensure!(
                server.serving().as_deref() == Some(version),
                "switch {n} to {version} did not take"
            );
            Ok(())
        })?;
        switch_took.0.extend(took.0);
        eprintln!("bench 5 ({how}): 10 Apache graceful restarts under load");
        // The live slot after an even number of switches is the one it started on.
        let (graceful, took) = under_load(server.front, close, period, |_| {
            super::stats::timed(
                Command::new("apache2")
                    .arg("-f")
                    .arg(&conf)
                    .args(["-k", "graceful"]),
            )
            .map(|_| ())
        })?;
        graceful_took.0.extend(took.0);
        rows.push((how, steady, switching, graceful));
    }
    server.remove();

    let mut body = format!(
        "`wrk -t2 -c32 -d{seconds}s --latency` on `/` (Django through nginx → Apache mod_wsgi), 10 events one every\n\
         {} s.\n\n| connections | during | requests | req/s | failed (non-2xx + socket errors) | p50 | p99 |\n|---|---|---|---|---|---|---|\n",
        period.as_secs()
    );
    for (how, steady, switching, graceful) in &rows {
        for (name, wrk) in [
            ("steady state", steady),
            (
                "10 blue/green switches (`cargo milky version` + `milky-agent sync`)",
                switching,
            ),
            (
                "baseline: 10 `apache2 -k graceful` of a single instance",
                graceful,
            ),
        ] {
            let _ = writeln!(
                body,
                "| {how} | {name} | {} | {} | {} ({} + {}) | {} | {} |",
                wrk.requests,
                wrk.rate,
                wrk.non_2xx + wrk.socket_errors,
                wrk.non_2xx,
                wrk.socket_errors,
                wrk.p50,
                wrk.p99
            );
        }
    }
    let _ = writeln!(
        body,
        "\nA switch (version edit + agent pass: start the idle slot on the prepared release, health check,\n\
         replace the app's live link, which nginx follows per request, with no reload; stop the old slot\n\
         once no connection to it is open) took {}; a graceful restart {}. wrk keeps connections alive,\n\
         so a socket error is a keep-alive connection closed under it, as an nginx reload or an Apache\n\
         restart does (with `Connection: close` there are none).",
        switch_took.show(2, " s"),
        graceful_took.show(2, " s")
    );
    let (_, _, keep_alive, keep_alive_graceful) = &rows[0];
    let (_, _, closing, closing_graceful) = &rows[1];
    let failed =
        keep_alive.non_2xx + closing.non_2xx + keep_alive.socket_errors + closing.socket_errors;
    report.target(
        "5",
        "0 failed requests during 10 switches",
        format!(
            "non-2xx: {} (baseline {}); socket errors: {} keep-alive, {} with `Connection: close` (baseline {} / {})",
            keep_alive.non_2xx + closing.non_2xx,
            keep_alive_graceful.non_2xx + closing_graceful.non_2xx,
            keep_alive.socket_errors,
            closing.socket_errors,
            keep_alive_graceful.socket_errors,
            closing_graceful.socket_errors,
        ),
        failed == 0,
        if failed == 0 {
            ""
        } else {
            "requests failed during switches: see the agent's log of those passes (the two releases have the same nginx file, so no switch should reload nginx)"
        },
    );
    report.section("5. Switch under load", body);
    Ok(())
}
