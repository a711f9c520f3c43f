//! `cargo xtask demo`, run as a new user runs it, non-interactively, then stopped.

use std::process::Command;

use milky_dev_support::{alive, pids_in};
use milky_tests::*;

#[test]
fn the_demo_runs_end_to_end_and_stops_cleanly() {
    let dir = tempfile::Builder::new()
        .prefix("milky-demo-test-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let demo_dir = dir.path().join("demo");
    let xtask = |args: &[&str]| {
        Command::new("cargo")
            .current_dir(workspace_root())
            .args(["xtask", "demo"])
            .args(args)
            .env("MILKY_DEMO_DIR", &demo_dir)
            .env_remove("RUST_LOG")
            .output()
            .expect("run cargo xtask demo")
    };
    // Whatever fails below, the demo's servers are stopped (by the pids it recorded).
    let _stop = StopOnDrop(&demo_dir);
    let out = xtask(&[]);
    assert_success(&out, "cargo xtask demo");
    let text = stdout(&out);
    // The demo checks each state through nginx itself; its closing state is stable back on v1.
    for step in [
        "$ cargo milky upload --group stable",
        "$ cargo milky promote unstable stable",
        "$ cargo milky rollback stable mysite",
        "$ cargo milky status",
    ] {
        assert!(text.contains(step), "the demo shows {step:?}:\n{text}");
    }
    let last_check = text
        .rfind("mysite v1 on stable-")
        .expect("stable serves v1 at the end");
    assert!(last_check > text.rfind("rollback").unwrap(), "{text}");
    assert!(
        text.contains("cargo xtask demo --stop"),
        "it says how to stop it"
    );

    // The commands it prints for trying it by hand run as printed.
    let after = |prefix: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("the demo prints {prefix:?}:\n{text}"))
            .to_owned()
    };
    let (project, store) = (after("cd "), after("export MILKY_STORE="));
    let status_line = text
        .lines()
        .map(str::trim)
        .find(|line| line.ends_with("/cargo-milky milky status"))
        .unwrap_or_else(|| panic!("the demo prints a status command:\n{text}"));
    let program = status_line.trim_end_matches(" milky status");
    let out = Command::new(program)
        .args(["milky", "status"])
        .current_dir(&project)
        .env("MILKY_STORE", &store)
        .output()
        .expect("run the printed command");
    assert_success(&out, "the status command the demo prints");
    assert!(stdout(&out).contains("stable"), "{}", stdout(&out));

    let pids: Vec<u32> = pids_in(&demo_dir);
    assert!(
        pids.len() >= 3,
        "agents, nginx and Apache run after the demo: {pids:?}"
    );
    let out = xtask(&["--stop"]);
    assert_success(&out, "cargo xtask demo --stop");
    for pid in pids {
        assert!(!alive(pid), "process {pid} still runs after --stop");
    }
}

/// Runs `cargo xtask demo --stop` for a demo dir when dropped (a second stop finds nothing).
struct StopOnDrop<'a>(&'a std::path::Path);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = Command::new("cargo")
            .current_dir(workspace_root())
            .args(["xtask", "demo", "--stop"])
            .env("MILKY_DEMO_DIR", self.0)
            .output();
    }
}
