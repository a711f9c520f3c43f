//! Preparing a release (venv, hooks, permissions) and serving it through nginx.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use milky_agent::web::{ReleaseSetup, Slot, WebError, prepare_release};

use crate::support::{
    TestStack, assert_serves, get, require_tools, site, temp_root, unpack_fixture,
};

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
