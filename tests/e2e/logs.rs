//! Logs shipped by agents and read back with `cargo milky logs`: real nginx, Apache mod_wsgi and
//! the Django fixture, which logs a marker line (`/marker?id=N`) and raises in `/boom`.

use std::collections::BTreeMap;

use milky_dev_support::{Signal, signal};
use milky_tests::agent::Agent;
use milky_tests::*;

use crate::agent::{APP, shop, sync_ok, upload};

/// A test world with one server of `stable`, named `host`, serving v1 of the fixture.
fn serving_v1(host: &str) -> (TestContext, Agent) {
    let ctx = TestContext::new();
    let project = shop(&ctx);
    let agent = Agent::new(&ctx, "stable", host);
    upload(&ctx, &project, "stable", "v1");
    sync_ok(&agent);
    (ctx, agent)
}

/// `cargo milky logs GROUP ARGS…`, which must succeed; its stdout.
fn logs(ctx: &TestContext, group: &str, args: &[&str]) -> String {
    let mut all = vec!["logs", group];
    all.extend_from_slice(args);
    let out = ctx.milky(&all);
    assert_success(&out, &format!("cargo milky {}", all.join(" ")));
    stdout(&out)
}

fn request_markers(agent: &Agent, ids: std::ops::Range<usize>) {
    for id in ids {
        let response = agent.get(APP, &format!("/marker?id={id}"));
        assert_eq!(response.status, 200, "marker {id}");
    }
}

/// How often each marker id shows in nginx's access lines of `output`.
fn access_counts(output: &str) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for line in output.lines() {
        if let Some(rest) = line.split("GET /marker?id=").nth(1) {
            let id: usize = rest.split(' ').next().unwrap().parse().unwrap();
            *counts.entry(id).or_default() += 1;
        }
    }
    counts
}

fn assert_each_once(counts: &BTreeMap<usize, usize>, ids: std::ops::Range<usize>, output: &str) {
    let missing: Vec<usize> = ids.clone().filter(|id| !counts.contains_key(id)).collect();
    let doubled: Vec<(&usize, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(missing.is_empty(), "lines lost: {missing:?}\n{output}");
    assert!(doubled.is_empty(), "lines shown twice: {doubled:?}");
    assert_eq!(counts.len(), ids.len(), "{counts:?}");
}

#[test]
fn a_servers_requests_markers_tracebacks_and_hooks_reach_cargo_milky_logs() {
    let (ctx, agent) = serving_v1("web-a");
    // nginx stamps whole seconds: the requests come in a later second than the install.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    request_markers(&agent, 0..3);
    assert_eq!(agent.get(APP, "/boom").status, 500);
    sync_ok(&agent);

    let all = logs(&ctx, "stable", &[]);
    let counts = access_counts(&all);
    assert_each_once(&counts, 0..3, &all);
    for needle in [
        "web-a nginx/shop | ",
        "\"GET /boom HTTP/1.0\" 500",
        "web-a apache/shop | ",
        "milky-marker 1",
        "Traceback (most recent call last):",
        "RuntimeError: milky-boom: this view always fails",
        "web-a hooks/shop | ",
        "static file copied",
        "web-a agent | ",
        "shop: v1 installed",
    ] {
        assert!(all.contains(needle), "no {needle:?} in:\n{all}");
    }
    // In time order: the install (agent) before the requests (nginx).
    let installed = all.find("shop: v1 installed").unwrap();
    let first_request = all.find("GET /marker?id=0").unwrap();
    assert!(installed < first_request, "{all}");

    // Filters and machine output.
    let apache = logs(
        &ctx,
        "stable",
        &["--app", APP, "--source", "apache", "--json"],
    );
    let lines: Vec<serde_json::Value> = apache
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!lines.is_empty());
    for line in &lines {
        assert_eq!(line["host"], "web-a");
        assert_eq!(line["source"], "apache");
        assert_eq!(line["app"], APP);
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["line"].as_str().unwrap().contains("milky-boom"))
    );
    assert_eq!(logs(&ctx, "stable", &["--host", "web-b"]), "");
    assert_eq!(logs(&ctx, "stable", &["--since", "2099-01-01"]), "");

    // Removing the app takes its slots' dirs away: what they logged last still ships, and the
    // retired files go once shipped.
    request_markers(&agent, 100..101);
    assert_success(&ctx.milky(&["remove", "stable", APP, "--yes"]), "remove");
    sync_ok(&agent);
    assert_eq!(agent.get(APP, "/").status, 404);
    let after = logs(&ctx, "stable", &["--source", "apache"]);
    assert!(after.contains("milky-marker 100"), "{after}");
    sync_ok(&agent);
    let retired = agent.root.join("web/retired-logs");
    let left: Vec<_> = std::fs::read_dir(&retired)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "retired logs kept after shipping: {left:?}"
    );

    // An unknown group is an error that names the groups there are.
    let out = ctx.milky(&["logs", "nosuchgroup"]);
    assert_failure(
        &out,
        2,
        "there is no group nosuchgroup (the groups are: stable)",
    );
}

#[test]
fn rotation_mid_stream_by_rename_and_by_copytruncate_loses_no_line() {
    let (ctx, agent) = serving_v1("rotating");
    let nginx_logs = agent.root.join("web/nginx/logs");
    let access = nginx_logs.join("shop.access.log");
    let nginx_pid = std::fs::read_to_string(agent.root.join("web/nginx/nginx.pid")).unwrap();

    request_markers(&agent, 0..20);
    sync_ok(&agent);
    request_markers(&agent, 20..40);
    // logrotate's default: rename, then tell nginx to reopen (requests in between go to the
    // renamed file); nothing shipped the lines 20..40 yet.
    std::fs::rename(&access, nginx_logs.join("shop.access.log.1")).unwrap();
    request_markers(&agent, 40..45);
    signal(nginx_pid.trim().parse().unwrap(), Signal::USR1).expect("SIGUSR1 to nginx");
    wait_for(|| access.exists());
    request_markers(&agent, 45..60);
    sync_ok(&agent);

    // copytruncate: the older file moves on, the live one is copied, then truncated in place.
    request_markers(&agent, 60..80);
    std::fs::rename(
        nginx_logs.join("shop.access.log.1"),
        nginx_logs.join("shop.access.log.2"),
    )
    .unwrap();
    std::fs::copy(&access, nginx_logs.join("shop.access.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&access)
        .unwrap()
        .set_len(0)
        .unwrap();
    request_markers(&agent, 80..100);
    sync_ok(&agent);

    let output = logs(&ctx, "stable", &["--source", "nginx", "--app", APP]);
    assert_each_once(&access_counts(&output), 0..100, &output);
}

#[test]
fn killed_between_upload_and_offset_save_loses_and_doubles_nothing() {
    let (ctx, agent) = serving_v1("crashy");
    request_markers(&agent, 0..10);
    let crashed = agent
        .command(&["sync"])
        .env("MILKY_AGENT_CRASH_AT", "logs:segment-uploaded")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the crash point ends the pass");
    assert!(
        stderr(&crashed).contains("logs:segment-uploaded: killing this agent"),
        "{}",
        stderr(&crashed)
    );
    request_markers(&agent, 10..20);
    sync_ok(&agent);
    // A pass with nothing new ships nothing: idle servers stay at one request per pass.
    let shipped = ctx.list("logs/stable/crashy/");
    sync_ok(&agent);
    assert_eq!(ctx.list("logs/stable/crashy/"), shipped);

    let output = logs(&ctx, "stable", &["--source", "nginx", "--app", APP]);
    assert_each_once(&access_counts(&output), 0..20, &output);

    // --follow prints what servers ship after it started, until it is stopped.
    let mut follow = ctx
        .milky_command(
            ctx.dir.path(),
            &[
                "logs",
                "stable",
                "--source",
                "nginx",
                "--follow",
                "--interval",
                "200ms",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let lines = lines.clone();
        let stdout = follow.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                lines.lock().unwrap().push_str(&(line + "\n"));
            }
        })
    };
    request_markers(&agent, 20..21);
    sync_ok(&agent);
    wait_for(|| lines.lock().unwrap().contains("GET /marker?id=20 "));
    follow.kill().unwrap();
    follow.wait().unwrap();
    reader.join().unwrap();
    assert_each_once(&access_counts(&lines.lock().unwrap()), 0..21, "follow");
}

/// Polls until `done` (nginx reopens its logs asynchronously).
fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
