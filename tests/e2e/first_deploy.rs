//! Django projects as people write them, deployed with only what `cargo milky init` wrote: a
//! fresh `startproject` on two servers, and a multi-app site with a settings package, split
//! requirements, templates found by a relative path, uploads in the data dir and seed media
//! loaded by a first-deploy hook. Real store, nginx, Apache mod_wsgi and Django.

use std::path::{Path, PathBuf};

use milky_dev_support::copy_project;
use milky_tests::agent::Agent;
use milky_tests::django::fixture_wheels;
use milky_tests::*;

use crate::init::startproject;

/// The fixture's wheels in `project/wheels`, so servers install offline.
fn vendor_wheels(project: &Path) {
    let wheels = project.join("wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    for entry in std::fs::read_dir(fixture_wheels()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().ends_with(".whl") {
            std::fs::copy(entry.path(), wheels.join(entry.file_name())).unwrap();
        }
    }
}

/// How many times the hooks log of `app` on `agent` says `hook` finished.
fn hook_runs(agent: &Agent, app: &str, hook: &str) -> usize {
    let log = std::fs::read_to_string(agent.root.join(format!("logs/hooks/{app}.log")))
        .unwrap_or_default();
    log.lines()
        .filter(|line| line.contains(&format!("[{hook}] finished in")))
        .count()
}

fn data_dir(agent: &Agent, app: &str) -> PathBuf {
    agent.root.join("data").join(app)
}

#[test]
fn a_startproject_app_serves_on_its_first_upload_on_two_servers() {
    let ctx = TestContext::new();
    let project = startproject(&ctx);
    // What a user adds on day one: their requirements, and a view that writes to the database.
    write(&project.join("requirements.txt"), "Django==4.2.*\n");
    vendor_wheels(&project);
    let urls = project.join("proj/urls.py");
    let mut text = std::fs::read_to_string(&urls).unwrap();
    text.push_str(
        "\nfrom django.contrib.auth.models import User\nfrom django.http import HttpResponse\n\n\n\
         def hit(request):\n    User.objects.create(username=f\"visitor{User.objects.count()}\")\n    \
         return HttpResponse(str(User.objects.count()))\n\n\n\
         urlpatterns += [path(\"hit/\", hit), path(\"\", lambda request: HttpResponse(\"home\"))]\n",
    );
    write(&urls, &text);

    assert_success(&ctx.milky_in(&project, &["init", "--yes"]), "init --yes");
    ctx.upload(&project, "stable", "v1");

    let servers = [
        Agent::new(&ctx, "stable", "web-1"),
        Agent::new(&ctx, "stable", "web-2"),
    ];
    for server in &servers {
        let out = server.sync();
        assert_success(&out, &format!("the first pass on {}", server.host));
        let home = server.get("localhost", "/");
        assert_eq!(home.status, 200, "{} /: {}", server.host, home.body);
        assert_eq!(home.header("X-Milky-Version").as_deref(), Some("v1"));
        let css = server.get("localhost", "/static/admin/css/base.css");
        assert_eq!(
            css.status, 200,
            "a collected static file on {}",
            server.host
        );
        // The database is in the server's data dir, outside the release, and writable by the app.
        for expected in ["1", "2"] {
            let hit = server.get("localhost", "/hit/");
            assert_eq!(hit.status, 200, "{} /hit/: {}", server.host, hit.body);
            assert_eq!(hit.body.trim(), expected);
        }
        assert!(data_dir(server, "proj").join("db.sqlite3").is_file());
        assert!(!server.release_dir("proj", "v1").join("db.sqlite3").exists());
        // Each server migrates its own SQLite file, exactly once.
        assert_eq!(
            hook_runs(server, "proj", "python manage.py migrate --noinput"),
            1,
            "migrations on {}",
            server.host
        );
    }
}

/// The settings-package fixture, with what its users add: a command that loads the seed media
/// into MEDIA_ROOT (and counts its runs there), and a view that saves an upload.
fn cms_project(ctx: &TestContext) -> PathBuf {
    let project = ctx.dir.path().join("cms");
    copy_project(&workspace_root().join("tests/fixtures/cms-site"), &project)
        .expect("copy the fixture");
    vendor_wheels(&project);
    write(&project.join("app/management/__init__.py"), "");
    write(&project.join("app/management/commands/__init__.py"), "");
    write(
        &project.join("app/management/commands/load_media.py"),
        "import os\nimport shutil\n\nfrom django.conf import settings\nfrom django.core.management.base import BaseCommand\n\n\n\
         class Command(BaseCommand):\n    def handle(self, *args, **options):\n        \
         source = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures', 'media')\n        \
         shutil.copytree(source, settings.MEDIA_ROOT, dirs_exist_ok=True)\n        \
         with open(os.path.join(settings.MEDIA_ROOT, 'loads.log'), 'a') as log:\n            log.write('loaded\\n')\n",
    );
    let views = project.join("app/views.py");
    let mut text = std::fs::read_to_string(&views).unwrap();
    text.push_str(
        "\n\nfrom django.core.files.base import ContentFile\nfrom django.core.files.storage import default_storage\nfrom django.http import HttpResponse\n\n\n\
         def save(request):\n    name = default_storage.save(request.GET['name'] + '.txt', ContentFile(b'uploaded by a visitor'))\n    \
         return HttpResponse(name)\n",
    );
    write(&views, &text);
    write(
        &project.join("cms/urls.py"),
        "from django.urls import path\n\nfrom app import views\n\nurlpatterns = [path(\"\", views.home), path(\"save/\", views.save)]\n",
    );
    let out = ctx.milky_in(&project, &["init", "--yes", "--name", "cms"]);
    assert_success(&out, "init --yes");
    let path = project.join("milky.toml");
    let mut doc: toml_edit::DocumentMut = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    assert_eq!(doc["app"]["media_url"].as_str(), Some("/media/"), "{doc}");
    let mut first = toml_edit::Array::new();
    first.push("python manage.py load_media");
    doc["hooks"]["first"] = toml_edit::value(first);
    write(&path, &doc.to_string());
    project
}

#[test]
fn a_settings_package_site_serves_first_time_keeps_uploads_and_seeds_once() {
    let ctx = TestContext::new();
    let project = cms_project(&ctx);
    ctx.upload(&project, "stable", "v1");
    let server = Agent::new(&ctx, "stable", "web-1");
    assert_success(&server.sync(), "the first pass");

    // The template is found by a path relative to the project: the app runs from its release.
    let home = server.get("cms.example.org", "/");
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains("<h1>Home</h1>"), "{}", home.body);
    // The first-deploy hook loaded the seed media into the data dir; nginx serves it.
    let seeded = server.get("cms.example.org", "/media/images/one.txt");
    assert_eq!(seeded.status, 200, "seed media through nginx");
    // A visitor's upload lands in MEDIA_ROOT, the data dir's media/, and nginx serves it.
    let saved = server.get("cms.example.org", "/save/?name=visitor");
    assert_eq!(saved.status, 200, "{}", saved.body);
    let uploaded = server.get("cms.example.org", "/media/visitor.txt");
    assert_eq!(uploaded.status, 200);
    assert_eq!(uploaded.body, "uploaded by a visitor");
    let media = data_dir(&server, "cms").join("media");
    assert!(media.join("visitor.txt").is_file());

    // A second version: served, the upload still there, the seed not loaded again.
    ctx.upload(&project, "stable", "v2");
    assert_success(&server.sync(), "the upgrade");
    let home = server.get("cms.example.org", "/");
    assert_eq!(home.header("X-Milky-Version").as_deref(), Some("v2"));
    assert_eq!(
        server.get("cms.example.org", "/media/visitor.txt").status,
        200
    );
    let loads = std::fs::read_to_string(media.join("loads.log")).unwrap();
    assert_eq!(loads.lines().count(), 1, "the first-deploy hook ran again");
    assert_eq!(hook_runs(&server, "cms", "python manage.py load_media"), 1);
    assert!(ctx.object("groups/stable/first/cms/done.toml").is_some());
    let shown = ctx.milky(&["hooks", "show", "stable", "cms", "--json"]);
    assert_success(&shown, "hooks show");
    let shown: serde_json::Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(shown["done"], true, "{shown}");
    assert_eq!(shown["result"]["host"], "web-1", "{shown}");

    // v3 fails its health check everywhere (no such page): the failure says what to change,
    // v2 keeps serving, and rollback from v4 passes over v3, which never served.
    let path = project.join("milky.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    write(
        &path,
        &good.replace("health = \"/\"", "health = \"/missing/\""),
    );
    ctx.upload(&project, "stable", "v3");
    let out = server.sync();
    assert!(!out.status.success(), "v3 must fail its health check");
    assert!(
        stderr(&out).contains("no page at /missing/"),
        "{}",
        stderr(&out)
    );
    let home = server.get("cms.example.org", "/");
    assert_eq!(home.header("X-Milky-Version").as_deref(), Some("v2"));
    write(&path, &good);
    ctx.upload(&project, "stable", "v4");
    assert_success(&server.sync(), "v4");
    let out = ctx.milky(&["rollback", "--dry-run", "stable", "cms"]);
    assert_success(&out, "rollback --dry-run");
    assert!(
        stdout(&out).contains("stable would run cms v2 (rolled back from v4)"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("passed over v3"), "{}", stderr(&out));
    assert!(
        ctx.index().contains("cms = \"v4\""),
        "a dry run writes nothing"
    );
}

#[test]
fn an_ssl_redirect_deployed_anyway_fails_its_health_check_naming_the_redirect() {
    let ctx = TestContext::new();
    let project = startproject(&ctx);
    write(&project.join("requirements.txt"), "Django==4.2.*\n");
    vendor_wheels(&project);
    let settings = project.join("proj/settings.py");
    let mut text = std::fs::read_to_string(&settings).unwrap();
    text.push_str("\nSECURE_SSL_REDIRECT = True\n");
    write(&settings, &text);
    let out = ctx.milky_in(&project, &["init", "--yes"]);
    assert_success(&out, "init --yes");
    assert!(
        stderr(&out).contains("SECURE_SSL_REDIRECT = True"),
        "init reports it:\n{}",
        stderr(&out)
    );
    ctx.upload(&project, "stable", "v1");
    let server = Agent::new(&ctx, "stable", "web-1");
    let out = server.sync();
    assert!(!out.status.success(), "the redirect fails the health check");
    let said = stderr(&out);
    for needle in [
        "HTTP 301",
        "redirect to https://localhost/",
        "SECURE_SSL_REDIRECT",
    ] {
        assert!(said.contains(needle), "{needle:?} in:\n{said}");
    }
    let status = ctx.milky(&["status", "stable", "--json"]);
    assert_success(&status, "status");
    assert!(
        stdout(&status).contains("redirect to https://localhost/"),
        "status names the redirect too:\n{}",
        stdout(&status)
    );
}
