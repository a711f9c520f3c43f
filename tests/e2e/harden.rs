//! Hardening: hooks run unprivileged, cannot change a release and leave nothing running; the agent killed (SIGKILL) at
//! every step of an upgrade and of a removal converges on the next pass without an error
//! answer for a healthy app; a disk too full to download or unpack a package fails cleanly.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use milky_agent::crash;
use milky_dev_support::http_get;
use milky_tests::agent::Agent;
use milky_tests::django::fixture_project;
use milky_tests::tmpfs::Tmpfs;
use milky_tests::*;

use crate::agent::{APP, serving, shop, sync_ok, upload};

/// Replaces the `KEY = …` line of the project's milky.toml.
fn set_line(project: &Path, key: &str, line: &str) {
    set_line_in(project, &format!("{key} = "), line);
}

/// Replaces the line of the project's milky.toml that starts with `start`.
fn set_line_in(project: &Path, start: &str, line: &str) {
    let path = project.join("milky.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let old = text
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no {start} in {text}"))
        .to_owned();
    std::fs::write(&path, text.replace(&old, line)).unwrap();
}

/// Runs `args` as www-data (what Apache's processes run as), without its groups.
fn as_www_data(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=www-data",
            "--regid=www-data",
            "--clear-groups",
            "--",
        ])
        .args(args)
        .output()
        .expect("run setpriv")
}

fn www_data_uid() -> u32 {
    let out = Command::new("id")
        .args(["-u", "www-data"])
        .output()
        .unwrap();
    stdout(&out).trim().parse().unwrap()
}

#[test]
fn hooks_run_unprivileged_and_cannot_change_the_release() {
    let ctx = TestContext::new();
    let project = shop(&ctx);
    // Each hook tells who ran it: the server hook through a file in the static dir (served by
    // nginx), the once hook through its output (kept in the once result).
    set_line(
        &project,
        "server",
        r#"server = ["python manage.py collectstatic --noinput", 'id -u > static_collected/who.txt; id -un >> static_collected/who.txt; echo "$HOME" >> static_collected/who.txt; env > "$HOME/hook-env.txt"; sleep 300 >/dev/null 2>&1 & echo $! > "$HOME/background.pid"; sleep 100000 & echo $! > "$HOME/holder.pid"']"#,
    );
    set_line(
        &project,
        "once",
        r#"once = ["python manage.py migrate --noinput", 'echo "once ran as uid $(id -u)"; touch "$HOME/once-was-here"']"#,
    );
    let agent = Agent::new(&ctx, "stable", "tight");
    upload(&ctx, &project, "stable", "v1");
    sync_ok(&agent);
    assert_eq!(serving(&agent).as_deref(), Some("v1"));

    let uid = www_data_uid();
    let home = agent.root.join("apps/shop/home");
    // What the hook left running ended with it: a detached `sleep`, and one that held the
    // hook's output pipe (which would have held the pass until it exited).
    for file in ["background.pid", "holder.pid"] {
        let pid: u32 = std::fs::read_to_string(home.join(file))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "a process the hook left running outlived it: {file} {pid}"
        );
    }
    let who = agent.get(APP, "/static/who.txt");
    assert_eq!(who.status, 200, "{}", who.body);
    let lines: Vec<&str> = who.body.lines().collect();
    assert_eq!(
        lines,
        [
            uid.to_string().as_str(),
            "www-data",
            &home.display().to_string()
        ],
        "the server hook ran as www-data with its own HOME"
    );
    let env = std::fs::read_to_string(home.join("hook-env.txt")).unwrap();
    assert!(
        !env.contains("AWS_"),
        "the agent's store credentials never reach a hook:\n{env}"
    );
    let result = String::from_utf8(
        ctx.object("groups/stable/once/shop/v1/result.toml")
            .expect("once result"),
    )
    .unwrap();
    assert!(
        result.contains(&format!("once ran as uid {uid}")),
        "the once hook ran as www-data: {result}"
    );
    assert!(home.join("once-was-here").exists());
    let home_meta = std::fs::metadata(&home).unwrap();
    assert_eq!((home_meta.uid(), home_meta.mode() & 0o777), (uid, 0o700));

    // The release, its venv and the static files the hooks wrote are root's: neither the app
    // (www-data) nor anything a hook left running can change them.
    let release = agent.release_dir(APP, "v1");
    // pip came from the agent's one pip venv, not from a copy in every release's venv.
    assert!(
        agent
            .root
            .join("state/pip-usr-bin-python3/.milky-pip-ready")
            .exists()
    );
    assert!(!release.join("venv/bin/pip").exists());
    assert!(
        release
            .join("venv/lib/python3.11/site-packages/django")
            .is_dir()
    );
    for dir in [
        release.clone(),
        release.join("venv"),
        release.join("venv/bin"),
        release.join("mysite"),
        release.join("static_collected"),
        release.join("static_collected/pages"),
    ] {
        let file = dir.join("written-by-www-data");
        let out = as_www_data(&["touch", file.to_str().unwrap()]);
        assert!(
            !out.status.success() && !file.exists(),
            "www-data could write into {}",
            dir.display()
        );
        assert_eq!(
            std::fs::metadata(&dir).unwrap().uid(),
            0,
            "{}",
            dir.display()
        );
    }
    let collected = release.join("static_collected/who.txt");
    assert_eq!(std::fs::metadata(&collected).unwrap().uid(), 0);
    let out = as_www_data(&[
        "sh",
        "-c",
        &format!("echo defaced >> {}", collected.display()),
    ]);
    assert!(!out.status.success(), "www-data could change a static file");
    // The check itself works: www-data can write where it may.
    let out = as_www_data(&["touch", home.join("ok").to_str().unwrap()]);
    assert_success(&out, "www-data writes in its hook HOME");
}

/// Requests to one app through nginx in the background: every answer must be a 200.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    bad: Arc<Mutex<Vec<String>>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, host: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let worker = {
            let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                // Bounded in time whatever happens to the test.
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(900) {
                    match http_get(port, host, "/") {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => bad.lock().unwrap().push(format!("HTTP {}", r.status)),
                        Err(e) => bad.lock().unwrap().push(e.to_string()),
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Load {
            stop,
            ok,
            bad,
            worker: Some(worker),
        }
    }

    /// Stops the load and fails the test if any request failed.
    fn finish(mut self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            worker.join().unwrap();
        }
        let ok = self.ok.load(Ordering::Relaxed);
        let bad = self.bad.lock().unwrap();
        eprintln!("{what}: {ok} requests answered 200, {} not", bad.len());
        assert!(ok > 20, "{what}: the load ran ({ok} requests)");
        assert!(bad.is_empty(), "{what}: failed requests: {bad:?}");
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One pass that kills itself (SIGKILL) at `point`; fails the test if it never got there.
fn crashed_pass(agent: &Agent, point: &str) {
    let out = agent
        .command(&["sync"])
        .env(crash::ENV, point)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the pass should have been killed at {point} ({}):\n{}",
        out.status,
        stderr(&out)
    );
}

/// Apache slots of `app` whose process runs.
fn running_slots(agent: &Agent, app: &str) -> Vec<String> {
    ["blue", "green"]
        .into_iter()
        .filter(|slot| {
            let pid_file = agent
                .root
                .join(format!("web/apache/{app}/{slot}/run/httpd.pid"));
            std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .is_some_and(milky_dev_support::alive)
        })
        .map(str::to_owned)
        .collect()
}

fn hidden_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// What must hold once a pass converged on `version` after a crash at `point`.
fn assert_converged(agent: &Agent, point: &str, version: &str) {
    assert_eq!(
        serving(agent).as_deref(),
        Some(version),
        "{point}: the next pass converged"
    );
    assert_eq!(
        running_slots(agent, APP).len(),
        1,
        "{point}: only the live slot runs"
    );
    let current = agent.root.join("apps/shop/current").read_link().unwrap();
    assert!(
        current.ends_with(version),
        "{point}: current is {current:?}"
    );
    let releases = agent.root.join("apps/shop/releases");
    assert_eq!(
        hidden_entries(&releases),
        Vec::<String>::new(),
        "{point}: staging leftovers"
    );
    assert_eq!(
        hidden_entries(&releases.join(version)),
        Vec::<String>::new(),
        "{point}: leftovers in the release"
    );
    let collected = releases.join(version).join("static_collected");
    assert_eq!(
        std::fs::metadata(&collected).unwrap().uid(),
        0,
        "{point}: the static dir is root's again"
    );
}

#[test]
fn killed_at_every_step_of_an_upgrade_the_next_pass_converges() {
    let ctx = TestContext::new();
    let project = shop(&ctx);
    let agent = Agent::new(&ctx, "stable", "crashy");
    upload(&ctx, &project, "stable", "v1");
    sync_ok(&agent);
    let load = Load::start(agent.front, APP);

    // Fetching, preparing and the once hooks, on a version not on disk yet: each pass is killed
    // one step further than the one before, so each gets past what the kill before it left
    // (a download, a staging dir, half a venv, a static dir still the hook user's, a lease).
    let switching = crash::UPGRADE
        .iter()
        .position(|p| *p == "deploy:slot-started")
        .expect("the switch starts with the slot");
    upload(&ctx, &project, "stable", "v2");
    for point in &crash::UPGRADE[..switching] {
        let started = Instant::now();
        crashed_pass(&agent, point);
        eprintln!("{point}: killed after {:.1?}", started.elapsed());
        assert_eq!(
            serving(&agent).as_deref(),
            Some("v1"),
            "{point}: the old release serves until the switch"
        );
    }
    sync_ok(&agent);
    assert_converged(&agent, "once:hook-running", "v2");

    // The switch, back and forth between the two releases on disk: after each kill, a pass
    // converges.
    let mut versions = ["v1", "v2"];
    for point in &crash::UPGRADE[switching..] {
        versions.reverse();
        let target = versions[1];
        assert_success(
            &ctx.milky(&["version", "--new-group", "stable", APP, target]),
            "switch",
        );
        let started = Instant::now();
        crashed_pass(&agent, point);
        let crashed = started.elapsed();
        assert!(
            serving(&agent).is_some(),
            "{point}: nginx answers with a healthy release after the kill"
        );
        let started = Instant::now();
        sync_ok(&agent);
        eprintln!(
            "{point}: killed after {crashed:.1?}, the next pass took {:.1?}",
            started.elapsed()
        );
        assert_converged(&agent, point, target);
    }
    load.finish("the upgraded app through every crash");
}

#[test]
fn killed_at_every_step_of_a_removal_the_next_pass_finishes_it() {
    let ctx = TestContext::new();
    // The app removed (and installed again) in every round: a plain WSGI app without
    // requirements, so each round costs a venv, not a Django install.
    let project = ctx.dir.path().join("tiny");
    write(
        &project.join("hello.py"),
        "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'hello\\n']\n",
    );
    // Neither app is nginx's default server: once shop is gone, its name gets the 404.
    write(
        &project.join("milky.toml"),
        "[app]\nname = \"shop\"\nwsgi = \"hello:application\"\nserver_names = [\"shop\"]\n\n[hooks]\nonce = []\nserver = ['echo \"$(id -un)\" > \"$HOME/hook-ran\"']\n",
    );
    let blog = fixture_project(ctx.dir.path(), "blog", "v1");
    assert_success(
        &ctx.milky_in(&blog, &["init", "--yes", "--name", "blog"]),
        "init blog",
    );
    set_line_in(&blog, "# server_names", "server_names = [\"blog\"]");
    let agent = Agent::new(&ctx, "stable", "remover");
    upload(&ctx, &project, "stable", "v1");
    upload(&ctx, &blog, "stable", "v1");
    sync_ok(&agent);
    assert_eq!(serving(&agent).as_deref(), Some("v1"));
    assert!(agent.root.join("apps/shop/home/hook-ran").exists());
    let load = Load::start(agent.front, "blog");

    for point in crash::REMOVAL {
        assert_success(&ctx.milky(&["remove", "--yes", "stable", APP]), "remove");
        let started = Instant::now();
        crashed_pass(&agent, point);
        let crashed = started.elapsed();
        let started = Instant::now();
        sync_ok(&agent);
        eprintln!(
            "{point}: killed after {crashed:.1?}, the next pass took {:.1?}",
            started.elapsed()
        );
        assert_eq!(
            agent.get(APP, "/").status,
            404,
            "{point}: the app is no longer served"
        );
        for gone in [
            "apps/shop",
            "web/apache/shop",
            "web/nginx/apps/shop.conf",
            "web/nginx/live/shop",
            "web/nginx/reload-pending",
        ] {
            assert!(
                std::fs::symlink_metadata(agent.root.join(gone)).is_err(),
                "{point}: {gone} is left over"
            );
        }
        assert_eq!(
            hidden_entries(&agent.root.join("apps")),
            Vec::<String>::new(),
            "{point}: leftovers in the apps dir"
        );
        assert!(
            running_slots(&agent, APP).is_empty(),
            "{point}: slots stopped"
        );
        let ports = std::fs::read_to_string(agent.root.join("web/ports.toml")).unwrap_or_default();
        assert!(!ports.contains("shop"), "{point}: ports freed: {ports}");
        let state = std::fs::read_to_string(agent.state_dir().join("state.toml")).unwrap();
        assert!(
            !state.contains("shop"),
            "{point}: state forgets it: {state}"
        );

        // Nothing left blocks installing it again.
        assert_success(
            &ctx.milky(&["version", "--new-group", "stable", APP, "v1"]),
            "add the app again",
        );
        sync_ok(&agent);
        assert_eq!(
            serving(&agent).as_deref(),
            Some("v1"),
            "{point}: installed again"
        );
    }
    load.finish("the other app through every crashed removal");
}

#[test]
fn a_disk_full_while_unpacking_fails_cleanly_and_the_next_pass_recovers() {
    let ctx = TestContext::new();
    let project = shop(&ctx);
    // Declared before the agent, so it is unmounted after the agent stopped its Apache.
    let apps = Tmpfs::mount(&ctx.dir.path().join("server-full/apps"), "512m");
    let agent = Agent::with_settings(
        &ctx,
        "stable",
        "full",
        &ctx.endpoint,
        // The bomb cap is far above what v2 unpacks to: the disk is what stops it.
        "[releases]\nmax_unpacked_bytes = 1073741824\n",
    );
    upload(&ctx, &project, "stable", "v1");
    sync_ok(&agent);
    assert_eq!(serving(&agent).as_deref(), Some("v1"));

    // 16 MB left; v2 carries 64 MB of zeros, a few hundred bytes once compressed.
    apps.resize(apps.used() + (16 << 20));
    std::fs::write(project.join("zeros.bin"), vec![0u8; 64 << 20]).unwrap();
    upload(&ctx, &project, "stable", "v2");
    let out = agent.sync();
    assert_failure(&out, 1, "no space left on device while unpacking shop v2");
    let log = stderr(&out);
    assert!(
        log.contains("it needs ~") && log.contains("MB are free there"),
        "{log}"
    );
    assert_eq!(
        serving(&agent).as_deref(),
        Some("v1"),
        "the old release keeps serving"
    );
    let releases = agent.root.join("apps/shop/releases");
    assert!(!releases.join("v2").exists(), "no partial release");
    assert_eq!(
        hidden_entries(&releases),
        Vec::<String>::new(),
        "no staging leftovers"
    );
    let status = String::from_utf8(ctx.object("groups/stable/hosts/full.toml").unwrap()).unwrap();
    assert!(
        status.contains("result = \"failed\"") && status.contains("no space left on device"),
        "the report says why: {status}"
    );

    // Room again: the next pass installs v2 (a full disk is not the release's fault, so it
    // is not held back).
    apps.resize(512 << 20);
    sync_ok(&agent);
    assert_eq!(serving(&agent).as_deref(), Some("v2"));
}

#[test]
fn a_package_that_cannot_fit_in_the_downloads_dir_is_not_fetched() {
    let ctx = TestContext::new();
    let project = shop(&ctx);
    // 4 MB for downloads; the package carries 8 MB of random bytes, which do not compress.
    let downloads = Tmpfs::mount(&ctx.dir.path().join("server-dl/state/downloads"), "4m");
    let agent = Agent::new(&ctx, "stable", "dl");
    let noise: Vec<u8> = (0..8u32 << 20)
        .scan(0x2545_f491_u32, |x, _| {
            *x ^= *x << 13;
            *x ^= *x >> 17;
            *x ^= *x << 5;
            Some(*x as u8)
        })
        .collect();
    std::fs::write(project.join("noise.bin"), noise).unwrap();
    upload(&ctx, &project, "stable", "v1");
    let out = agent.sync();
    assert_failure(&out, 1, "no space left on device while downloading shop v1");
    let log = stderr(&out);
    assert!(
        log.contains("it needs ~") && log.contains("MB are free there"),
        "{log}"
    );
    assert_eq!(
        hidden_entries(&downloads.dir),
        Vec::<String>::new(),
        "nothing left in downloads"
    );
    assert_eq!(
        std::fs::read_dir(&downloads.dir).unwrap().count(),
        0,
        "nothing was downloaded"
    );
    assert!(!agent.root.join("apps/shop/releases/v1").exists());

    // Room again: the next pass installs it (not held back: the disk is not the release's fault).
    downloads.resize(64 << 20);
    sync_ok(&agent);
    assert_eq!(serving(&agent).as_deref(), Some("v1"));
}
