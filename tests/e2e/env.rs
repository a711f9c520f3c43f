//! `cargo milky env`: settings and secrets per group, delivered by the agents to the app's
//! processes through the blue/green switch.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use milky_dev_support::http_get;
use milky_tests::agent::Agent;
use milky_tests::django::{fixture_project, set_fixture_version};
use milky_tests::*;
use serde_json::Value;

const APP: &str = "shop";

fn sha256_hex(text: &str) -> String {
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())",
            text,
        ])
        .output()
        .unwrap();
    stdout(&out).trim().to_owned()
}

#[test]
fn env_reaches_the_app_and_a_change_restarts_it_without_dropping_requests() {
    let ctx = TestContext::new();
    let project = fixture_project(ctx.dir.path(), APP, "v1");
    assert_success(
        &ctx.milky_in(&project, &["init", "--yes", "--name", APP]),
        "init",
    );
    let secret = "it's \"quoted\"\nand on two lines";
    let out = ctx.milky(&[
        "env",
        "set",
        "--new-group",
        "stable",
        APP,
        &format!("SECRET_KEY={secret}"),
        "GREETING=hello",
    ]);
    assert_success(&out, "env set");
    assert!(stdout(&out).contains("+ SECRET_KEY"), "{}", stdout(&out));
    set_fixture_version(&project, "v1");
    ctx.upload(&project, "stable", "v1");

    let (a, b) = (
        Agent::new(&ctx, "stable", "a"),
        Agent::new(&ctx, "stable", "b"),
    );
    for agent in [&a, &b] {
        assert_success(&agent.sync(), "sync");
        let page = agent.get(APP, "/").body;
        assert!(page.contains("greeting: hello"), "{page}");
        assert!(
            page.contains(&format!("secret sha256: {}", sha256_hex(secret))),
            "the value arrives unchanged: {page}"
        );
    }

    // The env file is the app user's alone: mode 0600, and nginx's user cannot read it.
    let file = a.state_dir().join("env/shop.json");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let as_nobody = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!as_nobody.status.success(), "nobody read the env file");
    let bundle = std::fs::read_to_string(a.root.join("web/apache/shop/blue/wsgi.py"))
        .unwrap_or_default()
        + &std::fs::read_to_string(a.root.join("web/apache/shop/green/wsgi.py"))
            .unwrap_or_default();
    assert!(
        !bundle.contains("quoted"),
        "the secret is not in a rendered config"
    );

    // Values are hidden unless asked for.
    let list = stdout(&ctx.milky(&["env", "list", "stable", APP]));
    assert!(
        list.contains("SECRET_KEY (hidden") && !list.contains("quoted"),
        "{list}"
    );
    let shown: Value = serde_json::from_slice(
        &ctx.milky(&["env", "list", "stable", APP, "--show", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(shown["vars"]["SECRET_KEY"], secret);
    assert_eq!(shown["generation"], 1);
    let out = ctx.milky(&["env", "unset", "stable", APP, "GREETING", "--dry-run"]);
    assert_success(&out, "unset --dry-run");
    assert!(stdout(&out).contains("- GREETING"));
    let still: Value =
        serde_json::from_slice(&ctx.milky(&["env", "list", "stable", APP, "--json"]).stdout)
            .unwrap();
    assert_eq!(still["generation"], 1, "a dry run writes nothing");
    assert_failure(
        &ctx.milky(&["env", "set", "--new-group", "stable", APP, "BAD-NAME=1"]),
        2,
        "invalid variable name",
    );

    // A change: each server restarts the app through blue/green on its next pass, under load.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, ok, failed, port) = (stop.clone(), ok.clone(), failed.clone(), a.front);
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(240) {
                    match http_get(port, APP, "/") {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    assert_success(
        &ctx.milky(&[
            "env",
            "set",
            "--new-group",
            "stable",
            APP,
            "GREETING=bonjour",
        ]),
        "env set again",
    );
    for agent in [&a, &b] {
        assert_success(&agent.sync(), "sync after the env change");
        assert!(
            agent.get(APP, "/").body.contains("greeting: bonjour"),
            "{} has the new value",
            agent.host
        );
    }
    stop.store(true, Ordering::Relaxed);
    workers.into_iter().for_each(|w| w.join().unwrap());
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("requests during the env change: {ok} ok, {failed} failed");
    assert!(ok > 50, "the load loop ran");
    assert_eq!(failed, 0, "no failed request while the env changed");

    let status: Value =
        serde_json::from_slice(&ctx.milky(&["status", "stable", "--json"]).stdout).unwrap();
    let shop = &status["stable"]["apps"][APP];
    assert_eq!(shop["env_generation"], 2);
    assert_eq!(
        shop["serving"].as_array().unwrap().len(),
        2,
        "both run the newest env: {shop}"
    );

    // A change that breaks the app keeps the old processes serving.
    assert_success(
        &ctx.milky(&[
            "env",
            "set",
            "--new-group",
            "stable",
            APP,
            "DJANGO_SETTINGS_MODULE=no.such.settings",
        ]),
        "a broken setting",
    );
    let out = a.sync();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let page = a.get(APP, "/");
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("greeting: bonjour"),
        "the old processes still serve: {}",
        page.body
    );
}
