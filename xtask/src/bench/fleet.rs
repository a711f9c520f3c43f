//! Benchmark 7 — `cargo milky status` of 1,000 and 10,000 servers (synthetic reports the bench
//! writes), reading 64 reports at a time against the sequential reader it replaced
//! (`--read-concurrency 1`), from two S3-compatible servers: moto, the bench's store, a Python
//! server that answers a bounded number of GETs a second whatever the client does, and s3s-fs, a
//! multi-threaded Rust server, where the client's own speed shows. Then a `--wait` poll in which
//! nothing changed against the first poll (which reads every report, as every poll did before),
//! and what one server downloads in a pass after the index changed, against its idle pass,
//! counted at a forwarder in front of moto.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail, ensure};

use super::Bench;
use super::download::{Download, agent_download, object};
use super::meter::Meter;
use super::report::Report;
use super::stats::{Samples, usage};
use milky_dev_support::S3sFs;

/// PUTs the reports the bench wrote as files under `bucket_dir/prefix` (one level) to the bench
/// bucket with 32 writers.
const UPLOADER: &str = r#"
import sys, os, concurrent.futures, boto3
endpoint, bucket_dir, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client("s3", endpoint_url=endpoint)
def put(name):
    key = f"{prefix}/{name}"
    with open(os.path.join(bucket_dir, key), "rb") as f:
        s3.put_object(Bucket="bench", Key=key, Body=f.read())
with concurrent.futures.ThreadPoolExecutor(32) as pool:
    list(pool.map(put, sorted(os.listdir(os.path.join(bucket_dir, prefix)))))
"#;

/// The medians of benchmark 7 that benchmark 6 prices.
#[derive(Debug, Clone, Copy)]
pub struct FleetFigures {
    /// `status` of 10,000 servers, 64 reports at a time, from [`FleetFigures::status_store`]:
    /// wall (s) and peak RSS (MB, max of runs).
    pub status_wall: f64,
    pub status_rss: f64,
    /// s3s-fs: the client's own speed, which moto's GET rate hides.
    pub status_store: &'static str,
    /// Requests of a `--wait` poll where nothing changed, at 10,000 servers.
    pub unchanged_poll_requests: f64,
    /// What one server downloads in the pass after the index changed, and in an idle pass.
    pub download: Download,
}

pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<FleetFigures> {
    let scratch = bench.work.join("fleet");
    std::fs::create_dir_all(&scratch)?;
    let aws = bench.aws_env();
    let credential = |name: &str| {
        aws.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
            .with_context(|| format!("the bench's {name}"))
    };
    let s3s_fs = S3sFs::start(
        &crate::tools::ensure_s3s_fs()?,
        &bench.work.join("s3s-fs"),
        "bench",
        (
            &credential("AWS_ACCESS_KEY_ID")?,
            &credential("AWS_SECRET_ACCESS_KEY")?,
        ),
    )?;
    let prefix = bench
        .store
        .strip_prefix("s3://bench/")
        .with_context(|| format!("the bench's store {} is not in bucket bench", bench.store))?;
    // moto straight, not through the forwarder that passes the writing benchmarks' requests one
    // at a time (for atomic conditional writes): reads need none, and it answers concurrent ones.
    let moto_store = Store::new(
        bench,
        "moto",
        &bench.moto.direct_endpoint(),
        bench.moto.pid(),
    );
    // s3s-fs writes an answer's headers and body apart without TCP_NODELAY: the body waits for
    // the client's delayed ACK of the headers (~40 ms a GET). The forwarder acknowledges at once.
    let quick_ack = Meter::start(&s3s_fs.endpoint)?;
    let stores = [
        Store::new(bench, "s3s-fs", &quick_ack.endpoint, s3s_fs.pid()),
        moto_store,
    ];
    let mut body = String::from(
        "| servers | store | reader | wall | CPU | the store's CPU | peak RSS | vs sequential |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut at_10k: Vec<(&str, Measured)> = Vec::new();
    for servers in [1_000usize, 10_000] {
        let group = format!("fleet{servers}");
        eprintln!("bench 7: writing {servers} synthetic reports to s3s-fs and moto");
        bench.milky_ok(&["version", "--new-group", &group, "shop", "ref1"])?;
        write_reports(bench, &s3s_fs, prefix, &group, servers)?;
        // The index, which now names the group, as moto holds it.
        let index = format!("{prefix}/version.info");
        std::fs::write(
            s3s_fs.object_path("bench", &index),
            object(bench, &index, None)?,
        )?;
        let runs = if bench.quick || servers > 1_000 { 3 } else { 5 };
        let sequential_runs = if servers > 1_000 { 1 } else { runs };
        for store in &stores {
            check_status(bench, store, &group, servers)?;
            eprintln!(
                "bench 7: status of {servers} servers from {}, {runs} runs",
                store.name
            );
            let measured = measure(bench, &scratch, store, &group, runs, sequential_runs)?;
            let ratio = measured.sequential.wall.median() / measured.concurrent.wall.median();
            for (reader, reads, ratio) in [
                ("64 at a time", &measured.concurrent, format!("{ratio:.1}×")),
                (
                    "one after another (before)",
                    &measured.sequential,
                    "1.0×".into(),
                ),
                ("its listing alone", &measured.listing, "".into()),
            ] {
                let _ = writeln!(
                    body,
                    "| {servers} | {} | {reader} | {} | {} | {} | {} | {ratio} |",
                    store.name,
                    reads.wall.show(2, " s"),
                    reads.cpu.show(2, " s"),
                    reads.store_cpu.show(2, " s"),
                    reads.rss.show(1, " MB")
                );
            }
            if servers == 10_000 {
                at_10k.push((store.name, measured));
            }
        }
    }
    let at = |name: &str| {
        at_10k
            .iter()
            .find(|(store, _)| *store == name)
            .map(|(_, measured)| measured)
            .with_context(|| format!("{name} was read at 10,000 servers"))
    };
    let (s3s, moto) = (at("s3s-fs")?, at("moto")?);
    // Every request of moto's sequential reader waits for the one before: its rate is moto's.
    let moto_rate = moto.sequential_requests as f64 / moto.sequential.wall.0.iter().sum::<f64>();
    drop(s3s_fs);
    // Long enough for the first poll (a full read, as slow as the slowest `status` from moto)
    // and several after it, on a machine that may be busier than during the reads above.
    let timeout = Duration::from_secs_f64(1.5 * moto.concurrent.wall.max() + 30.0);
    let [_, moto_store] = &stores;
    let (first, unchanged, requests) = wait_polls(bench, "fleet10000", &moto_store.env, timeout)?;
    eprintln!("bench 7: what a server downloads when the index changes");
    let download = agent_download(bench, "fleet", None)?;
    let _ = writeln!(
        body,
        "\nReports are written by the bench, the same TOML for every server, every tenth lagging: as\n\
         files into the directory s3s-fs serves (it serves each file as an object) and PUT to moto with\n\
         boto3 (32 writers). `status` runs {} on loopback against both, on the same\n\
         2 cores: moto straight (not through the forwarder that passes the writing benchmarks' requests\n\
         to it one at a time), s3s-fs through a forwarder that acknowledges its answers at once (s3s-fs\n\
         writes an answer's headers and body apart without TCP_NODELAY, so each body would wait for the\n\
         client's delayed ACK of the headers). moto is a Python server: its sequential reader made {} requests\n\
         in {:.1} s at 10,000 servers, {moto_rate:.0} GETs/s, so 10,000 reports take {:.0} s at its\n\
         rate, against {:.1} s 64 at a time. s3s-fs is a multi-threaded Rust server: it answers reads\n\
         fast, and walks every file of the bucket for each listing page. The sequential reader is the same binary with `--read-concurrency 1`\n\
         (how `status` read before), run once at 10,000 servers. \"Its listing alone\" is\n\
         `cargo milky hosts forget GROUP --older-than 3650d --dry-run`: the same listing of the group's\n\
         reports (one request per 1,000) and no report read; `status` reads each page's reports while\n\
         the next page is listed. \"The store's CPU\" is what the server's process (and, for s3s-fs,\n\
         the bench's forwarder) spent while each ran: the store shares the cores with `status`.\n\n\
         `--wait` at 10,000 servers against moto (`cargo milky version fleet10000 shop ref1 --wait`,\n\
         never converging): the first poll reads every report, {}; each later poll in which nothing\n\
         changed lists the group and re-reads nothing, {} ({requests:.0} requests: the index and\n\
         one listing page per 1,000 reports). Before, every poll cost what the first one does.",
        build_name(bench),
        moto.sequential_requests,
        moto.sequential.wall.0.iter().sum::<f64>(),
        10_000.0 / moto_rate,
        moto.concurrent.wall.median(),
        first.show(2, " s"),
        unchanged.show(2, " s"),
    );
    let _ = writeln!(
        body,
        "\n| one server's pass | received from the store | 10,000 servers |\n|---|---|---|\n\
         | after the index changed ({} index) | {} | {:.1} MB |\n\
         | idle (index unchanged: 304) | {} | {:.1} MB |\n\
         | ratio | {:.1}× | |\n\n\
         Counted at a byte-counting forwarder between `milky-agent sync` (a server of a group with no\n\
         apps, so the pass installs nothing) and moto: every byte the pass received, headers included\n\
         (the index, the answers to its status report's PUT and its other requests). The index here is\n\
         this run's store: a few groups and one version; benchmark 8 measures it after 5,000 uploads.",
        super::index_growth::bytes(download.index),
        super::index_growth::bytes(download.changed),
        download.changed as f64 * 10_000.0 / 1e6,
        super::index_growth::bytes(download.idle),
        download.idle as f64 * 10_000.0 / 1e6,
        download.changed as f64 / download.idle as f64,
    );
    let (wall, rss) = (s3s.concurrent.wall.median(), s3s.concurrent.rss.max());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let moto_bound = format!(
        "from moto, a Python server: {moto_rate:.0} GETs/s measured (its sequential reader's requests ÷ wall), {:.0} s for 10,000 reports at that rate",
        10_000.0 / moto_rate
    );
    report.target(
        "7",
        "`status` of 10,000 servers ≤ 3 s",
        format!(
            "{wall:.2} s from s3s-fs; {:.2} s from moto",
            moto.concurrent.wall.median()
        ),
        wall <= 3.0,
        &if wall <= 3.0 {
            moto_bound
        } else {
            format!(
                "{moto_bound}; from s3s-fs, `status` and the store used {:.2} + {:.2} CPU-s, so on this machine's {cores} cores it cannot take less than {:.2} s, and the listing alone takes {:.2} s (one request per 1,000 reports; s3s-fs walks every file of the bucket for each)",
                s3s.concurrent.cpu.median(),
                s3s.concurrent.store_cpu.median(),
                (s3s.concurrent.cpu.median() + s3s.concurrent.store_cpu.median()) / cores as f64,
                s3s.listing.wall.median()
            )
        },
    );
    let moto_rss = moto.concurrent.rss.max();
    report.target(
        "7",
        "`status` of 10,000 servers: peak RSS ≤ 100 MB",
        format!("{rss:.1} MB from s3s-fs; {moto_rss:.1} MB from moto"),
        rss <= 100.0 && moto_rss <= 100.0,
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
        status_wall: wall,
        status_rss: rss,
        status_store: "s3s-fs",
        unchanged_poll_requests: requests,
        download,
    })
}

/// An S3-compatible server `status` reads from: its name in the report and the environment that
/// points `cargo milky` at it (the bench's store and credentials).
struct Store {
    name: &'static str,
    env: Vec<(&'static str, String)>,
    /// The server's process, whose CPU is counted.
    pid: u32,
}

impl Store {
    fn new(bench: &Bench, name: &'static str, endpoint: &str, pid: u32) -> Self {
        let mut env: Vec<(&str, String)> = bench
            .aws_env()
            .into_iter()
            .filter(|(key, _)| *key != "AWS_ENDPOINT_URL")
            .collect();
        env.push(("AWS_ENDPOINT_URL", endpoint.to_owned()));
        env.push(("MILKY_STORE", bench.store.clone()));
        Self { name, env, pid }
    }

    /// The CPU the store has used so far: the server's process and the bench's own, whose
    /// forwarder threads pass s3s-fs's answers on (the bench does nothing else while `status`
    /// runs).
    fn cpu(&self) -> anyhow::Result<Duration> {
        let usage = |pid| {
            super::cpu::process_usage(pid).with_context(|| format!("the CPU time of pid {pid}"))
        };
        Ok(usage(self.pid)? + usage(std::process::id())?)
    }

    fn is_moto(&self) -> bool {
        self.name == "moto"
    }
}

/// Wall, CPU and peak RSS of `status` runs, and the CPU the store spent answering them.
#[derive(Default)]
struct Reads {
    wall: Samples,
    cpu: Samples,
    store_cpu: Samples,
    rss: Samples,
}

impl Reads {
    /// Runs `read` and records what it and the store used.
    fn push(
        &mut self,
        store: &Store,
        read: impl FnOnce() -> anyhow::Result<super::stats::Usage>,
    ) -> anyhow::Result<()> {
        let before = store.cpu()?;
        let used = read()?;
        self.store_cpu.push((store.cpu()? - before).as_secs_f64());
        self.wall.push(used.wall);
        self.cpu.push(used.cpu);
        self.rss.push(used.max_rss_mb);
        Ok(())
    }
}

/// One store's `status` runs of one group.
struct Measured {
    concurrent: Reads,
    sequential: Reads,
    /// The listing `status` makes, without reading a report.
    listing: Reads,
    /// Requests moto logged during the sequential runs (0 for another store).
    sequential_requests: usize,
}

/// `runs` of `status` 64 reports at a time, the first `sequential_runs` of them each followed by
/// one of the sequential reader, and `runs` of the group's listing alone.
fn measure(
    bench: &Bench,
    scratch: &std::path::Path,
    store: &Store,
    group: &str,
    runs: usize,
    sequential_runs: usize,
) -> anyhow::Result<Measured> {
    let status = |concurrency: usize| {
        let concurrency = concurrency.to_string();
        usage(
            &bench.milky_bin,
            &["milky", "status", group, "--read-concurrency", &concurrency],
            &store.env,
            scratch,
        )
    };
    let listing = || {
        let forget = [
            "milky",
            "hosts",
            "forget",
            group,
            "--older-than",
            "3650d",
            "--dry-run",
        ];
        usage(&bench.milky_bin, &forget, &store.env, scratch)
    };
    let mut measured = Measured {
        concurrent: Reads::default(),
        sequential: Reads::default(),
        listing: Reads::default(),
        sequential_requests: 0,
    };
    for run in 0..runs {
        measured.concurrent.push(store, || status(64))?;
        if run < sequential_runs {
            let mark = store.is_moto().then(|| bench.moto.mark());
            measured.sequential.push(store, || status(1))?;
            if let Some(mark) = mark {
                measured.sequential_requests += bench.moto.since(mark).len();
            }
        }
        measured.listing.push(store, listing)?;
    }
    Ok(measured)
}

/// Fails unless `status` of `group` from `store` counts every report the bench wrote: all live,
/// every tenth lagging.
fn check_status(bench: &Bench, store: &Store, group: &str, servers: usize) -> anyhow::Result<()> {
    let out = Command::new(&bench.milky_bin)
        .args(["milky", "status", group])
        .envs(store.env.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("RUST_LOG")
        .current_dir(&bench.work)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lagging = servers / 10;
    let wanted = [
        format!("group {group}: {servers} live server(s)\n"),
        format!(
            "{}/{servers} serving; {lagging} lagging\n",
            servers - lagging
        ),
    ];
    ensure!(
        out.status.success() && wanted.iter().all(|w| stdout.contains(w.as_str())),
        "status of {group} from {}: wanted {wanted:?}, got:\n{stdout}{}",
        store.name,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Which binaries were measured.
pub fn build_name(bench: &Bench) -> &'static str {
    if bench.debug_build {
        "the debug build (`--debug-build`: the machine was too busy for the fat-LTO release build)"
    } else {
        "the release build"
    }
}

/// Writes `count` reports of `group`, all serving ref1 but every tenth lagging: as files where
/// s3s-fs keeps them, then PUT to moto from those files.
fn write_reports(
    bench: &Bench,
    s3s_fs: &S3sFs,
    prefix: &str,
    group: &str,
    count: usize,
) -> anyhow::Result<()> {
    let hosts = format!("{prefix}/groups/{group}/hosts");
    let dir = s3s_fs.object_path("bench", &hosts);
    std::fs::create_dir_all(&dir)?;
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    for n in 0..count {
        std::fs::write(
            dir.join(format!("web-{n:05}.toml")),
            report_toml(group, n, &now),
        )?;
    }
    let out = Command::new(bench.tools_python())
        // Plain writes, no conditions: straight to moto.
        .args(["-c", UPLOADER, &bench.moto.direct_endpoint()])
        .arg(s3s_fs.root.join("bench"))
        .arg(&hosts)
        .envs(bench.aws_env())
        .output()?;
    if !out.status.success() {
        bail!("writing reports: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Server `n`'s status report, as an agent writes it after a pass at `now`; every tenth still
/// serves ref0.
fn report_toml(group: &str, n: usize, now: &str) -> String {
    let version = if n.is_multiple_of(10) { "ref0" } else { "ref1" };
    format!(
        r#"host = "web-{n:05}"
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
"#
    )
}

/// Runs a `--wait` that never converges (every tenth report lags) for a few polls; returns the
/// time of the first poll, of the polls after it, and the requests of one later poll.
fn wait_polls(
    bench: &Bench,
    group: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> anyhow::Result<(Samples, Samples, f64)> {
    let timeout = format!("{}s", timeout.as_secs().max(30));
    eprintln!("bench 7: --wait polls of {group} for {timeout}");
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
            &timeout,
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        // Straight to moto, whose conditional writes are not atomic: the one edit (the group
        // already runs ref1) has no other writer.
        .env("MILKY_ALLOW_UNSAFE_STORE", "1")
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
