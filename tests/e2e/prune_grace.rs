//! A version pruned while a server downloads it: the grace period keeps its entry and package,
//! so the server installs it and serves it; a prune once the grace has passed removes it.
//!
//! The download is held half-way by a loopback forwarder between the agent and the store, so the
//! prune runs while the package is in flight, whatever the machine's speed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use milky_tests::agent::Agent;
use milky_tests::*;
use serde_json::Value;

use crate::agent::{APP, serving, shop, upload};

/// A forwarder in front of the store that stops the first package download after half its
/// answer, tells the test, and sends the rest once the test says so.
struct HeldDownload {
    endpoint: String,
    holding: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

impl HeldDownload {
    fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the forwarder");
        let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
        let (holding_tx, holding) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let held = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(Mutex::new((holding_tx, release_rx)));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, held, gate) = (upstream.clone(), held.clone(), gate.clone());
                std::thread::spawn(move || {
                    let _ = forward(client, &upstream, &held, &gate);
                });
            }
        });
        Self {
            endpoint,
            holding,
            release,
        }
    }
}

type Gate = Mutex<(mpsc::Sender<()>, mpsc::Receiver<()>)>;

/// One request per connection (`Connection: close`); the answer read whole from the store, then
/// passed on, the first package GET's in two halves around the test's go-ahead.
fn forward(
    client: TcpStream,
    upstream: &str,
    held: &AtomicBool,
    gate: &Gate,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut request_line = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if request_line.is_empty() {
            request_line = line.clone();
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&head)?;
    server.write_all(&body)?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    let mut client = client;
    let package = request_line.starts_with("GET ") && request_line.contains("/packages/");
    if package && !held.swap(true, Ordering::SeqCst) {
        let half = answer.len() / 2;
        client.write_all(&answer[..half])?;
        client.flush()?;
        let gate = gate.lock().expect("the gate");
        let _ = gate.0.send(());
        let _ = gate.1.recv();
        client.write_all(&answer[half..])?;
    } else {
        client.write_all(&answer)?;
    }
    Ok(())
}

fn json(out: &std::process::Output) -> Value {
    assert_success(out, "command with --json");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

fn removed(pruned: &Value) -> Vec<String> {
    pruned["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_str().expect("a version").to_owned())
        .collect()
}

/// The index with every `uploaded` time two days back: what the store holds once the grace
/// period has long passed.
fn aged(index: &str) -> String {
    index
        .lines()
        .map(|line| {
            if line.starts_with("uploaded = ") {
                "uploaded = \"2026-01-01T00:00:00Z\"".to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn a_version_pruned_while_a_server_downloads_it_is_installed_and_goes_after_the_grace() {
    let ctx = TestContext::new();
    let project = shop(&ctx);
    upload(&ctx, &project, "stable", "v1");
    let package = "packages/shop/shop-v1.tar.bz2";
    let forwarder = HeldDownload::start(&ctx.endpoint);
    let agent = Agent::with_settings(&ctx, "stable", "a", &forwarder.endpoint, "");

    // Its output goes to a file: a pipe nobody reads while the download is held could fill up.
    let log = ctx.dir.path().join("pass.log");
    let mut pass = agent
        .command(&["sync"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("the pass's log"))
        .spawn()
        .expect("start milky-agent sync");
    let pass_log = || std::fs::read_to_string(&log).unwrap_or_default();
    if forwarder
        .holding
        .recv_timeout(Duration::from_secs(300))
        .is_err()
    {
        let _ = pass.wait();
        panic!("the pass never downloaded the package: {}", pass_log());
    }

    // Half-way through the download, the group stops running v1: no group runs it or has it in
    // its history, and no --keep protects it. Only its age does.
    assert_success(
        &ctx.milky(&["remove", "stable", APP, "--yes"]),
        "remove shop from stable",
    );
    let pruned = json(&ctx.milky(&["prune", "--keep", "0", "--json"]));
    assert_eq!(removed(&pruned), Vec::<String>::new(), "{pruned}");
    assert_eq!(pruned["packages"], Value::Array(vec![]), "{pruned}");
    assert!(ctx.index().contains("[apps.shop.versions.v1]"));
    assert!(ctx.object(package).is_some(), "the package stays");

    forwarder.release.send(()).expect("the forwarder waits");
    let status = pass.wait().expect("the pass ends");
    assert!(
        status.success(),
        "the pass that downloaded v1: {}",
        pass_log()
    );
    assert_eq!(serving(&agent).as_deref(), Some("v1"));

    // Once past the grace, the same prune removes the entry, then the package.
    ctx.put_object("version.info", aged(&ctx.index()).as_bytes());
    let pruned = json(&ctx.milky(&["prune", "--keep", "0", "--json"]));
    assert_eq!(removed(&pruned), ["v1"], "{pruned}");
    assert!(!ctx.index().contains("[apps.shop.versions.v1]"));
    assert!(ctx.object(package).is_none(), "the package is deleted");
    // What the server installed is its own: it serves on until its group says otherwise.
    assert_eq!(serving(&agent).as_deref(), Some("v1"));
}
