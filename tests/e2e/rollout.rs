//! Group rollouts: once hooks (migrations) by exactly one server per group, fleet status, `--wait`,
//! rollback and promote — several agents as servers of one group, a shared SQLite database.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use milky_dev_support::{Signal, signal};
use milky_tests::agent::{Agent, Services};
use milky_tests::django::{fixture_project, set_fixture_version};
use milky_tests::*;
use serde_json::Value;

const APP: &str = "shop";

/// The fixture as `shop` with these once hooks (after `migrate`).
fn project_with_once(ctx: &TestContext, once: &str) -> PathBuf {
    let project = fixture_project(ctx.dir.path(), APP, "v1");
    assert_success(
        &ctx.milky_in(&project, &["init", "--yes", "--name", APP]),
        "init",
    );
    set_once(&project, once);
    project
}

fn set_once(project: &Path, once: &str) {
    let path = project.join("milky.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("once = "))
        .unwrap()
        .to_owned();
    let hooks = format!(
        "once = [\"python manage.py migrate --noinput\", \"python manage.py record_once {once}\"]"
    );
    std::fs::write(&path, text.replace(&line, &hooks)).unwrap();
}

/// A database file every server of the group shares, as a real app's database would be.
fn shared_db(ctx: &TestContext) -> PathBuf {
    let dir = ctx.dir.path().join("shared");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    dir.join("app.sqlite3")
}

fn server(ctx: &TestContext, host: &str, db: &Path, releases: &str) -> Agent {
    let extra = format!(
        "[env]\nMILKY_DB_PATH = \"{}\"\n\n[releases]\n{releases}\n",
        db.display()
    );
    Agent::with_settings(ctx, "stable", host, &ctx.endpoint, &extra)
}

/// Hosts that ran the once hooks, from the rows they recorded.
fn once_runs(db: &Path) -> Vec<String> {
    let out = Command::new("/usr/bin/python3")
        .args(["-c", "import sqlite3,sys; print('\\n'.join(r[0] for r in sqlite3.connect(sys.argv[1]).execute('select host from pages_oncerun order by id')))"])
        .arg(db)
        .output()
        .unwrap();
    assert_success(&out, "reading the shared database");
    stdout(&out).lines().map(str::to_owned).collect()
}

fn upload(ctx: &TestContext, project: &Path, version: &str) {
    set_fixture_version(project, version);
    ctx.upload(project, "stable", version);
}

fn serving(agent: &Agent) -> Option<String> {
    let response = agent.get(APP, "/");
    (response.status == 200).then(|| response.header("X-Milky-Version").unwrap())
}

/// Waits until `host` holds the once-hooks lease of `version`.
fn wait_for_lease_holder(ctx: &TestContext, version: &str, host: &str) {
    let lease = format!("groups/stable/once/{APP}/{version}/lease.toml");
    let holder = format!("holder = \"{host}\"");
    let start = Instant::now();
    while ctx
        .object(&lease)
        .is_none_or(|l| !String::from_utf8_lossy(&l).contains(&holder))
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{host} never took the lease"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn result(ctx: &TestContext, version: &str) -> String {
    String::from_utf8(
        ctx.object(&format!("groups/stable/once/{APP}/{version}/result.toml"))
            .expect("a once result"),
    )
    .unwrap()
}

#[test]
fn four_servers_at_once_run_the_migration_exactly_once() {
    let ctx = TestContext::new();
    let db = shared_db(&ctx);
    let project = project_with_once(&ctx, "");
    let servers: Vec<Agent> = ["a", "b", "c", "d"]
        .iter()
        .map(|h| server(&ctx, h, &db, ""))
        .collect();
    upload(&ctx, &project, "v1");
    let children: Vec<Child> = servers
        .iter()
        .map(|s| s.command(&["sync"]).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    for (server, child) in servers.iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        assert_success(&out, &format!("sync on {}", server.host));
    }
    for server in &servers {
        assert_eq!(
            serving(server).as_deref(),
            Some("v1"),
            "{} serves v1",
            server.host
        );
    }
    let runs = once_runs(&db);
    assert_eq!(runs.len(), 1, "the once hooks ran exactly once: {runs:?}");
    assert!(
        result(&ctx, "v1").contains(&format!("host = \"{}\"", runs[0])),
        "the result names the server that ran them"
    );

    // A server that starts later converges without running them again.
    let late = server(&ctx, "late", &db, "");
    let out = late.sync();
    assert_success(&out, "sync on the late server");
    assert_eq!(serving(&late).as_deref(), Some("v1"));
    assert_eq!(once_runs(&db).len(), 1, "no second run for a late server");
}

#[test]
fn a_leader_killed_mid_migration_is_taken_over_after_its_lease_expires() {
    let ctx = TestContext::new();
    let db = shared_db(&ctx);
    // Server a sleeps inside the once hook; b waits long enough for a's lease to expire.
    let project = project_with_once(&ctx, "--sleep-on a --sleep 60");
    let releases = "once_lease = \"3s\"\nonce_wait = \"40s\"";
    let (a, b) = (
        server(&ctx, "a", &db, releases),
        server(&ctx, "b", &db, releases),
    );
    upload(&ctx, &project, "v1");
    let mut leader = a
        .command(&["sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_lease_holder(&ctx, "v1", "a");
    std::thread::sleep(Duration::from_secs(1));
    leader.kill().unwrap(); // SIGKILL: no cleanup, the lease just stops being renewed
    leader.wait().unwrap();

    let out = b.sync();
    assert_success(&out, "sync on b");
    assert!(
        stderr(&out).contains("taking over the once-hooks lease of a"),
        "{}",
        stderr(&out)
    );
    assert_eq!(serving(&b).as_deref(), Some("v1"));
    assert!(
        result(&ctx, "v1").contains("host = \"b\""),
        "the result names the server that finished"
    );
    assert_eq!(
        once_runs(&db),
        vec!["b".to_owned()],
        "a died before recording; b ran them once"
    );

    let out = a.sync();
    assert_success(&out, "sync on a after its restart");
    assert_eq!(serving(&a).as_deref(), Some("v1"));
    assert_eq!(once_runs(&db).len(), 1);
}

#[test]
fn a_failed_migration_switches_no_server_and_status_says_why() {
    let ctx = TestContext::new();
    let db = shared_db(&ctx);
    let project = project_with_once(&ctx, "");
    let (a, b) = (server(&ctx, "a", &db, ""), server(&ctx, "b", &db, ""));
    upload(&ctx, &project, "v1");
    for s in [&a, &b] {
        assert_success(&s.sync(), "sync v1");
    }
    set_once(&project, "--fail");
    upload(&ctx, &project, "v2");
    for s in [&a, &b] {
        let out = s.sync();
        assert_failure(&out, 1, "once hooks of shop v2 failed");
        assert_eq!(serving(s).as_deref(), Some("v1"), "{} keeps v1", s.host);
    }
    let status = ctx.milky(&["status", "stable", "--json"]);
    assert_success(&status, "status --json");
    let json: Value = serde_json::from_slice(&status.stdout).unwrap();
    let shop = &json["stable"]["apps"][APP];
    assert_eq!(shop["wanted"], "v2");
    assert_eq!(shop["failed"].as_array().unwrap().len(), 2, "{shop}");
    assert!(
        shop["failed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("failing on purpose"),
        "the hook's output: {shop}"
    );
    let text = stdout(&ctx.milky(&["status"]));
    assert!(text.contains("FAILED"), "{text}");
    assert!(result(&ctx, "v2").contains("ok = false"));
}

#[test]
fn upload_wait_rollback_and_promote_follow_the_fleet() {
    let ctx = TestContext::new();
    let db = shared_db(&ctx);
    let project = project_with_once(&ctx, "");
    let (a, b) = (server(&ctx, "a", &db, ""), server(&ctx, "b", &db, ""));
    // A group with no live servers accepts changes; --wait has nothing to wait for.
    set_fixture_version(&project, "v1");
    let out = ctx.milky_in(
        &project,
        &[
            "upload",
            "--new-group",
            "-g",
            "stable",
            "--version",
            "v1",
            "--level",
            "1",
            "--wait",
        ],
    );
    assert_success(&out, "upload --wait with no servers");
    assert!(stderr(&out).contains("no live servers"), "{}", stderr(&out));

    let _services = Services::run(&[&a, &b]);
    let start = Instant::now();
    while [&a, &b].iter().any(|s| {
        ctx.object(&format!("groups/stable/hosts/{}.toml", s.host))
            .is_none()
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the services never reported"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    set_fixture_version(&project, "v2");
    let out = ctx.milky_in(
        &project,
        &[
            "upload",
            "--new-group",
            "-g",
            "stable",
            "--version",
            "v2",
            "--level",
            "1",
            "--wait",
            "--timeout",
            "180s",
        ],
    );
    assert_success(&out, "upload --wait");
    assert!(
        stderr(&out).contains("all 2 live servers of stable serve shop v2"),
        "{}",
        stderr(&out)
    );
    assert_eq!(serving(&a).as_deref(), Some("v2"));
    assert_eq!(serving(&b).as_deref(), Some("v2"));

    let out = ctx.milky(&["rollback", "stable", APP, "--wait", "--timeout", "120s"]);
    assert_success(&out, "rollback --wait");
    assert_eq!(
        stdout(&out),
        "stable now runs shop v1 (rolled back from v2)\n"
    );
    assert_eq!(serving(&a).as_deref(), Some("v1"));

    // Promote: unstable's version goes to stable without another upload.
    assert_success(
        &ctx.milky(&["version", "--new-group", "unstable", APP, "v2"]),
        "unstable runs v2",
    );
    let out = ctx.milky(&[
        "promote",
        "--new-group",
        "unstable",
        "stable",
        "--wait",
        "--timeout",
        "120s",
    ]);
    assert_success(&out, "promote --wait");
    assert_eq!(serving(&b).as_deref(), Some("v2"));

    // A release whose health check fails: --wait fails and says where and why.
    let views = project.join("pages/views.py");
    let good = std::fs::read_to_string(&views).unwrap();
    std::fs::write(&views, format!("{good}\n\ndef index(request):\n    raise RuntimeError('broken')\n\n\ndef health(request):\n    raise RuntimeError('broken')\n")).unwrap();
    set_fixture_version(&project, "v3");
    let out = ctx.milky_in(
        &project,
        &[
            "upload",
            "--new-group",
            "-g",
            "stable",
            "--version",
            "v3",
            "--level",
            "1",
            "--wait",
            "--timeout",
            "180s",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("shop v3 failed on"), "{err}");
    assert!(
        (err.contains("a:") || err.contains("b:")) && err.contains("unhealthy"),
        "names the server and why: {err}"
    );
    assert_eq!(
        serving(&a).as_deref(),
        Some("v2"),
        "the old release keeps serving"
    );
}

#[test]
fn a_store_that_ignores_conditional_writes_runs_no_once_hooks() {
    let ctx = TestContext::new();
    let db = shared_db(&ctx);
    let proxy = racy_store::start(&ctx.endpoint, racy_store::Fault::NoConditions).endpoint;
    let project = project_with_once(&ctx, "");
    upload(&ctx, &project, "v1");
    let agent = Agent::with_settings(
        &ctx,
        "stable",
        "lonely",
        &proxy,
        &format!("[env]\nMILKY_DB_PATH = \"{}\"\n", db.display()),
    );
    let out = agent.sync();
    assert_failure(&out, 1, "does not apply conditional writes atomically");
    assert!(once_runs_or_empty(&db).is_empty(), "no once hook ran");
    let out = ctx
        .milky_command(ctx.dir.path(), &["doctor", "--endpoint-url", &proxy])
        .env("AWS_ENDPOINT_URL", &proxy)
        .output()
        .unwrap();
    assert_failure(&out, 1, "does not apply conditional writes atomically");
    let out = ctx.milky(&["doctor"]);
    assert_success(&out, "doctor on the real store");
    assert!(stdout(&out).contains("conditional writes are applied atomically"));
}

fn once_runs_or_empty(db: &Path) -> Vec<String> {
    if db.exists() {
        once_runs(db)
    } else {
        Vec::new()
    }
}

#[test]
fn a_stale_leader_that_wakes_up_learns_it_lost_the_lease_before_writing_a_result() {
    let ctx = TestContext::new();
    let db = shared_db(&ctx);
    let project = project_with_once(&ctx, "--sleep-on a --sleep 6");
    let releases = "once_lease = \"2s\"\nonce_wait = \"40s\"";
    let (a, b) = (
        server(&ctx, "a", &db, releases),
        server(&ctx, "b", &db, releases),
    );
    upload(&ctx, &project, "v1");
    let leader = a
        .command(&["sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lease_holder(&ctx, "v1", "a");
    // The leader freezes (its hook runs on); its lease expires and b takes over and finishes.
    let pid = leader.id();
    signal(pid, Signal::STOP).expect("SIGSTOP");
    let out = b.sync();
    assert_success(&out, "sync on b");
    assert!(result(&ctx, "v1").contains("host = \"b\""));
    // Woken, the old leader must not write a result: it finds its lease gone and follows b's.
    signal(pid, Signal::CONT).expect("SIGCONT");
    let out = leader.wait_with_output().unwrap();
    assert_success(&out, "the woken leader's pass");
    assert!(
        stderr(&out).contains("lost the once-hooks lease"),
        "{}",
        stderr(&out)
    );
    assert!(
        result(&ctx, "v1").contains("host = \"b\""),
        "b's result stands"
    );
    assert_eq!(serving(&a).as_deref(), Some("v1"));
}
