//! Benchmark 7 — `cargo milky status` of 1,000 and 10,000 servers (synthetic reports the bench
//! writes to moto), reading 64 reports at a time against the sequential reader it replaced
//! (`--read-concurrency 1`), and a `--wait` poll in which nothing changed against the first poll
//! (which reads every report, as every poll did before).

use std::fmt::Write as _;
use std::process::Command;

use anyhow::{Context, bail};

use super::Bench;
use super::report::Report;
use super::stats::{Samples, usage};

/// Writes `count` reports of group `group` with 32 writers: all serve `serving`, every tenth lags.
const WRITER: &str = r#"
import sys, datetime, concurrent.futures, boto3
endpoint, group, count, serving = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s3 = boto3.client("s3", endpoint_url=endpoint)
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
def put(n):
    version = serving if n % 10 else "ref0"
    body = f'''host = "web-{n:05}"
group = "{group}"
agent_version = "0.1.0"
last_pass = "{now}"
result = "ok"

[apps.shop]
serving = "{version}"
wanted = "{version}"
healthy = true
env_generation = 0

[signatures]
check = "not-verifying"
note = "no trusted keys configured"
'''
    s3.put_object(Bucket="bench", Key=f"fleet/groups/{group}/hosts/web-{n:05}.toml", Body=body.encode())
with concurrent.futures.ThreadPoolExecutor(32) as pool:
    list(pool.map(put, range(count)))
"#;

/// The medians of benchmark 7 that benchmark 6 prices.
#[derive(Debug, Clone, Copy)]
pub struct FleetFigures {
    /// Requests of a `--wait` poll where nothing changed, at 10,000 servers.
    pub unchanged_poll_requests: f64,
}

pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<FleetFigures> {
    let scratch = bench.work.join("fleet");
    std::fs::create_dir_all(&scratch)?;
    let mut env = bench.aws_env();
    env.push(("MILKY_STORE", bench.store.clone()));
    let status = |group: &str, concurrency: usize| -> anyhow::Result<super::stats::Usage> {
        let concurrency = concurrency.to_string();
        usage(
            &bench.milky_bin,
            &["milky", "status", group, "--read-concurrency", &concurrency],
            &env,
            &scratch,
        )
    };
    let mut body = String::from(
        "| servers | reader | wall | CPU | peak RSS | vs sequential |\n|---|---|---|---|---|---|\n",
    );
    let mut at_10k = (f64::NAN, f64::NAN);
    let mut poll = None;
    for servers in [1_000usize, 10_000] {
        let group = format!("fleet{servers}");
        eprintln!("bench 7: writing {servers} synthetic reports to moto");
        bench.milky_ok(&["version", "--new-group", &group, "shop", "ref1"])?;
        write_reports(bench, &group, servers)?;
        let runs = if bench.quick || servers > 1_000 { 3 } else { 5 };
        let sequential_runs = if servers > 1_000 { 1 } else { runs };
        let (mut wall, mut cpu, mut rss) = <(Samples, Samples, Samples)>::default();
        let (mut seq_wall, mut seq_cpu, mut seq_rss) = <(Samples, Samples, Samples)>::default();
        eprintln!("bench 7: status of {servers} servers, {runs} runs");
        for run in 0..runs {
            let used = status(&group, 64)?;
            wall.push(used.wall);
            cpu.push(used.cpu);
            rss.push(used.max_rss_mb);
            if run < sequential_runs {
                let used = status(&group, 1)?;
                seq_wall.push(used.wall);
                seq_cpu.push(used.cpu);
                seq_rss.push(used.max_rss_mb);
            }
        }
        let ratio = seq_wall.median() / wall.median();
        let _ = writeln!(
            body,
            "| {servers} | 64 at a time | {} | {} | {} | {ratio:.1}× |",
            wall.show(2, " s"),
            cpu.show(2, " s"),
            rss.show(1, " MB")
        );
        let _ = writeln!(
            body,
            "| {servers} | one after another (before) | {} | {} | {} | 1.0× |",
            seq_wall.show(2, " s"),
            seq_cpu.show(2, " s"),
            seq_rss.show(1, " MB")
        );
        if servers == 10_000 {
            at_10k = (wall.median(), rss.max());
            poll = Some(wait_polls(bench, &group, &env)?);
        }
    }
    let (first, unchanged, requests) = poll.context("the 10,000-server group was polled")?;
    let _ = writeln!(
        body,
        "\nReports are written by the bench (boto3, 32 writers): every tenth server lags. `status` runs\n\
         {} against moto on loopback, a Python server on the same 2 cores, so a GET\n\
         costs more here than against S3 in-region; the sequential reader is the same binary with\n\
         `--read-concurrency 1` (how `status` read before), run once at 10,000 servers.\n\n\
         `--wait` at 10,000 servers (`cargo milky version fleet10000 shop ref1 --wait`, never\n\
         converging): the first poll reads every report, {}; each later poll in which nothing\n\
         changed lists the group and re-reads nothing, {} ({requests:.0} requests: the index and\n\
         one listing page per 1,000 reports). Before, every poll cost what the first one does.",
        build_name(bench),
        first.show(2, " s"),
        unchanged.show(2, " s"),
    );
    report.target(
        "7",
        "`status` of 10,000 servers ≤ 3 s",
        format!("{:.2} s", at_10k.0),
        at_10k.0 <= 3.0,
        if at_10k.0 <= 3.0 {
            ""
        } else {
            "moto answers each GET in Python on the 2 cores the bench shares with it; the client's own CPU is in the table"
        },
    );
    report.target(
        "7",
        "`status` of 10,000 servers: peak RSS ≤ 100 MB",
        format!("{:.1} MB", at_10k.1),
        at_10k.1 <= 100.0,
        "",
    );
    report.target(
        "7",
        "a `--wait` poll where nothing changed reads no report",
        format!(
            "{} vs {} for a full read",
            unchanged.show(2, " s"),
            first.show(2, " s")
        ),
        unchanged.median() < first.median(),
        "",
    );
    report.section("7. Status of a large fleet", body);
    Ok(FleetFigures {
        unchanged_poll_requests: requests,
    })
}

/// Which binaries were measured.
pub fn build_name(bench: &Bench) -> &'static str {
    if bench.debug_build {
        "the debug build (`--debug-build`: the machine was too busy for the fat-LTO release build)"
    } else {
        "the release build"
    }
}

fn write_reports(bench: &Bench, group: &str, count: usize) -> anyhow::Result<()> {
    let out = Command::new(bench.tools_python())
        .args(["-c", WRITER, &bench.moto.endpoint, group])
        .arg(count.to_string())
        .arg("ref1")
        .envs(bench.aws_env())
        .output()?;
    if !out.status.success() {
        bail!("writing reports: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Runs a `--wait` that never converges (every tenth report lags) for a few polls; returns the
/// time of the first poll, of the polls after it, and the requests of one later poll.
fn wait_polls(
    bench: &Bench,
    group: &str,
    env: &[(&str, String)],
) -> anyhow::Result<(Samples, Samples, f64)> {
    eprintln!("bench 7: --wait polls of {group}");
    let mark = bench.moto.mark();
    let out = Command::new(&bench.milky_bin)
        .args([
            "milky",
            "version",
            group,
            "shop",
            "ref1",
            "--wait",
            "--timeout",
            "15s",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "cargo_milky=debug")
        .current_dir(&bench.work)
        .output()?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    let requests = bench.moto.since(mark);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let polls: Vec<(u64, f64)> = stderr
        .lines()
        .filter(|l| l.contains("read the reports"))
        .filter_map(|line| {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name)?.parse::<f64>().ok())
            };
            Some((field("fetched=")? as u64, field("took_ms=")? / 1000.0))
        })
        .collect();
    let [(fetched_first, first), rest @ ..] = polls.as_slice() else {
        bail!("no polls logged; stderr: {stderr}");
    };
    if *fetched_first != 10_000 || rest.is_empty() || rest.iter().any(|(f, _)| *f != 0) {
        bail!("unexpected polls {polls:?}; stderr: {stderr}");
    }
    // Each poll GETs the index and lists the group (one page per 1,000 reports); the first also
    // GETs every report.
    let lists = requests
        .iter()
        .filter(|r| r.path.contains("list-type"))
        .count() as f64;
    let later = lists / polls.len() as f64 + 1.0;
    Ok((
        Samples(vec![*first]),
        Samples(rest.iter().map(|(_, t)| *t).collect()),
        later,
    ))
}
