//! Taking an app off: both its slots stop, nginx forgets it, and the front answers 404 for it.

use milky_agent::web::Slot;
use milky_dev_support::alive;

use crate::support::{TestStack, assert_serves, get, shared_release, site};

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
