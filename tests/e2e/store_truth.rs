//! No success that did not happen, on stores worse than they say: one that checks write
//! conditions and then writes without a lock (a proxy in front of moto, and s3s-fs itself), one
//! that drops the conditions, and one that tears some of its answers.

use std::process::{Command, Output, Stdio};

use milky_tests::racy_store::{self, Fault};
use milky_tests::s3s_fs;
use milky_tests::*;

/// Concurrent controllers, each setting the env of its own app in one group.
const WRITERS: usize = 20;

/// A store that lies about conditional writes, seen through `endpoint`.
struct Liar<'a> {
    what: &'static str,
    ctx: &'a TestContext,
    endpoint: String,
    /// The store's version.info as it is now, read around the liar.
    index: Box<dyn Fn() -> Option<String> + 'a>,
}

impl Liar<'_> {
    fn milky(&self, args: &[&str]) -> Command {
        let mut command = self.ctx.milky_command(self.ctx.dir.path(), args);
        command.env("AWS_ENDPOINT_URL", &self.endpoint);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.milky(args).output().expect("run cargo-milky")
    }

    fn unsafe_env_set(&self, app: &str, extra: &[&str]) -> Command {
        let mut args = vec!["env", "set", "stable", app, "GREETING=hello"];
        args.extend_from_slice(extra);
        let mut command = self.milky(&args);
        command.env("MILKY_ALLOW_UNSAFE_STORE", "1");
        command
    }

    /// doctor fails it, writes are refused, and with the override every command that exits 0
    /// has its edit in the final index.
    fn never_loses_an_edit_quietly(&self) {
        let what = self.what;
        let doctor = self.run(&["doctor"]);
        assert_failure(&doctor, 1, "does not apply conditional writes atomically");
        assert!(
            stdout(&doctor).contains("FAILED: racing"),
            "{what}: {}",
            stdout(&doctor)
        );

        let refused = self.run(&["env", "set", "stable", "app0", "A=1", "--new-group"]);
        assert_failure(&refused, 2, "refusing to write");
        assert!(stderr(&refused).contains("--allow-unsafe-store"), "{what}");
        assert!(
            stderr(&refused).contains("MILKY_ALLOW_UNSAFE_STORE=1"),
            "{what}"
        );
        assert_eq!(
            (self.index)(),
            None,
            "{what}: a refused write wrote nothing"
        );

        let first = self
            .unsafe_env_set("app0", &["--new-group"])
            .output()
            .unwrap();
        assert_success(&first, &format!("{what}: the first edit, alone"));
        let writers: Vec<_> = (1..=WRITERS)
            .map(|n| {
                let app = format!("app{n}");
                let child = self
                    .unsafe_env_set(&app, &[])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn");
                (app, child)
            })
            .collect();
        let index = |outcomes: &[(String, Output)]| {
            let text = (self.index)().expect("version.info exists");
            let parsed: toml_edit::DocumentMut = text.parse().expect("the index parses");
            outcomes
                .iter()
                .filter(|(app, out)| {
                    out.status.success() && parsed["env"]["stable"].get(app).is_none()
                })
                .map(|(app, _)| app.clone())
                .collect::<Vec<_>>()
        };
        let outcomes: Vec<(String, Output)> = writers
            .into_iter()
            .map(|(app, child)| (app, child.wait_with_output().unwrap()))
            .collect();
        let lost = index(&outcomes);
        assert!(
            lost.is_empty(),
            "{what}: exited 0 but missing from the index: {lost:?}"
        );
        let succeeded = outcomes
            .iter()
            .filter(|(_, out)| out.status.success())
            .count();
        assert!(succeeded > 0, "{what}: no writer got through");
        for (app, out) in outcomes.iter().filter(|(_, out)| !out.status.success()) {
            let err = stderr(out);
            assert!(
                err.contains("does not apply conditional writes atomically")
                    || err.contains("other writers kept changing it"),
                "{what}: {app} failed for another reason ({}):\n{err}\n{}",
                out.status,
                stdout(out)
            );
        }
        eprintln!("{what}: {succeeded} of {WRITERS} concurrent edits succeeded, none lost");
    }
}

/// One liar in front of moto.
fn proxied(what: &'static str, fault: Fault) {
    let ctx = TestContext::new();
    let proxy = racy_store::start(&ctx.endpoint, fault);
    let index = || {
        ctx.object("version.info")
            .map(|b| String::from_utf8(b).unwrap())
    };
    Liar {
        what,
        ctx: &ctx,
        endpoint: proxy.endpoint.clone(),
        index: Box::new(index),
    }
    .never_loses_an_edit_quietly();
}

/// s3s-fs itself: it checks the conditions, then writes without a lock.
fn s3s_fs() {
    let ctx = TestContext::new();
    let s3s = s3s_fs::start(&ctx.dir.path().join("s3s-fs"), &ctx.bucket);
    let index = || {
        s3s.object(&ctx.bucket, "fleet/version.info")
            .map(|b| String::from_utf8(b).unwrap())
    };
    Liar {
        what: "s3s-fs",
        ctx: &ctx,
        endpoint: s3s.endpoint.clone(),
        index: Box::new(index),
    }
    .never_loses_an_edit_quietly();
}

#[test]
fn stores_that_let_racing_writes_through_never_report_a_lost_edit() {
    // The three stores at once: each run is mostly waiting (backoff, read-backs).
    std::thread::scope(|scope| {
        let runs = [
            scope.spawn(|| proxied("checks without a lock", Fault::RacyConditions)),
            scope.spawn(|| proxied("ignores conditions", Fault::NoConditions)),
            scope.spawn(s3s_fs),
        ];
        for run in runs {
            if let Err(panic) = run.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}

#[test]
fn torn_answers_are_read_again_not_reported_broken() {
    let ctx = TestContext::new();
    let torn = racy_store::start(&ctx.endpoint, Fault::TornBodies);
    let milky = |args: &[&str]| {
        let out = ctx
            .milky_command(ctx.dir.path(), args)
            .env("AWS_ENDPOINT_URL", &torn.endpoint)
            .output()
            .unwrap();
        assert_success(&out, &args.join(" "));
        assert!(!stderr(&out).contains("broken"), "{}", stderr(&out));
        out
    };
    let doctor = milky(&["doctor"]);
    assert!(stdout(&doctor).contains("conditional writes are applied atomically"));
    // A server of the group reads each new index through the same proxy: a torn read is read
    // again, never a failed pass.
    let agent =
        milky_tests::agent::Agent::with_settings(&ctx, "stable", "web-1", &torn.endpoint, "");
    for n in 0..6 {
        milky(&[
            "env",
            "set",
            "stable",
            "shop",
            &format!("N={n}"),
            "--new-group",
        ]);
        let pass = agent.sync();
        assert_success(&pass, "milky-agent sync");
        assert!(!stderr(&pass).contains("broken"), "{}", stderr(&pass));
    }
    milky(&["info", "--json"]);
    assert!(torn.torn() >= 3, "the proxy tore {} answers", torn.torn());
    // Every edit is in: the env's generation counts them.
    let index: toml_edit::DocumentMut = ctx.index().parse().unwrap();
    assert_eq!(
        index["env"]["stable"]["shop"].as_integer(),
        Some(6),
        "{index}"
    );
}
