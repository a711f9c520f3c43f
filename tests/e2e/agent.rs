//! `milky-agent` as servers of groups: real store (moto), real nginx, Apache mod_wsgi and the
//! Django fixture, asserted through HTTP via each server's nginx front.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use milky_dev_support::{Ports, http_get};
use milky_tests::agent::Agent;
use milky_tests::django::{fixture_project, set_fixture_version};
use milky_tests::*;

pub(crate) const APP: &str = "shop";

/// The fixture as app `shop`, initialised for this test's store.
pub(crate) fn shop(ctx: &TestContext) -> std::path::PathBuf {
    let project = fixture_project(ctx.dir.path(), APP, "v1");
    assert_success(
        &ctx.milky_in(&project, &["init", "--yes", "--name", APP]),
        "init",
    );
    project
}

pub(crate) fn upload(ctx: &TestContext, project: &std::path::Path, group: &str, version: &str) {
    set_fixture_version(project, version);
    let out = ctx.milky_in(
        project,
        &[
            "upload",
            "--new-group",
            "--group",
            group,
            "--version",
            version,
            "--level",
            "1",
        ],
    );
    assert_success(&out, &format!("upload {version} to {group}"));
}

pub(crate) fn sync_ok(agent: &Agent) -> String {
    let out = agent.sync();
    assert_success(&out, &format!("sync on {}", agent.host));
    stderr(&out)
}

/// The version that answers `/` through the server's nginx.
pub(crate) fn serving(agent: &Agent) -> Option<String> {
    let response = agent.get(APP, "/");
    (response.status == 200).then(|| {
        response
            .header("X-Milky-Version")
            .expect("the fixture names its version")
    })
}

#[test]
fn servers_follow_their_group_through_install_upgrade_switch_back_and_remove() {
    let ctx = TestContext::new();
    let project = shop(&ctx);
    let (a, b, c) = (
        Agent::new(&ctx, "stable", "a"),
        Agent::new(&ctx, "stable", "b"),
        Agent::new(&ctx, "unstable", "c"),
    );

    upload(&ctx, &project, "stable", "v1");
    for agent in [&a, &b] {
        sync_ok(agent);
        assert_eq!(
            serving(agent).as_deref(),
            Some("v1"),
            "{} serves v1",
            agent.host
        );
        let page = agent.get(APP, "/");
        assert!(page.body.contains("mysite v1 on"), "{}", page.body);
        let css = agent.get(APP, "/static/pages/site.css");
        assert_eq!(css.status, 200, "static files through nginx");
        assert!(
            css.header("X-Milky-Version").is_none(),
            "static files come from nginx, not Django"
        );
    }
    // The other group's server got nothing.
    let out = c.sync();
    assert_success(&out, "sync on c");
    assert_eq!(c.get(APP, "/").status, 404);

    upload(&ctx, &project, "unstable", "v2");
    sync_ok(&c);
    sync_ok(&a);
    assert_eq!(serving(&c).as_deref(), Some("v2"));
    assert_eq!(
        serving(&a).as_deref(),
        Some("v1"),
        "stable is not touched by unstable's upload"
    );

    assert_success(
        &ctx.milky(&["version", "--new-group", "stable", APP, "v2"]),
        "promote v2",
    );
    for agent in [&a, &b] {
        sync_ok(agent);
        assert_eq!(serving(agent).as_deref(), Some("v2"));
    }

    assert_success(
        &ctx.milky(&["version", "--new-group", "stable", APP, "v1"]),
        "switch back to v1",
    );
    for agent in [&a, &b] {
        let log = sync_ok(agent);
        assert!(
            !log.contains("downloading"),
            "v1 is still on disk, no download: {log}"
        );
        assert_eq!(serving(agent).as_deref(), Some("v1"));
        assert!(
            agent
                .root
                .join("apps/shop/current")
                .read_link()
                .unwrap()
                .ends_with("v1")
        );
    }
    let status = String::from_utf8(
        ctx.object("groups/stable/hosts/a.toml")
            .expect("a reports its status"),
    )
    .unwrap();
    assert!(status.contains("serving = \"v1\""), "{status}");
    assert!(status.contains("result = \"ok\""), "{status}");

    // An idle pass changes nothing.
    let log = sync_ok(&a);
    assert!(log.contains("up to date"), "{log}");

    assert_success(&ctx.milky(&["remove", "--yes", "stable", APP]), "remove");
    for agent in [&a, &b] {
        sync_ok(agent);
        assert_eq!(
            agent.get(APP, "/").status,
            404,
            "{} no longer serves the app",
            agent.host
        );
        assert!(!agent.root.join("apps/shop").exists(), "its files are gone");
    }
    assert_eq!(serving(&c).as_deref(), Some("v2"), "unstable still serves");
}

#[test]
fn a_release_that_fails_its_health_check_never_takes_over() {
    let ctx = TestContext::new();
    let project = shop(&ctx);
    let agent = Agent::new(&ctx, "stable", "solo");
    upload(&ctx, &project, "stable", "v1");
    sync_ok(&agent);

    // v3 imports fine for collectstatic but every request fails.
    let views = project.join("pages/views.py");
    let good = std::fs::read_to_string(&views).unwrap();
    std::fs::write(&views, format!("{good}\n\ndef index(request):\n    raise RuntimeError('broken on purpose')\n\n\ndef health(request):\n    raise RuntimeError('broken on purpose')\n")).unwrap();
    upload(&ctx, &project, "stable", "v3");
    let out = agent.sync();
    assert_failure(&out, 1, "v3 failed");
    assert_eq!(
        serving(&agent).as_deref(),
        Some("v1"),
        "the old release keeps serving"
    );
    let status = String::from_utf8(ctx.object("groups/stable/hosts/solo.toml").unwrap()).unwrap();
    assert!(status.contains("result = \"failed\""), "{status}");
    assert!(
        status.contains("v3 failed"),
        "the report says why: {status}"
    );

    // The failed version is not retried on every pass.
    let out = agent.sync();
    assert_failure(&out, 1, "held back");
    assert_eq!(serving(&agent).as_deref(), Some("v1"));

    // A fixed release under a new version goes through.
    std::fs::write(&views, good).unwrap();
    upload(&ctx, &project, "stable", "v4");
    sync_ok(&agent);
    assert_eq!(serving(&agent).as_deref(), Some("v4"));
}

#[test]
fn blue_green_switches_under_load_fail_no_request() {
    let ctx = TestContext::new();
    let project = shop(&ctx);
    let agent = Agent::new(&ctx, "stable", "busy");
    upload(&ctx, &project, "stable", "v1");
    upload(&ctx, &project, "stable", "v2");
    assert_success(
        &ctx.milky(&["version", "--new-group", "stable", APP, "v1"]),
        "back to v1",
    );
    sync_ok(&agent);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, port) = (stop.clone(), ok.clone(), failed.clone(), agent.front);
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                // Bounded in time whatever happens to the test.
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(300) {
                    match http_get(port, APP, "/") {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for n in 0..5 {
        let version = if n % 2 == 0 { "v2" } else { "v1" };
        assert_success(
            &ctx.milky(&["version", "--new-group", "stable", APP, version]),
            "switch",
        );
        sync_ok(&agent);
        assert_eq!(serving(&agent).as_deref(), Some(version));
    }
    stop.store(true, Ordering::Relaxed);
    workers.into_iter().for_each(|w| w.join().unwrap());
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("requests during 5 switches: {ok} ok, {failed} failed");
    assert!(ok > 100, "the load loop ran ({ok} requests)");
    assert_eq!(failed, 0, "no failed request during blue/green switches");
}

#[test]
fn a_broken_store_never_takes_down_what_serves() {
    let ctx = TestContext::new();
    let project = shop(&ctx);
    let agent = Agent::new(&ctx, "stable", "steady");
    upload(&ctx, &project, "stable", "v1");

    // Two passes at once: the second leaves at once, saying so.
    let mut first = agent
        .command(&["sync"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let second = agent.sync();
    assert_success(&second, "the overlapping pass");
    assert!(
        stderr(&second).contains("another pass is running"),
        "{}",
        stderr(&second)
    );
    assert!(first.wait().unwrap().success());
    assert_eq!(serving(&agent).as_deref(), Some("v1"));

    // A package whose bytes do not match the index is refused before anything is unpacked.
    upload(&ctx, &project, "stable", "v2");
    let key = "packages/shop/shop-v2.tar.bz2";
    let mut tampered = ctx.object(key).unwrap();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    ctx.put_object(key, &tampered);
    let out = agent.sync();
    assert_failure(&out, 1, "refused");
    assert!(stderr(&out).contains("sha256"), "{}", stderr(&out));
    assert!(
        !agent.release_dir("shop", "v2").exists(),
        "nothing of it reached the release dir"
    );
    assert_eq!(serving(&agent).as_deref(), Some("v1"));

    // A broken index: the server keeps serving and reports why.
    ctx.put_object("version.info", b"schema = 1\n[groups.stable\n");
    let out = agent.sync();
    assert_failure(&out, 1, "version.info");
    assert_eq!(serving(&agent).as_deref(), Some("v1"));
    let status = String::from_utf8(ctx.object("groups/stable/hosts/steady.toml").unwrap()).unwrap();
    assert!(
        status.contains("result = \"failed\"") && status.contains("broken"),
        "{status}"
    );

    // An unreachable store: the same.
    // Reserved for the rest of the test, so nothing listens on it.
    let dead_port = Ports::one().unwrap();
    let dead = format!("endpoint_url = \"http://127.0.0.1:{}\"", dead_port.first());
    let config = std::fs::read_to_string(&agent.config).unwrap();
    let line = config
        .lines()
        .find(|l| l.starts_with("endpoint_url"))
        .unwrap()
        .to_owned();
    std::fs::write(&agent.config, config.replace(&line, &dead)).unwrap();
    let out = agent
        .command(&["sync"])
        .env("AWS_ENDPOINT_URL", "")
        .output()
        .unwrap();
    assert_failure(&out, 1, "cannot reach the store");
    assert_eq!(serving(&agent).as_deref(), Some("v1"));
}
