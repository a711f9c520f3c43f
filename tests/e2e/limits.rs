//! Bounded in time: a hook that never ends is ended at its `[limits]` with its process group,
//! its pass fails saying so with the hook's output (stderr, hooks log, status), the other
//! servers of the group do not wait for it for ever, and the next pass goes on; a pass that
//! holds the run lock too long is reported as stuck by the passes it blocks. Credentials the
//! store refuses, or none at all, fail in one line that names the key, where it came from and
//! the fix.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use milky_dev_support::alive;
use milky_tests::agent::Agent;
use milky_tests::iam::IamStore;
use milky_tests::*;

use crate::agent::serving;

const LIMITS: &str = "[limits]\nonce_hooks = \"3s\"\nserver_hooks = \"3s\"\nstuck_pass = \"1m\"\n\n\
                      [releases]\nonce_wait = \"60s\"\n";

/// A hook that says it started, then waits for ever on a `sleep` in its background whose pid
/// it writes to `PIDS/<kind>.pid`.
fn hanging(kind: &str, pids: &Path) -> String {
    format!(
        "echo {kind} hook starts; sleep 100000 & echo $! > {}/{kind}.pid; wait",
        pids.display()
    )
}

/// A plain WSGI app (no requirements: a release costs a venv, not a Django install) with these
/// hooks.
fn write_app(project: &Path, once: &[String], server: &[String]) {
    let list = |hooks: &[String]| {
        hooks
            .iter()
            .map(|h| format!("{h:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    write(
        &project.join("hello.py"),
        "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'hello\\n']\n",
    );
    write(
        &project.join("milky.toml"),
        &format!(
            "[app]\nname = \"shop\"\nwsgi = \"hello:application\"\n\n[hooks]\nonce = [{}]\nserver = [{}]\n",
            list(once),
            list(server)
        ),
    );
}

/// The pid a hook wrote, once it is there.
fn pid_written(path: &Path) -> u32 {
    let started = Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the hook never wrote {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(ctx: &TestContext) -> String {
    let out = ctx.milky(&["status", "stable"]);
    assert_success(&out, "status");
    stdout(&out)
}

#[test]
fn hooks_past_their_limit_are_ended_reported_and_do_not_hold_the_group() {
    let ctx = TestContext::new();
    let (a, b) = (
        Agent::with_settings(&ctx, "stable", "a", &ctx.endpoint, LIMITS),
        Agent::with_settings(&ctx, "stable", "b", &ctx.endpoint, LIMITS),
    );
    let pids = ctx.dir.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    std::fs::set_permissions(&pids, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let project = ctx.dir.path().join("shop");

    // A once hook that hangs on a: ended at 3 s; b, which waits for a's result, gets it.
    write_app(&project, &[hanging("once", &pids)], &[]);
    ctx.upload(&project, "stable", "v1");
    let leader = a
        .command(&["sync"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sleeper = pid_written(&pids.join("once.pid"));
    let follower = b.sync();
    let leader = leader.wait_with_output().unwrap();
    let ended = "was still running after 3s ([limits] once_hooks in agent.toml), so it was ended with its process group";
    assert_failure(&leader, 1, ended);
    assert!(
        stderr(&leader).contains("once hook starts"),
        "{}",
        stderr(&leader)
    );
    assert!(!alive(sleeper), "the hook's background sleep was ended too");
    assert_failure(&follower, 1, "the once hooks of shop v1 failed on a");
    assert!(stderr(&follower).contains(ended), "{}", stderr(&follower));
    let result = String::from_utf8(
        ctx.object("groups/stable/once/shop/v1/result.toml")
            .unwrap(),
    )
    .unwrap();
    assert!(
        result.contains("ok = false") && result.contains(ended),
        "{result}"
    );
    let hooks_log = std::fs::read_to_string(a.root.join("logs/hooks/shop.log")).unwrap();
    assert!(
        hooks_log.contains("[failed] once hook starts") && hooks_log.contains(ended),
        "{hooks_log}"
    );
    let shown = status(&ctx);
    for host in ["a", "b"] {
        assert!(shown.contains(&format!("FAILED  {host}: ")), "{shown}");
    }
    assert!(shown.contains(ended), "{shown}");

    // A per-server hook that hangs: the same, and the next pass goes on with the next version.
    write_app(&project, &[], &[hanging("server", &pids)]);
    ctx.upload(&project, "stable", "v2");
    let out = a.sync();
    assert_failure(
        &out,
        1,
        "([limits] server_hooks in agent.toml), so it was ended with its process group",
    );
    assert!(
        stderr(&out).contains("server hook starts"),
        "{}",
        stderr(&out)
    );
    assert!(!alive(pid_written(&pids.join("server.pid"))));
    write_app(&project, &[], &["echo collected".to_owned()]);
    ctx.upload(&project, "stable", "v3");
    assert_success(&a.sync(), "the pass after the ended hooks");
    assert_eq!(serving(&a).as_deref(), Some("v3"));

    // A pass that holds the lock longer than stuck_pass (1m): played by this test, which took
    // it 10 minutes ago. The passes it blocks say so, and so does `status`, until it ends.
    let mut lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(a.state_dir().join("agent.lock"))
        .unwrap();
    lock.lock().unwrap();
    lock.set_len(0).unwrap();
    writeln!(lock, "{}", std::process::id()).unwrap();
    lock.set_modified(SystemTime::now() - Duration::from_secs(600))
        .unwrap();
    let pid = format!(", pid {}", std::process::id());
    let out = a.sync();
    assert_failure(&out, 1, "stuck pass since ");
    assert!(
        stderr(&out).contains(&pid)
            && stderr(&out).contains("longer than [limits] stuck_pass (1m)"),
        "{}",
        stderr(&out)
    );
    let shown = status(&ctx);
    let line = shown
        .lines()
        .find(|l| l.contains("STUCK   a: stuck pass since "))
        .unwrap_or_else(|| panic!("no stuck pass in:\n{shown}"));
    assert!(line.contains(&pid), "{line}");
    drop(lock);
    assert_success(&a.sync(), "the pass after the stuck one");
    assert!(!status(&ctx).contains("STUCK"), "{}", status(&ctx));
}

/// The one line a command failed with; fails the test if it said more, or exited otherwise.
fn one_error_line(out: &std::process::Output, code: i32) -> String {
    assert_eq!(out.status.code(), Some(code), "{}", stderr(out));
    let text = stderr(out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line, not:\n{text}");
    lines[0].to_owned()
}

#[test]
fn wrong_or_missing_credentials_fail_in_one_line_naming_the_key_its_source_and_the_fix() {
    let ctx = TestContext::new();
    // A key that may list the bucket and nothing else, on a store that checks signatures.
    let list_only = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket",
                       "Resource": format!("arn:aws:s3:::{}", ctx.bucket)}]
    });
    let store = IamStore::start(&ctx.bucket, &[("lister", list_only.to_string())]);
    let key = store.users["lister"].clone();
    let home = tempfile::tempdir().unwrap();
    let info = |env: &[(&str, &str)], args: &[&str]| {
        let mut command = ctx.milky_command(ctx.dir.path(), &["info"]);
        command
            .args(args)
            .env("AWS_ENDPOINT_URL", &store.endpoint)
            .env("HOME", home.path());
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        ] {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        command.output().unwrap()
    };
    let denied = format!("error: access denied to version.info in {}: ", ctx.store());
    let from_env = |id: &str| format!("access key {id} from the environment (AWS_ACCESS_KEY_ID)");

    let line = one_error_line(
        &info(
            &[
                ("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000"),
                ("AWS_SECRET_ACCESS_KEY", "x"),
            ],
            &[],
        ),
        2,
    );
    assert_eq!(
        line,
        format!(
            "{denied}get refused: the store knows no {}; set the id and secret of a key it has",
            from_env("AKIANOSUCHKEY0000000")
        )
    );
    let wrong_secret = [
        ("AWS_ACCESS_KEY_ID", key.id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
    ];
    let line = one_error_line(&info(&wrong_secret, &[]), 2);
    assert_eq!(
        line,
        format!(
            "{denied}get refused: the secret of {} is wrong (the store's signature does not match); set the key's right secret",
            from_env(&key.id)
        )
    );
    let right = [
        ("AWS_ACCESS_KEY_ID", key.id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", key.secret.as_str()),
    ];
    let line = one_error_line(&info(&right, &[]), 2);
    assert_eq!(
        line,
        format!(
            "{denied}get refused to {}; allow s3:GetObject on it in that key's policy, or use other credentials",
            from_env(&key.id)
        )
    );

    // The same wrong secret from a profile file.
    let credentials = home.path().join("credentials");
    write(
        &credentials,
        &format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = nope\n",
            key.id
        ),
    );
    let line = one_error_line(
        &info(
            &[("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap())],
            &[],
        ),
        2,
    );
    assert!(
        line.contains(&format!(
            "the secret of access key {} from profile default ({}, /dev/null) is wrong",
            key.id,
            credentials.display()
        )),
        "{line}"
    );

    // None at all: no variables, no profile files (an empty HOME), no instance metadata.
    let line = one_error_line(&info(&[], &[]), 2);
    assert!(
        line.starts_with(&format!(
            "{denied}no credentials to get with: none in the environment"
        )),
        "{line}"
    );
    assert!(line.ends_with("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or give this machine a role"), "{line}");

    // -v adds the SDK's account of the refusal; the error line stays the same.
    let out = info(&wrong_secret, &["-v"]);
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert!(text.lines().count() > 1, "{text}");
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    assert!(text.lines().any(|l| l.starts_with(&denied)), "{text}");

    // The agent says it in one line too, in its pass's errors, and exits 2 as for bad settings.
    let agent = Agent::with_settings(&ctx, "stable", "creds", &store.endpoint, "");
    let out = agent
        .command(&["sync"])
        .envs(wrong_secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(
        errors[0].contains(&format!(
            "index: access denied to version.info in {}: get refused: the secret of {} is wrong",
            ctx.store(),
            from_env(&key.id)
        )),
        "{text}"
    );
}
