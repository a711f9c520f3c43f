//! Package snippets for nginx and Apache: a broken one fails only its app, and only a changed one
//! reloads nginx.

use milky_agent::web::{Slot, WebError};

use crate::support::{
    TestStack, assert_serves, get, nginx_workers, overlay_release, overlay_site, shared_release,
    site,
};

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
