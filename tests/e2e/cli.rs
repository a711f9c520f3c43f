//! The command line's edges: exit codes of mistakes, groups made only on purpose, a closed
//! stdout, colour in logs, and `env set --wait` after a failed generation.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use milky_tests::agent::Agent;
use milky_tests::django::fixture_project;
use milky_tests::*;

/// An index with `apps` apps of `versions` versions each, none run by a group: `info` prints a
/// line per version.
fn big_index(apps: usize, versions: usize) -> String {
    let mut text = String::from("schema = 1\n\n[groups.stable]\n");
    for app in 0..apps {
        for version in 0..versions {
            text += &format!(
                "\n[apps.app{app}.versions.v{version}]\nsha256 = \"{}\"\nsize = 1234\nuploaded = \"2026-11-25T04:25:00Z\"\n",
                "a".repeat(64)
            );
        }
    }
    text
}

#[test]
fn a_mistyped_group_is_refused_and_names_the_groups_and_user_errors_exit_2() {
    let ctx = TestContext::new();
    let project = ctx.project("shop", "v1");
    let upload = |group_args: &[&str]| {
        let mut args = vec!["upload"];
        args.extend_from_slice(group_args);
        args.extend_from_slice(&["--version", "v1", "--level", "1"]);
        ctx.milky_in(&project, &args)
    };

    // The first group needs saying so too; nothing is sent before that.
    let out = upload(&["--group", "stable"]);
    assert_failure(&out, 2, "there is no group stable yet");
    assert!(stderr(&out).contains("--new-group"), "{}", stderr(&out));
    assert!(
        ctx.list("").is_empty(),
        "nothing written: {:?}",
        ctx.list("")
    );
    assert_success(&upload(&["--group", "stable", "--new-group"]), "upload");

    // A typo: exit 2, the existing groups listed, the index unchanged.
    let before = ctx.index();
    let out = ctx.milky(&["version", "stabel", "shop", "v1"]);
    assert_failure(
        &out,
        2,
        "there is no group stabel yet (the groups are: stable); pass --new-group to create it",
    );
    assert_eq!(ctx.index(), before);
    let out = ctx.milky(&["version", "unstable", "shop", "v1", "--new-group"]);
    assert_success(&out, "version --new-group");
    assert!(ctx.index().contains("[groups.unstable]"), "{}", ctx.index());
    // An existing group needs no flag.
    assert_success(
        &ctx.milky(&["version", "unstable", "shop", "v1"]),
        "version",
    );
    let out = ctx.milky(&["env", "set", "stabel", "shop", "A=1"]);
    assert_failure(&out, 2, "pass --new-group");
    assert!(ctx.list("groups/stabel/").is_empty());
    let out = ctx.milky(&["promote", "stable", "canary", "shop"]);
    assert_failure(&out, 2, "there is no group canary yet");

    // Reading an unknown group is an error that lists the groups.
    for args in [
        &["status", "nosuch"][..],
        &["logs", "nosuch"],
        &["logs", "show", "nosuch"],
        &["env", "list", "nosuch", "shop"],
        &["promote", "nosuch", "stable"],
    ] {
        let out = ctx.milky(args);
        assert_failure(
            &out,
            2,
            "there is no group nosuch (the groups are: stable, unstable)",
        );
    }

    // Refusals raised inside an index edit are the user's too.
    let out = ctx.milky(&["rollback", "stable", "shop"]);
    assert_failure(&out, 2, "no earlier version of shop to roll back to");
    let out = ctx.milky(&["promote", "stable", "unstable", "nosuchapp"]);
    assert_failure(&out, 2, "group stable does not run app nosuchapp");
}

#[test]
fn info_into_a_closed_pipe_ends_quietly() {
    let ctx = TestContext::new();
    // Far more than a pipe holds (64 KiB), so `info` is still writing when the reader goes.
    ctx.put_object("version.info", big_index(40, 50).as_bytes());
    let mut child = ctx
        .milky_command(ctx.dir.path(), &["info"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo-milky info");
    let mut first = String::new();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("store: "), "{first}");
    // As `head -1` does: read one line, close the pipe.
    drop(reader);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn the_agents_log_has_no_colour_codes() {
    let ctx = TestContext::new();
    // A version whose package is not in the store: the pass fails, and logs why.
    let index = "schema = 1\n\n[groups.stable]\nshop = \"v1\"\n\n[apps.shop.versions.v1]\nsha256 = \"aaaa\"\nsize = 1\nuploaded = \"2026-11-25T04:25:00Z\"\n";
    ctx.put_object("version.info", index.as_bytes());
    let agent = Agent::new(&ctx, "stable", "a");
    let out = agent.sync();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = std::fs::read(agent.root.join("logs/agent.log")).expect("the agent's log");
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("shop"), "the failure is logged: {text}");
    assert!(!log.contains(&0x1b), "escape codes in agent.log: {text:?}");
    assert!(
        !out.stderr.contains(&0x1b),
        "escape codes on a stderr that is not a terminal: {:?}",
        stderr(&out)
    );
}

#[test]
fn env_set_wait_after_a_failed_generation_waits_for_the_new_one() {
    const APP: &str = "shop";
    let ctx = TestContext::new();
    let project = fixture_project(ctx.dir.path(), APP, "v1");
    assert_success(
        &ctx.milky_in(&project, &["init", "--yes", "--name", APP]),
        "init",
    );
    assert_success(
        &ctx.milky_in(
            &project,
            &[
                "upload",
                "-g",
                "stable",
                "--new-group",
                "--version",
                "v1",
                "--level",
                "1",
            ],
        ),
        "upload",
    );
    let agent = Agent::new(&ctx, "stable", "a");
    assert_success(&agent.sync(), "first sync");

    // A generation that breaks the app: the pass fails and the report says so.
    assert_success(
        &ctx.milky(&[
            "env",
            "set",
            "stable",
            APP,
            "DJANGO_SETTINGS_MODULE=no.such.settings",
        ]),
        "a broken setting",
    );
    let out = agent.sync();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // The fix, with --wait: it waits for the server to try the new generation rather than
    // quoting the failure of the one before.
    let mut child = ctx
        .milky_command(
            ctx.dir.path(),
            &[
                "env",
                "set",
                "stable",
                APP,
                "DJANGO_SETTINGS_MODULE=mysite.settings",
                "--wait",
                "--timeout",
                "5m",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run env set --wait");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    // The generation is in the index once this line is out.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let written = line.contains("env generation 2");
        printed.push(line);
        if written {
            break;
        }
    }
    assert!(
        printed.iter().any(|l| l.contains("env generation 2")),
        "{printed:?}"
    );
    assert_success(&agent.sync(), "the sync that takes the fixed generation");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "env set --wait failed ({}):\n{printed:?}\n{rest:?}\n{}",
        out.status,
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("all 1 live servers of stable serve shop v1"),
        "{}",
        stderr(&out)
    );
}
