//! The web layer against the real parts: nginx, Apache2 + mod_wsgi and the Django fixture in
//! tests/fixtures/django-app, each test on its own loopback ports and temp root under /tmp.
//!
//! Releases are prepared once and shared: the Django wheels are downloaded once into
//! /tmp/milky-test-wheels (the only network access), releases of the fixture go to
//! /tmp/milky-web-test-releases keyed by a hash of the fixture, and a test that needs its own
//! snippets lays a few files over a shared release instead of preparing another venv.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use milky_dev_support::{Ports, Signal, alive, copy_project, group_alive, signal_group, walk};

use milky_agent::web::{
    AppSite, ReleaseSetup, Slot, SlotPorts, Timeouts, WebError, WebSettings, WebStack,
    prepare_release,
};

const WHEELS_DIR: &str = "/tmp/milky-test-wheels";
const RELEASES_DIR: &str = "/tmp/milky-web-test-releases";

// ---- tools, ports, dirs ------------------------------------------------------------------------

/// A test that needs nginx, Apache or mod_wsgi fails when they are missing: a silent pass would
/// hide that nothing was tested.
fn require_tools() {
    let mut missing = Vec::new();
    for (tool, args) in [("nginx", ["-v"]), ("apache2", ["-v"])] {
        if Command::new(tool).args(args).output().is_err() {
            missing.push(tool.to_owned());
        }
    }
    for path in [
        "/usr/lib/apache2/modules/mod_wsgi.so",
        "/usr/bin/python3",
        "/etc/nginx/mime.types",
    ] {
        if !Path::new(path).exists() {
            missing.push(path.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "these tests need nginx, apache2, libapache2-mod-wsgi-py3 and python3-venv (apt); missing: {missing:?}"
    );
}

/// A temp dir under /tmp that www-data and nobody can enter (tempfile makes them 0700).
fn temp_root(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("create temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod temp dir");
    dir
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/django-app")
}

/// Runs `f` holding an exclusive lock on `path`, so parallel test processes (nextest) prepare a
/// shared thing once.
fn with_file_lock<T>(path: &Path, f: impl FnOnce() -> T) -> T {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    file.lock().unwrap();
    let out = f();
    file.unlock().unwrap();
    out
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Wheels of the fixture's requirements, downloaded once per machine.
fn wheels() -> PathBuf {
    let dir = PathBuf::from(WHEELS_DIR);
    with_file_lock(&dir.join(".lock"), || {
        if !dir.join(".complete").exists() {
            // Debian's python3 may come without pip; a throwaway venv always has it.
            let venv = dir.join(".pip-venv");
            if !venv.join("bin/pip").exists() {
                run(Command::new("/usr/bin/python3")
                    .arg("-m")
                    .arg("venv")
                    .arg(&venv));
            }
            run(Command::new(venv.join("bin/pip"))
                .args(["download", "-q", "--disable-pip-version-check", "-d"])
                .arg(&dir)
                .arg("-r")
                .arg(fixture_dir().join("requirements.txt")));
            std::fs::write(dir.join(".complete"), "").unwrap();
        }
    });
    dir
}

/// Copies the fixture to `dest` as version `version`, with the wheels, as a package would
/// unpack.
fn unpack_fixture(dest: &Path, version: &str) {
    // Without the fixture's leftovers, venv and wheels: the wheels come next.
    copy_project(&fixture_dir(), dest).unwrap();
    std::fs::write(dest.join("VERSION"), format!("{version}\n")).unwrap();
    let wheels_dest = dest.join("wheels");
    std::fs::create_dir_all(&wheels_dest).unwrap();
    for entry in std::fs::read_dir(wheels()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "whl") {
            std::fs::copy(&path, wheels_dest.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// A hash of the fixture's files, so a changed fixture gets freshly prepared releases.
fn fixture_hash() -> String {
    let files: Vec<PathBuf> = walk(&fixture_dir())
        .into_iter()
        .filter(|path| !path.components().any(|c| c.as_os_str() == "__pycache__"))
        .collect();
    // FNV-1a: stable across runs and Rust versions, unlike DefaultHasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for file in files {
        let bytes = [
            file.to_string_lossy().as_bytes().to_vec(),
            std::fs::read(&file).unwrap(),
        ]
        .concat();
        for b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

/// A prepared release of the fixture at `version`, shared by all tests and test processes.
fn shared_release(version: &str) -> PathBuf {
    let dir = PathBuf::from(RELEASES_DIR).join(format!("{}-{version}", fixture_hash()));
    with_file_lock(&PathBuf::from(RELEASES_DIR).join(".lock"), || {
        std::fs::set_permissions(RELEASES_DIR, std::fs::Permissions::from_mode(0o755)).unwrap();
        if !dir.join("venv/.milky-prepared").exists() {
            let _ = std::fs::remove_dir_all(&dir);
            unpack_fixture(&dir, version);
            prepare_release(&ReleaseSetup::new(&dir)).unwrap_or_else(|e| panic!("{e}"));
        }
    });
    dir
}

/// A release dir of its own that reuses a shared release's venv and files (symlinks), so a test
/// can add snippets without preparing another venv.
fn overlay_release(root: &Path, name: &str, shared: &Path, files: &[(&str, &str)]) -> PathBuf {
    let dir = root.join("releases").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(shared).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    for (path, contents) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    for d in [root.join("releases"), dir.clone()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn site(app: &str, host: &str, release: &Path) -> AppSite {
    AppSite::new(app, host, release, "mysite/wsgi.py")
}

/// A shared release's site, with its venv where the shared release keeps it.
fn overlay_site(app: &str, host: &str, release: &Path, shared: &Path) -> AppSite {
    let mut s = site(app, host, release);
    s.venv_dir = shared.join("venv");
    s
}

// ---- a web stack that cleans up after itself ----------------------------------------------------

/// A [`WebStack`] on its own temp root and ports. On drop it ends the nginx and Apache processes
/// whose pid files are under its root, and nothing else.
struct TestStack {
    stack: WebStack,
    root: tempfile::TempDir,
    /// The front port and the apps' slot ports, held while nginx and Apache may bind them.
    _ports: Ports,
}

impl TestStack {
    fn new(apps: &[&str]) -> Self {
        require_tools();
        let root = temp_root("milky-web-");
        // One block: the front, then two slot ports per app.
        let count = u16::try_from(1 + 2 * apps.len()).expect("a few apps");
        let ports = Ports::reserve(count).expect("reserve ports");
        let front = std::net::SocketAddr::from(([127, 0, 0, 1], ports.first()));
        let mut settings = WebSettings::new(root.path().join("web"), front);
        settings.slot_ports = SlotPorts {
            fixed: (1..)
                .step_by(2)
                .zip(apps)
                .map(|(i, a)| (a.to_string(), [ports.get(i), ports.get(i + 1)]))
                .collect(),
            ..SlotPorts::default()
        };
        settings.nginx_worker_processes = 2;
        settings.timeouts = Timeouts {
            start: Duration::from_secs(20),
            health: Duration::from_secs(20),
            drain: Duration::from_secs(10),
            stop: Duration::from_secs(10),
            command: Duration::from_secs(60),
        };
        let stack = WebStack::new(settings).unwrap_or_else(|e| panic!("{e}"));
        TestStack {
            stack,
            root,
            _ports: ports,
        }
    }

    fn front(&self) -> u16 {
        self.stack.settings().front.port()
    }

    /// Start, health-check, switch: what the agent does for a new release.
    fn deploy(&self, site: &AppSite, slot: Slot, version: &str) {
        self.stack
            .start_slot(site, slot)
            .unwrap_or_else(|e| panic!("{e}"));
        self.stack
            .health_check(&site.name, slot, "/health", Some(version))
            .unwrap_or_else(|e| panic!("{e}"));
        self.stack
            .switch_nginx(site, slot)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn pids(&self) -> Vec<u32> {
        let mut files = vec![self.stack.nginx_prefix().join("nginx.pid")];
        if let Ok(apps) = std::fs::read_dir(self.root.path().join("web/apache")) {
            for app in apps.flatten() {
                for slot in ["blue", "green"] {
                    files.push(app.path().join(slot).join("run/httpd.pid"));
                }
            }
        }
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        milky_dev_support::stop(&self.pids(), Duration::from_secs(10));
    }
}

// ---- HTTP --------------------------------------------------------------------------------------

struct Response {
    status: u16,
    version: Option<String>,
    body: String,
}

fn get(port: u16, host: &str, path: &str) -> Response {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let result = agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .set("Host", host)
        .call();
    let resp = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path} (Host {host}) on port {port}: {e}"),
    };
    Response {
        status: resp.status(),
        version: resp.header("X-Milky-Version").map(str::to_owned),
        body: resp.into_string().unwrap_or_default(),
    }
}

/// One HTTP/1.1 request on a kept-alive connection; returns status line and body (framed by
/// Content-Length or chunked, so the connection stays usable for the next request).
fn keep_alive_get(conn: &mut std::net::TcpStream, host: &str) -> (String, String) {
    use std::io::{BufRead, BufReader, Read};
    write!(conn, "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(conn);
    let line = |reader: &mut BufReader<_>| {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        line.trim().to_owned()
    };
    let status = line(&mut reader);
    let (mut length, mut chunked) = (None, false);
    loop {
        let header = line(&mut reader);
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((&header, ""));
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse::<usize>().ok();
        }
        chunked |= name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked");
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let size = usize::from_str_radix(&line(&mut reader), 16).unwrap();
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk).unwrap();
            line(&mut reader);
            if size == 0 {
                break;
            }
            body.extend(chunk);
        }
    } else {
        let length = length.unwrap_or_else(|| panic!("no body length after {status}"));
        body.resize(length, 0);
        reader.read_exact(&mut body).unwrap();
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The pids of nginx's workers: a reload replaces them all.
fn nginx_workers(stack: &WebStack) -> Vec<u32> {
    let master = stack.nginx_pid().unwrap().expect("nginx runs");
    let mut workers: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_owned();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(master)
        })
        .filter(|pid| alive(*pid))
        .collect();
    workers.sort();
    workers
}

fn assert_serves(port: u16, host: &str, version: &str) {
    let r = get(port, host, "/");
    assert_eq!(r.status, 200, "{host}: {}", r.body);
    assert!(
        r.body.starts_with(&format!("mysite {version} ")),
        "{host}: {}",
        r.body
    );
    assert_eq!(r.version.as_deref(), Some(version));
}

// ---- tests -------------------------------------------------------------------------------------

/// (a) A release is prepared (venv from wheels, collectstatic, readable by www-data), started on
/// blue, checked, and served through nginx, with static files straight from nginx.
#[test]
fn prepared_release_serves_through_nginx() {
    let t = TestStack::new(&["shop"]);
    let release = t.root.path().join("releases/v1");
    unpack_fixture(&release, "v1");
    // A tempdir-like 0700 dir inside the release must become readable.
    std::fs::set_permissions(
        release.join("pages"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let started = Instant::now();
    let prepared = prepare_release(&ReleaseSetup::new(&release)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("prepare_release took {:?}", started.elapsed());
    assert!(!prepared.already_prepared);
    assert!(
        prepared.hooks[0].output.contains("static file"),
        "{:?}",
        prepared.hooks
    );
    let mode = std::fs::metadata(release.join("pages"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o005,
        0o005,
        "pages/ not readable by others: {mode:o}"
    );
    // A second run sees the marker and does nothing.
    assert!(
        prepare_release(&ReleaseSetup::new(&release))
            .unwrap()
            .already_prepared
    );

    let site = site("shop", "shop.test", &release);
    let started = Instant::now();
    t.stack
        .start_slot(&site, Slot::Blue)
        .unwrap_or_else(|e| panic!("{e}"));
    let report = t
        .stack
        .health_check("shop", Slot::Blue, "/health", Some("v1"))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "start + health check took {:?} ({report:?})",
        started.elapsed()
    );
    assert!(t.stack.is_running("shop", Slot::Blue).unwrap());
    assert_eq!(t.stack.live_slot("shop").unwrap(), None);

    t.stack
        .switch_nginx(&site, Slot::Blue)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.stack.live_slot("shop").unwrap(), Some(Slot::Blue));
    assert_serves(t.front(), "shop.test", "v1");
    assert!(get(t.front(), "shop.test", "/").body.contains("slot blue"));

    let css = get(t.front(), "shop.test", "/static/pages/site.css");
    assert_eq!(css.status, 200);
    assert!(
        css.body.contains("milky fixture stylesheet"),
        "{}",
        css.body
    );
    assert_eq!(
        css.version, None,
        "static file went through Django, not nginx"
    );

    // Unknown host names get nginx's catch-all 404, not this app.
    assert_eq!(get(t.front(), "other.test", "/").status, 404);
}

/// A failing hook's error says which hook, its exit status and the end of its output.
#[test]
fn failing_hook_reports_status_and_output() {
    require_tools();
    let root = temp_root("milky-hook-");
    let release = root.path().join("release");
    std::fs::create_dir_all(&release).unwrap();
    let mut setup = ReleaseSetup::new(&release);
    setup.hooks = vec!["echo preparing; echo \"$MILKY_TEST_VAR\" >&2; exit 3".to_owned()];
    setup.env = BTreeMap::from([("MILKY_TEST_VAR".to_owned(), "from-the-caller".to_owned())]);
    let err = prepare_release(&setup).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WebError::PrepareFailed { .. }), "{msg}");
    assert!(msg.contains("exit status: 3"), "{msg}");
    assert!(
        msg.contains("from-the-caller") && msg.contains("preparing"),
        "{msg}"
    );
    assert!(!release.join("venv/.milky-prepared").exists());
}

#[test]
fn release_out_of_reach_of_www_data_is_refused() {
    let root = temp_root("milky-private-");
    let release = root.path().join("release");
    std::fs::create_dir_all(&release).unwrap();
    // Like /root.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = prepare_release(&ReleaseSetup::new(&release))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mode 700") && err.contains(&root.path().display().to_string()),
        "{err}"
    );
}

/// (b) Blue/green switches under load through nginx: no request fails.
#[test]
fn blue_green_switches_under_load_fail_no_request() {
    let t = TestStack::new(&["shop"]);
    let v1 = site("shop", "shop.test", &shared_release("v1"));
    let v2 = site("shop", "shop.test", &shared_release("v2"));
    t.deploy(&v1, Slot::Blue, "v1");
    assert_serves(t.front(), "shop.test", "v1");
    // A client connection kept alive across all the switches below.
    let mut kept = std::net::TcpStream::connect(("127.0.0.1", t.front())).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (status, body) = keep_alive_get(&mut kept, "shop.test");
    assert!(
        status.ends_with("200 OK") && body.contains("v1"),
        "{status} {body}"
    );
    let workers = nginx_workers(&t.stack);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let front = t.front();
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            std::thread::spawn(move || {
                // Keep-alive, as browsers and load balancers do.
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(10))
                    .build();
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let url = format!("http://127.0.0.1:{front}/");
                    match agent.get(&url).set("Host", "shop.test").call() {
                        Ok(r) if r.status() == 200 => {
                            let _ = r.into_string();
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("HTTP {}", r.status())),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    let steps = [
        (&v2, Slot::Green, "v2"),
        (&v1, Slot::Blue, "v1"),
        (&v2, Slot::Green, "v2"),
        (&v1, Slot::Blue, "v1"),
        (&v2, Slot::Green, "v2"),
    ];
    for (site, slot, version) in steps {
        let t0 = Instant::now();
        t.deploy(site, slot, version);
        let switched = t0.elapsed();
        t.stack
            .stop_slot("shop", slot.other())
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "switch to {slot} ({version}): deploy {switched:?}, total {:?}",
            t0.elapsed()
        );
        assert!(!t.stack.is_running("shop", slot.other()).unwrap());
        // The connection opened before the first switch gets each new release. Using it after
        // every switch also keeps it from idling past nginx's keep-alive timeout (75 s) on a
        // busy machine, where the five switches can take longer than that.
        let (status, body) = keep_alive_get(&mut kept, "shop.test");
        assert!(
            status.ends_with("200 OK") && body.contains(version),
            "after the switch to {version}: {status} {body}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for h in load {
        h.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    eprintln!(
        "load during {} switches in {:?}: {} requests ok, {} failed {:?}",
        steps.len(),
        started.elapsed(),
        ok.load(Ordering::Relaxed),
        failures.len(),
        failures.iter().take(5).collect::<Vec<_>>()
    );
    assert!(ok.load(Ordering::Relaxed) > 100, "the load loop barely ran");
    assert!(
        failures.is_empty(),
        "{} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );

    assert_serves(t.front(), "shop.test", "v2");
    // The releases' nginx files are the same, so no switch reloaded nginx: the same workers
    // serve, and the connection opened before the first switch now gets the new release.
    assert_eq!(nginx_workers(&t.stack), workers, "nginx was reloaded");
    let (status, body) = keep_alive_get(&mut kept, "shop.test");
    assert!(
        status.ends_with("200 OK") && body.contains("v2"),
        "{status} {body}"
    );
    // A restarted agent reads back which slot is live and what runs where.
    let again = WebStack::new(t.stack.settings().clone()).unwrap();
    assert_eq!(again.live_slot("shop").unwrap(), Some(Slot::Green));
    assert!(again.is_running("shop", Slot::Green).unwrap());
    assert!(!again.is_running("shop", Slot::Blue).unwrap());
    let info = again.slot_info("shop", Slot::Green).unwrap().unwrap();
    assert_eq!(info.release_dir, v2.release_dir);
    // The live slot is never stopped or restarted in place.
    let err = again.stop_slot("shop", Slot::Green).unwrap_err();
    assert!(matches!(err, WebError::SlotIsLive { .. }), "{err}");
    let err = again.start_slot(&v2, Slot::Green).unwrap_err();
    assert!(matches!(err, WebError::SlotIsLive { .. }), "{err}");
}

/// (c) A package snippet that breaks the Apache or the nginx config test fails only its app.
#[test]
fn broken_snippet_fails_only_its_app() {
    let t = TestStack::new(&["shop", "blog"]);
    let shared = shared_release("v1");
    let shop = site("shop", "shop.test", &shared);
    let good = overlay_release(
        t.root.path(),
        "blog-good",
        &shared,
        &[(
            "deploy/nginx.conf",
            "location = /robots.txt { return 200 \"blog robots\\n\"; }\n",
        )],
    );
    let mut blog = overlay_site("blog", "blog.test", &good, &shared);
    blog.nginx_snippet = Some("deploy/nginx.conf".into());
    t.deploy(&shop, Slot::Blue, "v1");
    t.deploy(&blog, Slot::Blue, "v1");
    assert_eq!(
        get(t.front(), "blog.test", "/robots.txt").body,
        "blog robots\n"
    );
    // The snippet is inside the blog's server block only.
    assert_ne!(
        get(t.front(), "shop.test", "/robots.txt").body,
        "blog robots\n"
    );

    // An Apache snippet with an unknown directive: the test fails, green never starts.
    let bad_apache = overlay_release(
        t.root.path(),
        "blog-bad-apache",
        &shared,
        &[("deploy/apache.conf", "NoSuchDirective on\n")],
    );
    let mut broken = overlay_site("blog", "blog.test", &bad_apache, &shared);
    broken.apache_snippet = Some("deploy/apache.conf".into());
    let err = t.stack.start_slot(&broken, Slot::Green).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WebError::ApacheConfigTest { .. }), "{msg}");
    assert!(
        msg.contains("NoSuchDirective") && msg.contains("blog") && msg.contains("green"),
        "{msg}"
    );
    assert!(!t.stack.is_running("blog", Slot::Green).unwrap());

    // An nginx snippet nginx rejects: the previous file stays, both apps keep serving.
    let before = std::fs::read_to_string(t.stack.nginx_app_file("blog")).unwrap();
    let bad_nginx = overlay_release(
        t.root.path(),
        "blog-bad-nginx",
        &shared,
        &[("deploy/nginx.conf", "no_such_directive on;\n")],
    );
    let mut broken = overlay_site("blog", "blog.test", &bad_nginx, &shared);
    broken.nginx_snippet = Some("deploy/nginx.conf".into());
    t.stack
        .start_slot(&broken, Slot::Green)
        .unwrap_or_else(|e| panic!("{e}"));
    let err = t.stack.switch_nginx(&broken, Slot::Green).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WebError::NginxConfigTest { .. }), "{msg}");
    assert!(msg.contains("no_such_directive"), "{msg}");
    assert_eq!(
        std::fs::read_to_string(t.stack.nginx_app_file("blog")).unwrap(),
        before
    );
    assert_eq!(t.stack.live_slot("blog").unwrap(), Some(Slot::Blue));
    assert_serves(t.front(), "shop.test", "v1");
    assert_serves(t.front(), "blog.test", "v1");
    assert!(get(t.front(), "blog.test", "/").body.contains("slot blue"));
    // Nothing left over that a later glob or reload could pick up.
    let leftovers: Vec<_> = std::fs::read_dir(t.stack.nginx_prefix().join("apps"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".conf"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A package value that would escape the config is refused before any file is written.
    let mut evil = shop.clone();
    evil.server_names = vec!["shop.test; include /etc/passwd".to_owned()];
    let err = t
        .stack
        .switch_nginx(&evil, Slot::Blue)
        .unwrap_err()
        .to_string();
    assert!(err.contains("server name of app shop"), "{err}");
}

/// nginx reloads on a switch only when the app's file changes: here when the package's nginx
/// snippet does. Copies of snippets no file includes are removed.
#[test]
fn only_a_changed_nginx_snippet_reloads_nginx() {
    let t = TestStack::new(&["shop"]);
    let shared = shared_release("v1");
    let plain = site("shop", "shop.test", &shared);
    t.deploy(&plain, Slot::Blue, "v1");
    let snippets = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(t.stack.nginx_prefix().join("snippets"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let with_robots = |name: &str, text: &str| {
        let release = overlay_release(
            t.root.path(),
            name,
            &shared,
            &[(
                "deploy/nginx.conf",
                &format!("location = /robots.txt {{ return 200 \"{text}\\n\"; }}\n"),
            )],
        );
        let mut site = overlay_site("shop", "shop.test", &release, &shared);
        site.nginx_snippet = Some("deploy/nginx.conf".into());
        site
    };

    // A snippet appears: the file changes, nginx reloads (new workers) and serves it.
    let before = nginx_workers(&t.stack);
    t.deploy(&with_robots("robots-a", "a"), Slot::Green, "v1");
    t.stack.stop_slot("shop", Slot::Blue).unwrap();
    assert_ne!(
        nginx_workers(&t.stack),
        before,
        "a new snippet needs a reload"
    );
    assert_eq!(get(t.front(), "shop.test", "/robots.txt").body, "a\n");
    assert_eq!(snippets().len(), 1, "{:?}", snippets());

    // The same snippet in another release: no reload.
    let before = nginx_workers(&t.stack);
    t.deploy(&with_robots("robots-a2", "a"), Slot::Blue, "v1");
    t.stack.stop_slot("shop", Slot::Green).unwrap();
    assert_eq!(
        nginx_workers(&t.stack),
        before,
        "same snippet, yet nginx reloaded"
    );
    assert_eq!(t.stack.live_slot("shop").unwrap(), Some(Slot::Blue));
    assert!(get(t.front(), "shop.test", "/").body.contains("slot blue"));

    // A changed snippet: reload, and only the new copy is left.
    t.deploy(&with_robots("robots-b", "b"), Slot::Green, "v1");
    t.stack.stop_slot("shop", Slot::Blue).unwrap();
    assert_ne!(
        nginx_workers(&t.stack),
        before,
        "a changed snippet needs a reload"
    );
    assert_eq!(get(t.front(), "shop.test", "/robots.txt").body, "b\n");
    let left = snippets();
    assert_eq!(left.len(), 1, "{left:?}");
    let app_file = std::fs::read_to_string(t.stack.nginx_app_file("shop")).unwrap();
    assert!(app_file.contains(&left[0]), "{left:?} not in {app_file}");
}

/// (d) A release that fails its health check is never switched to; the old slot keeps serving.
#[test]
fn unhealthy_release_is_never_switched_to() {
    let mut t = TestStack::new(&["shop"]);
    let shared = shared_release("v1");
    let v1 = site("shop", "shop.test", &shared);
    t.deploy(&v1, Slot::Blue, "v1");

    let mut settings = t.stack.settings().clone();
    settings.timeouts.health = Duration::from_secs(3);
    t.stack = WebStack::new(settings).unwrap();
    // Settings that do not import: Django answers 500 on every request.
    let mut broken = site("shop", "shop.test", &shared_release("v2"));
    broken.env.insert(
        "DJANGO_SETTINGS_MODULE".to_owned(),
        "mysite.no_such_settings".to_owned(),
    );
    t.stack
        .start_slot(&broken, Slot::Green)
        .unwrap_or_else(|e| panic!("{e}"));
    let err = t
        .stack
        .health_check("shop", Slot::Green, "/health", Some("v2"))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WebError::Unhealthy { .. }), "{msg}");
    assert!(
        msg.contains("HTTP 500") && msg.contains("shop") && msg.contains("green"),
        "{msg}"
    );
    // What an agent does next: stop the failed slot; nginx was never touched.
    t.stack
        .stop_slot("shop", Slot::Green)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.stack.live_slot("shop").unwrap(), Some(Slot::Blue));
    assert_serves(t.front(), "shop.test", "v1");

    // A healthy release of the wrong version does not pass either.
    t.stack
        .start_slot(&v1, Slot::Green)
        .unwrap_or_else(|e| panic!("{e}"));
    let err = t
        .stack
        .health_check("shop", Slot::Green, "/health", Some("v2"))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("answered version Some(\"v1\"), expected \"v2\""),
        "{err}"
    );
}

/// (e) Removing an app stops both its slots and the front answers 404 for its names.
#[test]
fn remove_app_stops_slots_and_front_answers_404() {
    let t = TestStack::new(&["shop", "blog"]);
    let shared = shared_release("v1");
    let shop = site("shop", "shop.test", &shared);
    let blog = site("blog", "blog.test", &shared);
    t.deploy(&shop, Slot::Blue, "v1");
    t.deploy(&blog, Slot::Blue, "v1");
    t.stack
        .start_slot(&shop, Slot::Green)
        .unwrap_or_else(|e| panic!("{e}"));
    let shop_pids =
        [Slot::Blue, Slot::Green].map(|s| t.stack.slot_pid("shop", s).unwrap().unwrap());

    t.stack.remove_app("shop").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(t.front(), "shop.test", "/").status, 404);
    assert_serves(t.front(), "blog.test", "v1");
    for pid in shop_pids {
        assert!(!alive(pid), "Apache pid {pid} still runs");
    }
    assert_eq!(t.stack.live_slot("shop").unwrap(), None);
    assert!(!t.stack.slot_dir("shop", Slot::Blue).exists());
    // nginx's records of the app go too; the blog's stay.
    assert!(std::fs::symlink_metadata(t.stack.nginx_live_link("shop")).is_err());
    assert!(t.stack.nginx_live_link("blog").exists());
    let slot_dirs: Vec<String> = std::fs::read_dir(t.stack.nginx_prefix().join("slots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        slot_dirs.iter().all(|d| d.starts_with("blog.")) && !slot_dirs.is_empty(),
        "{slot_dirs:?}"
    );
    assert_eq!(
        t.stack
            .known_apps()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["blog"]
    );
    // Removing again is a no-op.
    t.stack.remove_app("shop").unwrap();
}

/// (f) The rendered configs, with the temp root filtered out.
#[test]
fn rendered_configs_snapshots() {
    let root = temp_root("milky-snap-");
    let front = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
    let mut settings = WebSettings::new(root.path().join("web"), front);
    settings
        .slot_ports
        .fixed
        .insert("shop".to_owned(), [8101, 8102]);
    let stack = WebStack::new(settings).unwrap();
    let release = root.path().join("apps/shop/releases/v1");
    let mut site = site("shop", "shop.example.com", &release);
    site.server_names.push("www.shop.example.com".to_owned());
    site.nginx_snippet = Some("deploy/nginx.conf".into());
    site.apache_snippet = Some("deploy/apache.conf".into());
    // The nginx snippet is read: its copy is named by its contents.
    std::fs::create_dir_all(release.join("deploy")).unwrap();
    std::fs::write(
        release.join("deploy/nginx.conf"),
        "client_max_body_size 20m;\n",
    )
    .unwrap();
    site.env.insert(
        "DJANGO_SETTINGS_MODULE".to_owned(),
        "mysite.settings".to_owned(),
    );
    site.env
        .insert("QUOTED".to_owned(), "a \"b\"\n'c'".to_owned());

    let root_str = root.path().display().to_string();
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(&root_str), "[ROOT]");
    settings.bind(|| {
        insta::assert_snapshot!(
            "apache_slot_conf",
            stack.render_apache(&site, Slot::Green).unwrap()
        );
        insta::assert_snapshot!(
            "apache_wsgi",
            stack.render_wsgi(&site, Slot::Green).unwrap()
        );
        insta::assert_snapshot!("nginx_app_conf", stack.render_nginx_app(&site).unwrap());
        let includes = [stack.nginx_app_file("shop")];
        insta::assert_snapshot!(
            "nginx_main_conf",
            stack.render_nginx_main(&includes, false).unwrap()
        );
    });
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// A server can replace a template with a file of the same name.
#[test]
fn templates_can_be_overridden_per_server() {
    let root = temp_root("milky-tpl-");
    let overrides = root.path().join("templates");
    std::fs::create_dir_all(&overrides).unwrap();
    let mut f = std::fs::File::create(overrides.join("nginx-app.conf.j2")).unwrap();
    writeln!(f, "# custom for {{{{ app }}}} via {{{{ live_link }}}}").unwrap();
    let mut settings = WebSettings::new(root.path().join("web"), "127.0.0.1:8080".parse().unwrap());
    settings
        .slot_ports
        .fixed
        .insert("shop".to_owned(), [8101, 8102]);
    settings.template_dir = Some(overrides);
    let stack = WebStack::new(settings).unwrap();
    let site = site("shop", "shop.test", &root.path().join("release"));
    let text = stack.render_nginx_app(&site).unwrap();
    let live = stack.nginx_live_link("shop");
    assert!(
        text.ends_with(&format!("# custom for shop via {}\n", live.display())),
        "{text}"
    );
    // The header comes from the agent, not the template, so overrides cannot lose it.
    assert!(
        text.starts_with("# milky-site: default=false https=false\n"),
        "{text}"
    );
    // The other templates stay the embedded ones.
    assert!(
        stack
            .render_apache(&site, Slot::Blue)
            .unwrap()
            .contains("WSGIDaemonProcess shop-blue")
    );
}

/// Slot ports from the range are handed out once, survive a restart and are freed on removal.
#[test]
fn slot_ports_are_allocated_once_and_freed() {
    let root = temp_root("milky-ports-");
    // Nothing binds these: the range is only written down.
    let reserved = Ports::one().unwrap();
    let first = reserved.first();
    let mut settings = WebSettings::new(root.path().join("web"), "127.0.0.1:8080".parse().unwrap());
    settings.slot_ports = SlotPorts {
        fixed: BTreeMap::new(),
        first,
        last: first.saturating_add(200),
    };
    let stack = WebStack::new(settings.clone()).unwrap();
    let shop = [Slot::Blue, Slot::Green].map(|s| stack.slot_port("shop", s).unwrap());
    let blog = [Slot::Blue, Slot::Green].map(|s| stack.slot_port("blog", s).unwrap());
    assert_ne!(shop[0], shop[1]);
    assert!(shop.iter().all(|p| !blog.contains(p)), "{shop:?} {blog:?}");
    let again = WebStack::new(settings).unwrap();
    assert_eq!(again.slot_port("shop", Slot::Green).unwrap(), shop[1]);
    again.remove_app("shop").unwrap();
    let text = std::fs::read_to_string(root.path().join("web/ports.toml")).unwrap();
    assert!(!text.contains("shop") && text.contains("blog"), "{text}");
}

/// After a crash or reboot (nginx gone, a reload left pending) `ensure_nginx` brings the front
/// back with the config on disk.
#[test]
fn ensure_nginx_recovers_after_nginx_died() {
    let t = TestStack::new(&["shop"]);
    let shop = site("shop", "shop.test", &shared_release("v1"));
    t.deploy(&shop, Slot::Blue, "v1");
    // What a reboot does to nginx: the master and its workers are gone.
    let master = t.stack.nginx_pid().unwrap().expect("nginx runs");
    // Its whole process group at once (the daemonized master leads it): a worker the master
    // forks for the deploy's reload after a listing of its children would be missed, and would
    // keep the front port.
    signal_group(master, Signal::KILL).unwrap();
    assert!(
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            !group_alive(master)
        }),
        "nginx's process group {master} did not die"
    );
    std::fs::write(t.stack.nginx_prefix().join("reload-pending"), "shop").unwrap();
    t.stack.ensure_nginx().unwrap_or_else(|e| panic!("{e}"));
    assert!(!t.stack.nginx_prefix().join("reload-pending").exists());
    assert_serves(t.front(), "shop.test", "v1");
}

/// An app file written by an older agent (an `upstream` to the live slot's port, which its
/// header names) is read back as it routes, and the next switch replaces it.
#[test]
fn an_older_agents_nginx_file_is_read_back_and_replaced() {
    let t = TestStack::new(&["shop"]);
    let v1 = site("shop", "shop.test", &shared_release("v1"));
    t.deploy(&v1, Slot::Blue, "v1");
    let blue_port = t.stack.slot_port("shop", Slot::Blue).unwrap();
    let legacy = format!(
        "# milky-live: slot=blue port={blue_port} default=false\n\
         upstream milky_shop {{\n    server 127.0.0.1:{blue_port};\n}}\n\
         server {{\n    listen 127.0.0.1:{};\n    server_name shop.test;\n    \
         location / {{\n        proxy_pass http://milky_shop;\n        proxy_set_header Host $host;\n    }}\n}}\n",
        t.front()
    );
    std::fs::write(t.stack.nginx_app_file("shop"), legacy).unwrap();
    std::fs::remove_file(t.stack.nginx_live_link("shop")).unwrap();
    std::fs::write(t.stack.nginx_prefix().join("reload-pending"), "shop").unwrap();
    t.stack.ensure_nginx().unwrap_or_else(|e| panic!("{e}"));
    assert_serves(t.front(), "shop.test", "v1");
    assert_eq!(t.stack.live_slot("shop").unwrap(), Some(Slot::Blue));

    let v2 = site("shop", "shop.test", &shared_release("v2"));
    t.deploy(&v2, Slot::Green, "v2");
    t.stack.stop_slot("shop", Slot::Blue).unwrap();
    assert_serves(t.front(), "shop.test", "v2");
    assert_eq!(t.stack.live_slot("shop").unwrap(), Some(Slot::Green));
    let file = std::fs::read_to_string(t.stack.nginx_app_file("shop")).unwrap();
    assert!(
        file.starts_with("# milky-site: default=false https=false\n"),
        "{file}"
    );
}

/// Log lines of the code run under [`capture_log`].
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with its log (tracing) captured; returns its result and the log.
fn capture_log<T>(f: impl FnOnce() -> T) -> (T, String) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    (result, log)
}

/// A WSGI app whose `/slow` answers after ten minutes: a request held open on the old slot, as a
/// long download, a stream or a long poll would.
const HOLDING_APP: &str = r#"import time

def application(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        time.sleep(600)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"#;

/// (h) A request still running on the old slot holds its stop no longer than `stop_timeout`:
/// then the slot is killed, Apache and mod_wsgi's daemons, and a warning says what was open.
#[test]
fn a_request_held_open_on_the_old_slot_bounds_its_stop() {
    let t = TestStack::new(&["hold"]);
    let mut settings = t.stack.settings().clone();
    settings.timeouts.drain = Duration::from_secs(2);
    settings.timeouts.stop = Duration::from_secs(4);
    let stack = WebStack::new(settings).unwrap_or_else(|e| panic!("{e}"));
    let shared = shared_release("v1");
    let holding_site = |name: &str| {
        let release = overlay_release(
            t.root.path(),
            name,
            &shared,
            &[("hold_wsgi.py", HOLDING_APP)],
        );
        let mut site = AppSite::new("hold", "hold.test", &release, "hold_wsgi.py");
        site.venv_dir = shared.join("venv");
        site
    };
    let deploy = |site: &AppSite, slot: Slot| {
        stack
            .start_slot(site, slot)
            .unwrap_or_else(|e| panic!("{e}"));
        stack
            .health_check("hold", slot, "/", None)
            .unwrap_or_else(|e| panic!("{e}"));
        stack
            .switch_nginx(site, slot)
            .unwrap_or_else(|e| panic!("{e}"));
    };
    deploy(&holding_site("one"), Slot::Blue);
    let blue = stack
        .slot_pid("hold", Slot::Blue)
        .unwrap()
        .expect("blue runs");
    let blue_port = stack.slot_port("hold", Slot::Blue).unwrap();

    // A request through nginx that the old slot is still answering when the switch comes.
    let mut held = std::net::TcpStream::connect(("127.0.0.1", t.front())).unwrap();
    write!(held, "GET /slow HTTP/1.1\r\nHost: hold.test\r\n\r\n").unwrap();
    let reached = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        open_connections(blue_port) > 0
    });
    assert!(reached, "the held request never reached the blue slot");

    deploy(&holding_site("two"), Slot::Green);
    let (stopped, log) = capture_log(|| stack.stop_slot("hold", Slot::Blue));
    eprintln!("{log}");
    stopped.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        log.contains("the old slot did not stop within 4s ([web] stop_timeout): 1 connection(s) to it still open"),
        "no warning of the bound in:\n{log}"
    );
    assert!(!alive(blue), "blue's Apache {blue} still runs");
    assert!(
        !group_alive(blue),
        "processes of blue's group {blue} (Apache's workers, mod_wsgi's daemons) still run"
    );
    assert!(!stack.is_running("hold", Slot::Blue).unwrap());
    assert_eq!(open_connections(blue_port), 0);
    // Green serves.
    let r = get(t.front(), "hold.test", "/");
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
}

/// Established TCP connections to local `port` (from /proc/net/tcp and tcp6).
fn open_connections(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local = fields
                        .get(1)
                        .and_then(|l| l.rsplit_once(':'))
                        .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
                    local == Some(port) && fields.get(3) == Some(&"01")
                })
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .count()
}
