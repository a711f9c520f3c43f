//! Benchmark 7 — `cargo milky status` of 1,000 and 10,000 servers (synthetic reports the bench
//! writes to moto), reading 64 reports at a time against the sequential reader it replaced
//! (`--read-concurrency 1`), and a `--wait` poll in which nothing changed against the first poll
//! (which reads every report, as every poll did before). Then what one server downloads in a pass
//! after the index changed, against its idle pass, counted at a forwarder in front of moto.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// `status` of 10,000 servers: wall (s) and peak RSS (MB, max of runs).
    pub status_wall: f64,
    pub status_rss: f64,
    /// Requests of a `--wait` poll where nothing changed, at 10,000 servers.
    pub unchanged_poll_requests: f64,
    /// What one server downloads in the pass after the index changed, and in an idle pass.
    pub download: Download,
}

/// Bytes one `milky-agent sync` received from the store.
#[derive(Debug, Clone, Copy)]
pub struct Download {
    /// The pass after the index changed.
    pub changed: u64,
    /// The next pass, nothing changed.
    pub idle: u64,
    /// The index's own size when it changed.
    pub index: u64,
}

pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<FleetFigures> {
    let scratch = bench.work.join("fleet");
    std::fs::create_dir_all(&scratch)?;
    // Straight to moto, which answers concurrent reads, not through the one-at-a-time forwarder
    // the writing benchmarks go through.
    let mut env: Vec<(&str, String)> = bench
        .aws_env()
        .into_iter()
        .filter(|(key, _)| *key != "AWS_ENDPOINT_URL")
        .collect();
    env.push(("AWS_ENDPOINT_URL", bench.moto.direct_endpoint()));
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
            // Long enough for the first poll (a full read, as slow as the slowest `status`) and
            // several after it, on a machine that may be busier than during the reads above.
            let timeout = Duration::from_secs_f64(1.5 * wall.max() + 30.0);
            poll = Some(wait_polls(bench, &group, &env, timeout)?);
        }
    }
    let (first, unchanged, requests) = poll.context("the 10,000-server group was polled")?;
    eprintln!("bench 7: what a server downloads when the index changes");
    let download = agent_download(bench, "fleet", None)?;
    let _ = writeln!(
        body,
        "\nReports are written by the bench (boto3, 32 writers): every tenth server lags. `status` runs\n\
         {} against moto on loopback (straight to it, not through the forwarder that\n\
         passes the writing benchmarks' requests one at a time), a Python server on the same 2 cores,\n\
         so a GET costs more here than against S3 in-region; the sequential reader is the same binary with\n\
         `--read-concurrency 1` (how `status` read before), run once at 10,000 servers.\n\n\
         `--wait` at 10,000 servers (`cargo milky version fleet10000 shop ref1 --wait`, never\n\
         converging): the first poll reads every report, {}; each later poll in which nothing\n\
         changed lists the group and re-reads nothing, {} ({requests:.0} requests: the index and\n\
         one listing page per 1,000 reports). Before, every poll cost what the first one does.",
        build_name(bench),
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
        status_wall: at_10k.0,
        status_rss: at_10k.1,
        unchanged_poll_requests: requests,
        download,
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
        // Plain writes, no conditions: straight to moto.
        .args(["-c", WRITER, &bench.moto.direct_endpoint(), group])
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

/// What one server receives from the store in the pass after the index changed and in the idle
/// pass after it. The server belongs to a group the index does not name (it installs nothing) and
/// reads `s3://bench/<prefix>` through a byte-counting forwarder. With `index`, the bench writes
/// it there first; the change is the index with a comment line added.
pub fn agent_download(
    bench: &Bench,
    prefix: &str,
    index: Option<&str>,
) -> anyhow::Result<Download> {
    let key = format!("{prefix}/version.info");
    if let Some(text) = index {
        object(bench, &key, Some(text.as_bytes()))?;
    }
    let meter = Meter::start(&bench.moto.endpoint)?;
    let server = super::servers::Server::new(bench, "no-apps", &format!("meter-{prefix}"), "")?;
    let config = std::fs::read_to_string(server.config())?;
    let config = config
        .replace(
            &format!("store = \"{}\"", bench.store),
            &format!("store = \"s3://bench/{prefix}\""),
        )
        .replace(
            &format!("endpoint_url = \"{}\"", bench.moto.endpoint),
            &format!("endpoint_url = \"{}\"", meter.endpoint),
        );
    anyhow::ensure!(
        config.contains(&meter.endpoint) && config.contains(&format!("s3://bench/{prefix}\"")),
        "the agent's config names no store and endpoint to replace: {config}"
    );
    std::fs::write(server.config(), config)?;
    let sync = || -> anyhow::Result<u64> {
        let before = meter.received();
        let out = Command::new(&bench.agent)
            .arg("--config")
            .arg(server.config())
            .arg("sync")
            .envs(bench.aws_env())
            .env("AWS_ENDPOINT_URL", &meter.endpoint)
            .env_remove("RUST_LOG")
            .output()?;
        if !out.status.success() {
            bail!(
                "milky-agent sync of {prefix}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The forwarder's threads finish copying after the agent hung up.
        std::thread::sleep(Duration::from_millis(200));
        Ok(meter.received() - before)
    };
    // The first pass reads the index and starts nginx; the second has nothing new.
    sync()?;
    sync()?;
    let mut text = object(bench, &key, None)?;
    text.extend_from_slice(b"# changed by the bench\n");
    object(bench, &key, Some(&text))?;
    let changed = sync()?;
    let idle = sync()?;
    server.remove();
    Ok(Download {
        changed,
        idle,
        index: text.len() as u64,
    })
}

/// GETs (`body` None: returns the object) or PUTs an object of the bench bucket, signed, with
/// boto3 (moto refuses anonymous requests for objects).
fn object(bench: &Bench, key: &str, body: Option<&[u8]>) -> anyhow::Result<Vec<u8>> {
    const SCRIPT: &str = r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
if sys.argv[2] == "put":
    s3.put_object(Bucket="bench", Key=sys.argv[3], Body=open(sys.argv[4], "rb").read())
else:
    open(sys.argv[4], "wb").write(s3.get_object(Bucket="bench", Key=sys.argv[3])["Body"].read())
"#;
    let file = bench.work.join("object.tmp");
    if let Some(body) = body {
        std::fs::write(&file, body)?;
    }
    let out = Command::new(bench.tools_python())
        .args(["-c", SCRIPT, &bench.moto.endpoint])
        .arg(if body.is_some() { "put" } else { "get" })
        .arg(key)
        .arg(&file)
        .envs(bench.aws_env())
        .output()?;
    if !out.status.success() {
        bail!("{key}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(std::fs::read(&file)?)
}

/// A TCP forwarder on loopback that counts the bytes going back to the client.
struct Meter {
    endpoint: String,
    received: Arc<AtomicU64>,
}

impl Meter {
    /// Lives as long as the bench process (threads only).
    fn start(upstream: &str) -> anyhow::Result<Self> {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, counter) = (upstream.clone(), counter.clone());
                std::thread::spawn(move || {
                    let _ = forward(client, &upstream, &counter);
                });
            }
        });
        Ok(Self { endpoint, received })
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

fn forward(client: TcpStream, upstream: &str, received: &AtomicU64) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    let (mut to_server, mut from_client) = (server.try_clone()?, client.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = from_server.read(&mut buf)?;
        if n == 0 {
            break;
        }
        to_client.write_all(&buf[..n])?;
        received.fetch_add(n as u64, Ordering::SeqCst);
    }
    let _ = to_client.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}
