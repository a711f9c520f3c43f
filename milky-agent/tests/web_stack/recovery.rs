//! nginx brought back after a crash or reboot, and an older agent's app file read back and
//! replaced.

use std::time::Duration;

use milky_agent::web::Slot;
use milky_dev_support::{Signal, group_alive, signal_group};

use crate::support::{TestStack, assert_serves, shared_release, site};

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
