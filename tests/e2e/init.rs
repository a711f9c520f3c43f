//! `cargo milky init` on Django projects as people write them: a fresh `startproject`, and a
//! multi-app site with a settings package and split requirements. The settings overlay it writes
//! is loaded by a real Django, and the package it leads to is listed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use milky_dev_support::copy_project;
use milky_tests::django::fixture_wheels;
use milky_tests::*;
use toml_edit::DocumentMut;

/// The Python of a venv with the fixture's Django, made once per machine: built aside, then
/// renamed into place, so test processes running side by side never use half of one.
fn django_python() -> PathBuf {
    let venv = PathBuf::from("/tmp/milky-test-django-venv");
    let python = venv.join("bin/python");
    if venv.join(".ready").exists() {
        return python;
    }
    let wheels = fixture_wheels();
    let building = PathBuf::from(format!(
        "/tmp/milky-test-django-venv.building-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&building);
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&building)
        .output()
        .expect("run python3 -m venv");
    assert_success(&out, "python3 -m venv");
    let out = Command::new(building.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--find-links",
        ])
        .arg(&wheels)
        .arg("Django==4.2.*")
        .output()
        .expect("run pip install");
    assert_success(&out, "pip install Django from the wheel cache");
    write(&building.join(".ready"), "");
    if std::fs::rename(&building, &venv).is_err() {
        // Another test process got there first.
        let _ = std::fs::remove_dir_all(&building);
    }
    assert!(venv.join(".ready").exists());
    python
}

/// Runs the venv's Python in `project` as a server would: the given settings module and the
/// app's data dir in the environment.
fn python_in(project: &Path, settings: &str, data_dir: &Path, args: &[&str]) -> Output {
    Command::new(django_python())
        .args(args)
        .current_dir(project)
        .env("DJANGO_SETTINGS_MODULE", settings)
        .env("MILKY_DATA_DIR", data_dir)
        .env_remove("PYTHONPATH")
        .output()
        .expect("run the venv's python")
}

fn milky_toml(project: &Path) -> DocumentMut {
    std::fs::read_to_string(project.join("milky.toml"))
        .expect("init wrote milky.toml")
        .parse()
        .expect("milky.toml is TOML")
}

fn strings(doc: &DocumentMut, table: &str, key: &str) -> Vec<String> {
    doc[table][key]
        .as_array()
        .unwrap_or_else(|| panic!("{table}.{key} is an array in\n{doc}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

fn str_of<'a>(doc: &'a DocumentMut, table: &str, key: &str) -> &'a str {
    doc[table][key]
        .as_str()
        .unwrap_or_else(|| panic!("{table}.{key} is a string in\n{doc}"))
}

/// The settings as Django sees them with `settings` and MILKY_DATA_DIR set: STATIC_ROOT, the
/// default database's file, ALLOWED_HOSTS, DEBUG.
fn django_sees(project: &Path, settings: &str, data_dir: &Path) -> Vec<String> {
    let out = python_in(
        project,
        settings,
        data_dir,
        &[
            "-c",
            "import django; django.setup(); from django.conf import settings as s; \
             print(s.STATIC_ROOT); print(s.DATABASES['default']['NAME']); \
             print(','.join(s.ALLOWED_HOSTS)); print(s.DEBUG)",
        ],
    );
    assert_success(&out, &format!("django.setup() with {settings}"));
    stdout(&out).lines().map(str::to_owned).collect()
}

/// `manage.py check`, `migrate` and `collectstatic`, as the hooks run them.
fn manage_py_passes(project: &Path, settings: &str, data_dir: &Path) {
    for args in [
        &["manage.py", "check"][..],
        &["manage.py", "migrate", "--noinput"],
        &["manage.py", "collectstatic", "--noinput"],
    ] {
        let out = python_in(project, settings, data_dir, args);
        assert_success(&out, &args.join(" "));
    }
}

/// The status of GET `path` with `Host: host`, through Django's test client.
fn status_for(project: &Path, settings: &str, data_dir: &Path, host: &str, path: &str) -> String {
    let out = python_in(
        project,
        settings,
        data_dir,
        &[
            "-c",
            "import sys, django; django.setup(); from django.test import Client; \
             print(Client(HTTP_HOST=sys.argv[1]).get(sys.argv[2]).status_code)",
            host,
            path,
        ],
    );
    assert_success(&out, "a request through the test client");
    stdout(&out).trim().to_owned()
}

/// A fresh `django-admin startproject proj`, as a new user starts, in the test's dir.
pub(crate) fn startproject(ctx: &TestContext) -> PathBuf {
    let project = ctx.dir.path().join("proj");
    std::fs::create_dir_all(&project).unwrap();
    let out = Command::new(django_python())
        .args(["-m", "django", "startproject", "proj"])
        .arg(&project)
        .output()
        .unwrap();
    assert_success(&out, "django startproject");
    project
}

#[test]
fn init_fixes_what_would_fail_a_startproject_apps_first_deploy() {
    let ctx = TestContext::new();
    let project = startproject(&ctx);

    let out = ctx.milky_in(&project, &["init", "--yes"]);
    assert_success(&out, "init --yes");
    let said = stderr(&out);
    for needle in [
        "STATIC_ROOT is not set",
        "rejects Host: localhost",
        "the SQLite file db.sqlite3 inside the project",
        "DEBUG = True",
        "server_names = [\"localhost\"]",
    ] {
        assert!(said.contains(needle), "{needle:?} in:\n{said}");
    }
    // DEBUG changes how the app behaves: reported, not fixed without a terminal.
    assert!(said.contains("not applied"), "{said}");

    let doc = milky_toml(&project);
    assert_eq!(str_of(&doc, "app", "name"), "proj");
    assert_eq!(str_of(&doc, "app", "wsgi"), "proj.wsgi:application");
    assert_eq!(str_of(&doc, "app", "settings"), "proj.settings_milky");
    assert_eq!(str_of(&doc, "app", "static_dir"), "static_collected");
    assert_eq!(strings(&doc, "app", "server_names"), ["localhost"]);
    assert_eq!(
        strings(&doc, "package", "exclude"),
        ["/*.sqlite3", "/media/"]
    );
    let overlay = std::fs::read_to_string(project.join("proj/settings_milky.py")).unwrap();
    assert!(overlay.contains("from proj.settings import *"), "{overlay}");
    assert!(!overlay.contains("DEBUG"), "{overlay}");

    // Django loads the overlay and sees the fixes; the hooks' commands pass with it.
    let data = ctx.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let root = project.canonicalize().unwrap();
    let seen = django_sees(&project, "proj.settings_milky", &data);
    assert_eq!(seen[0], root.join("static_collected").display().to_string());
    assert_eq!(seen[1], data.join("db.sqlite3").display().to_string());
    assert_eq!(seen[2], "localhost");
    assert_eq!(seen[3], "True");
    manage_py_passes(&project, "proj.settings_milky", &data);
    assert!(
        data.join("db.sqlite3").is_file(),
        "migrate wrote the data dir"
    );
    assert!(!project.join("db.sqlite3").exists(), "not the project");
    assert!(project.join("static_collected/admin").is_dir());
    assert_eq!(
        status_for(
            &project,
            "proj.settings_milky",
            &data,
            "localhost",
            "/admin/login/"
        ),
        "200",
        "the health check's Host passes ALLOWED_HOSTS"
    );
    // Without MILKY_DATA_DIR (a local run) the database stays where the project had it.
    let out = Command::new(django_python())
        .args([
            "-c",
            "import django; django.setup(); from django.conf import settings as s; print(s.DATABASES['default']['NAME'])",
        ])
        .current_dir(&project)
        .env("DJANGO_SETTINGS_MODULE", "proj.settings_milky")
        .env_remove("MILKY_DATA_DIR")
        .output()
        .unwrap();
    assert_success(&out, "settings without MILKY_DATA_DIR");
    assert_eq!(
        stdout(&out).trim(),
        root.join("db.sqlite3").display().to_string()
    );
}

#[test]
fn init_takes_the_production_settings_of_a_real_layout_and_package_keeps_nested_media() {
    let ctx = TestContext::new();
    let project = ctx.dir.path().join("cms");
    copy_project(&workspace_root().join("tests/fixtures/cms-site"), &project)
        .expect("copy the fixture");
    // Uploads stay out of git, as in most projects (media/uploads/ is in the fixture to show
    // they stay out of the package too).
    write(&project.join(".gitignore"), "/media/\n");
    // A git checkout, so `package` can tell what an exclude drops.
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.org",
            "commit",
            "-qm",
            "site",
        ],
    ] {
        let out = Command::new("git")
            .args(args)
            .current_dir(&project)
            .output()
            .unwrap();
        assert_success(&out, &format!("git {}", args.join(" ")));
    }

    let out = ctx.milky_in(&project, &["init", "--yes"]);
    assert_success(&out, "init --yes");
    let said = stderr(&out);
    assert!(said.contains("STATIC_ROOT is not set"), "{said}");
    assert!(said.contains("db.sqlite3 inside the project"), "{said}");
    assert!(
        !said.contains("rejects Host"),
        "production's hosts pass: {said}"
    );
    assert!(
        said.contains("cms.settings.dev (development, named in cms/wsgi.py and manage.py)"),
        "{said}"
    );

    let doc = milky_toml(&project);
    assert_eq!(
        str_of(&doc, "app", "settings"),
        "cms.settings.production_milky"
    );
    assert_eq!(str_of(&doc, "app", "wsgi"), "cms.wsgi:application");
    assert_eq!(
        str_of(&doc, "app", "requirements"),
        "requirements/production.txt"
    );
    assert_eq!(str_of(&doc, "app", "static_dir"), "static_collected");
    assert_eq!(strings(&doc, "app", "server_names"), ["cms.example.org"]);
    assert_eq!(
        strings(&doc, "package", "exclude"),
        ["/*.sqlite3", "/media/"]
    );
    let overlay =
        std::fs::read_to_string(project.join("cms/settings/production_milky.py")).unwrap();
    assert!(
        overlay.contains("from cms.settings.production import *"),
        "{overlay}"
    );
    assert!(overlay.contains("parents[2]"), "{overlay}");

    let data = ctx.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let root = project.canonicalize().unwrap();
    let settings = "cms.settings.production_milky";
    let seen = django_sees(&project, settings, &data);
    assert_eq!(seen[0], root.join("static_collected").display().to_string());
    assert_eq!(seen[1], data.join("db.sqlite3").display().to_string());
    assert_eq!(seen[2], "cms.example.org,www.cms.example.org");
    assert_eq!(seen[3], "False");
    manage_py_passes(&project, settings, &data);
    assert!(data.join("db.sqlite3").is_file());
    // The first server name passes ALLOWED_HOSTS, and the relative template dir is found.
    assert_eq!(
        status_for(&project, settings, &data, "cms.example.org", "/"),
        "200"
    );

    // The anchored excludes keep the app's fixture media and drop only the top-level uploads.
    let out_dir = ctx.dir.path().join("out");
    let out = ctx.milky_in(
        &project,
        &[
            "package",
            "--version",
            "v1",
            "--out-dir",
            out_dir.to_str().unwrap(),
        ],
    );
    assert_success(&out, "package");
    assert!(!stderr(&out).contains("leaves out"), "{}", stderr(&out));
    let listing = Command::new("tar")
        .arg("-tjf")
        .arg(out_dir.join("cms-v1.tar.bz2"))
        .output()
        .unwrap();
    assert_success(&listing, "tar -tjf");
    let listing = stdout(&listing);
    for packed in [
        "app/fixtures/media/doc.txt",
        "app/fixtures/media/images/one.txt",
        "app/fixtures/media/images/two.txt",
        "templates/home.html",
        "requirements/production.txt",
        "cms/settings/production_milky.py",
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.trim_start_matches("./") == packed),
            "{packed} in:\n{listing}"
        );
    }
    assert!(!listing.contains("local-upload.txt"), "{listing}");

    // The unanchored pattern init used to write drops tracked files, and package says so.
    let path = project.join("milky.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Only the exclude (media_url is "/media/" too).
    std::fs::write(&path, text.replacen(", \"/media/\"]", ", \"media/\"]", 1)).unwrap();
    let out = ctx.milky_in(
        &project,
        &[
            "package",
            "--version",
            "v2",
            "--out-dir",
            out_dir.to_str().unwrap(),
        ],
    );
    assert_success(&out, "package with an unanchored exclude");
    let said = stderr(&out);
    assert!(
        said.contains(
            "exclude \"media/\" leaves out 4 files that git tracks: app/fixtures/media/doc.txt, app/fixtures/media/images/one.txt, app/fixtures/media/images/three.txt and 1 more"
        ),
        "{said}"
    );
    assert!(
        said.contains("\"/media/\""),
        "the anchored form is suggested: {said}"
    );
}

#[test]
fn init_reports_an_ssl_redirect_the_health_check_cannot_pass() {
    let ctx = TestContext::new();
    let project = ctx.dir.path().join("shop");
    write(
        &project.join("manage.py"),
        "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'shop.settings')\n",
    );
    write(&project.join("shop/__init__.py"), "");
    write(&project.join("shop/wsgi.py"), "application = None\n");
    write(
        &project.join("shop/settings.py"),
        "from pathlib import Path\nBASE_DIR = Path(__file__).resolve().parent.parent\n\
         DEBUG = False\nALLOWED_HOSTS = ['*']\nSTATIC_ROOT = BASE_DIR / 'static'\n\
         SECURE_SSL_REDIRECT = True\n",
    );
    let out = ctx.milky_in(&project, &["init", "--yes"]);
    assert_success(&out, "init --yes");
    let said = stderr(&out);
    assert!(
        said.contains("SECURE_SSL_REDIRECT = True without SECURE_PROXY_SSL_HEADER"),
        "{said}"
    );
    assert!(
        said.contains("SECURE_PROXY_SSL_HEADER = (\"HTTP_X_FORWARDED_PROTO\", \"https\")"),
        "the exact fix: {said}"
    );
    assert!(said.contains("not applied"), "{said}");
    assert!(said.contains("1 problem above is not fixed"), "{said}");
    let doc = milky_toml(&project);
    // Nothing was applied: the servers use the project's own settings.
    assert_eq!(str_of(&doc, "app", "settings"), "shop.settings");
    assert_eq!(str_of(&doc, "app", "static_dir"), "static");
    assert!(doc["app"].get("server_names").is_none(), "{doc}");
    assert!(!project.join("shop/settings_milky.py").exists());
}
