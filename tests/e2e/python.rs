//! A Python per app: apps on two Pythons on one server, each in Apache instances of its own
//! (the one on the system's Python with the distribution's mod_wsgi, the other with the
//! mod_wsgi the agent builds for its Python), installed with uv, from a uv lock exactly as
//! locked; and an app that asks for a Python the server lacks, refused before download.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use milky_dev_support::http_get;

use milky_tests::agent::Agent;
use milky_tests::django::fixture_project;
use milky_tests::pythons::{mod_wsgi_cache, test_python, tools_python, uv, uv_cache, uv_on_path};
use milky_tests::*;

/// The fixture as `name`, with no vendored wheels, its data in its own data dir, and a page
/// that says which Python and Django serve it.
fn project(ctx: &TestContext, name: &str) -> PathBuf {
    let project = fixture_project(ctx.dir.path(), name, "v1");
    std::fs::remove_dir_all(project.join("wheels")).unwrap();
    std::fs::remove_file(project.join("requirements.txt")).unwrap();
    let settings = project.join("mysite/settings.py");
    let text = std::fs::read_to_string(&settings).unwrap();
    let db = r#"os.environ.get("MILKY_DB_PATH", str(BASE_DIR / "db.sqlite3"))"#;
    assert!(text.contains(db), "the fixture's database setting moved");
    std::fs::write(
        &settings,
        text.replace(
            db,
            r#"os.path.join(os.environ["MILKY_DATA_DIR"], "db.sqlite3")"#,
        ),
    )
    .unwrap();
    let views = project.join("pages/views.py");
    let text = std::fs::read_to_string(&views).unwrap();
    let answer = "    return HttpResponse(body, content_type=\"text/plain\")";
    std::fs::write(
        &views,
        format!("import sys\nimport django\n{text}").replacen(
            answer,
            &format!("    body = f\"python {{sys.version_info[0]}}.{{sys.version_info[1]}} django {{django.get_version()}}\\n\" + body\n{answer}"),
            1,
        ),
    )
    .unwrap();
    project
}

fn init(ctx: &TestContext, project: &Path, name: &str) -> String {
    assert_success(
        &ctx.milky_in(project, &["init", "--yes", "--name", name]),
        "init",
    );
    std::fs::read_to_string(project.join("milky.toml")).unwrap()
}

/// `(name, version)` of every package of a uv lock that comes from an index, and the names
/// some dependency names only under a marker (`tzdata; sys_platform == 'win32'`).
fn locked(lock: &Path) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let doc: toml_edit::DocumentMut = std::fs::read_to_string(lock).unwrap().parse().unwrap();
    let packages = doc["package"]
        .as_array_of_tables()
        .expect("uv.lock lists packages");
    let pinned = packages
        .iter()
        .filter(|p| p.get("source").and_then(|s| s.get("registry")).is_some())
        .map(|p| {
            (
                normalize(p["name"].as_str().unwrap()),
                p["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let gated = packages
        .iter()
        .filter_map(|p| p.get("dependencies")?.as_array().cloned())
        .flat_map(|deps| deps.into_iter())
        .filter_map(|dep| {
            let dep = dep.as_inline_table()?;
            dep.get("marker")?;
            Some(normalize(dep.get("name")?.as_str()?))
        })
        .collect();
    (pinned, gated)
}

/// `(name, version)` of every package in a venv, as uv lists them.
fn installed(venv: &Path) -> BTreeSet<(String, String)> {
    let out = Command::new(uv())
        .args(["pip", "freeze", "--python"])
        .arg(venv.join("bin/python"))
        .output()
        .unwrap();
    assert_success(&out, "uv pip freeze");
    stdout(&out)
        .lines()
        .filter_map(|l| l.split_once("=="))
        .map(|(n, v)| (normalize(n), v.trim().to_owned()))
        .collect()
}

/// `upload --wheels` of `project` as `version`, the wheels fetched for CPython `python` on
/// manylinux by a 3.11 pip (and the lock exported by uv): the server installs them offline.
fn upload_with_wheels(ctx: &TestContext, project: &Path, version: &str, python: &str) {
    milky_tests::django::set_fixture_version(project, version);
    let args = [
        "upload",
        "--new-group",
        "-g",
        "stable",
        "--version",
        version,
        "--level",
        "1",
        "--wheels",
        "--python",
    ];
    let out = ctx
        .milky_command(project, &args)
        .arg(tools_python())
        .env("PATH", uv_on_path(ctx.dir.path()))
        .output()
        .unwrap();
    assert_success(&out, &format!("upload {version} with wheels for {python}"));
    let said = format!("CPython {python} on manylinux");
    assert!(stderr(&out).contains(&said), "{}", stderr(&out));
}

/// Requests in a loop through a server's nginx, counted, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    counts: Arc<(AtomicU64, AtomicU64)>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, host: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let workers = (0..2)
            .map(|_| {
                let (stop, counts) = (stop.clone(), counts.clone());
                std::thread::spawn(move || {
                    let start = std::time::Instant::now();
                    // Bounded in time whatever happens to the test.
                    while !stop.load(Ordering::Relaxed)
                        && start.elapsed() < Duration::from_secs(300)
                    {
                        match http_get(port, host, "/") {
                            Ok(r) if r.status == 200 => counts.0.fetch_add(1, Ordering::Relaxed),
                            _ => counts.1.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        Self {
            stop,
            counts,
            workers,
        }
    }

    /// Requests that succeeded and that failed.
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.join().unwrap();
        }
        (
            self.counts.0.load(Ordering::Relaxed),
            self.counts.1.load(Ordering::Relaxed),
        )
    }
}

fn normalize(name: &str) -> String {
    name.to_lowercase().replace('_', "-")
}

#[test]
fn apps_on_two_pythons_share_a_server_switch_python_and_a_missing_python_is_refused() {
    let ctx = TestContext::new();
    let py313 = test_python("3.13");
    let py312 = test_python("3.12");

    // A uv project on Django 6 (which needs Python >= 3.12), pinned to 3.12 first, locked.
    let modern = project(&ctx, "modern");
    write(
        &modern.join("pyproject.toml"),
        "[project]\nname = \"modern\"\nversion = \"1\"\nrequires-python = \">=3.12\"\ndependencies = [\"django>=6,<7\"]\n",
    );
    write(&modern.join(".python-version"), "3.12.1\n");
    let out = Command::new(uv())
        .args(["lock", "--quiet"])
        .current_dir(&modern)
        .env("UV_CACHE_DIR", uv_cache())
        .env("UV_PYTHON", &py313)
        .env("UV_PYTHON_DOWNLOADS", "never")
        .output()
        .unwrap();
    assert_success(&out, "uv lock");
    let manifest = init(&ctx, &modern, "modern");
    assert!(manifest.contains("python = \"3.12\""), "{manifest}");
    assert!(
        manifest.contains("requirements = \"uv.lock\""),
        "{manifest}"
    );
    upload_with_wheels(&ctx, &modern, "v1", "3.12");

    // Django 5.2 from a requirements file, on the server's default Python (3.11).
    let classic = project(&ctx, "classic");
    write(&classic.join("requirements.txt"), "Django==5.2.*\n");
    let manifest = init(&ctx, &classic, "classic");
    assert!(
        manifest.contains("# python = \"3.13\""),
        "no Python asked: {manifest}"
    );
    ctx.upload(&classic, "stable", "v1");

    let tools = format!(
        "[python]\ndiscover = false\ninterpreters = [\"{}\", \"{}\"]\nuv = \"{}\"\ncache = \"{}\"\nmod_wsgi_dir = \"{}\"\n",
        py312.display(),
        py313.display(),
        uv().display(),
        uv_cache().display(),
        mod_wsgi_cache().display()
    );
    let agent = Agent::with_settings(&ctx, "stable", "web-1", &ctx.endpoint, &tools);
    let out = agent.sync();
    assert_success(&out, "first sync");

    let page = agent.get("modern", "/");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.starts_with("python 3.12 django 6."),
        "{}",
        page.body
    );
    let page = agent.get("classic", "/");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.starts_with("python 3.11 django 5.2"),
        "{}",
        page.body
    );
    // Each in its own Apache: the one on 3.13 loads that Python and the mod_wsgi built for it.
    let conf = |app: &str| {
        std::fs::read_to_string(agent.root.join(format!("web/apache/{app}/blue/httpd.conf")))
            .unwrap_or_else(|e| panic!("{app}'s blue slot config: {e}"))
    };
    let modern_conf = conf("modern");
    assert!(
        modern_conf.contains("LoadFile /opt/milky-test-py312/lib/libpython3.12.so"),
        "{modern_conf}"
    );
    assert!(
        modern_conf.contains(&format!(
            "LoadModule wsgi_module {}/py3.12.1-",
            mod_wsgi_cache().display()
        )),
        "{modern_conf}"
    );
    assert!(!conf("classic").contains("LoadFile"));
    // Exactly the locked versions, nothing else; left out only what this platform's markers
    // leave out.
    let venv = agent.release_dir("modern", "v1").join("venv");
    let (pinned, gated) = locked(&modern.join("uv.lock"));
    let installed = installed(&venv);
    assert!(
        installed.is_subset(&pinned),
        "{installed:?} not all in {pinned:?}"
    );
    for (name, _) in pinned.difference(&installed) {
        assert!(gated.contains(name), "{name} is locked but not installed");
    }
    assert!(installed.iter().any(|(name, _)| name == "django"));

    // The app moves to 3.13 while requests keep coming: none fails.
    let load = Load::start(agent.front, "modern");
    let text = std::fs::read_to_string(modern.join("milky.toml")).unwrap();
    std::fs::write(
        modern.join("milky.toml"),
        text.replace("python = \"3.12\"", "python = \"3.13\""),
    )
    .unwrap();
    upload_with_wheels(&ctx, &modern, "v2", "3.13");
    assert_success(&agent.sync(), "sync to v2 on 3.13");
    let (ok, failed) = load.stop();
    eprintln!("requests during the switch from 3.12 to 3.13: {ok} ok, {failed} failed");
    assert!(ok > 0, "the load loop ran");
    assert_eq!(failed, 0, "no request failed while the app changed Python");
    let page = agent.get("modern", "/");
    assert!(
        page.body.starts_with("python 3.13 django 6."),
        "{}",
        page.body
    );
    let green =
        std::fs::read_to_string(agent.root.join("web/apache/modern/green/httpd.conf")).unwrap();
    assert!(
        green.contains("LoadFile /opt/milky-test-py313/lib/libpython3.13.so"),
        "{green}"
    );

    // A release that asks for a Python this server lacks: refused before download, v1 serves.
    let text = std::fs::read_to_string(classic.join("milky.toml")).unwrap();
    std::fs::write(
        classic.join("milky.toml"),
        text.replacen("[app]\n", "[app]\npython = \"3.14\"\n", 1),
    )
    .unwrap();
    ctx.upload(&classic, "stable", "v2");
    let out = agent.sync();
    for needle in [
        "classic needs Python 3.14",
        "3.13.0 (/opt/milky-test-py313/bin/python3.13)",
        "install_server.sh --python 3.14",
    ] {
        assert!(
            stderr(&out).contains(needle),
            "{needle:?} missing from:\n{}",
            stderr(&out)
        );
    }
    assert!(!out.status.success());
    assert!(
        !agent.release_dir("classic", "v2").exists(),
        "nothing was downloaded"
    );
    let page = agent.get("classic", "/");
    assert_eq!(page.header("X-Milky-Version").as_deref(), Some("v1"));
    assert_eq!(agent.get("modern", "/").status, 200);
    let status = ctx.milky(&["status", "stable"]);
    assert!(
        stdout(&status).contains("classic needs Python 3.14"),
        "status shows why:\n{}",
        stdout(&status)
    );
}
