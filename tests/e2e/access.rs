//! Access denied, by a store that evaluates IAM policies (moto with IAM on): the README's
//! policies are enough for a controller and for an agent of group `stable`, and a credential
//! without a permission fails with a clear error that changes nothing, while the server keeps
//! serving.

use milky_tests::agent::Agent;
use milky_tests::iam::{IamStore, Keys};
use milky_tests::*;

use crate::agent::{APP, serving, shop};

/// The README's agent policy for group `stable` and store `s3://BUCKET/fleet`; without
/// `packages/*` when `packages` is false.
fn agent_policy(bucket: &str, packages: bool) -> String {
    let arn = |key: &str| format!("arn:aws:s3:::{bucket}/fleet/{key}");
    let mut readable = vec![arn("version.info"), arn("groups/stable/env/*")];
    if packages {
        readable.push(arn("packages/*"));
    }
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": format!("arn:aws:s3:::{bucket}")},
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": readable},
            {"Effect": "Allow", "Action": "s3:PutObject",
             "Resource": [arn("groups/stable/hosts/*"), arn("logs/stable/*")]},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
             "Resource": arn("groups/stable/once/*")},
            {"Effect": "Allow", "Action": "s3:DeleteObject",
             "Resource": arn("groups/stable/once/.conditional-write-probe-*")},
        ]
    })
    .to_string()
}

/// The README's controller policy.
fn controller_policy(bucket: &str) -> String {
    let arn = |key: &str| format!("arn:aws:s3:::{bucket}/fleet/{key}");
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": format!("arn:aws:s3:::{bucket}")},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
             "Resource": [arn("version.info"), arn("groups/*/env/*")]},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
             "Resource": arn("packages/*")},
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": [arn("groups/*"), arn("logs/*")]},
            {"Effect": "Allow", "Action": "s3:DeleteObject",
             "Resource": [arn("groups/*/hosts/*"), arn("logs/*")]},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": arn("doctor/*")},
        ]
    })
    .to_string()
}

#[test]
fn denied_requests_fail_clearly_change_nothing_and_keep_serving() {
    let ctx = TestContext::new();
    let store = IamStore::start(
        &ctx.bucket,
        &[
            ("controller", controller_policy(&ctx.bucket)),
            ("agent", agent_policy(&ctx.bucket, true)),
            ("agent-no-packages", agent_policy(&ctx.bucket, false)),
        ],
    );
    let keys = |user: &str| store.users[user].clone();
    let project = shop(&ctx);
    let milky = |user: &str, args: &[&str]| {
        let mut command = ctx.milky_command(&project, args);
        command
            .env("AWS_ENDPOINT_URL", &store.endpoint)
            .envs(keys(user).env());
        command.output().unwrap()
    };
    let upload = |user: &str, version: &str| {
        milky_tests::django::set_fixture_version(&project, version);
        milky(
            user,
            &[
                "upload",
                "--new-group",
                "--group",
                "stable",
                "--version",
                version,
                "--level",
                "1",
            ],
        )
    };

    // An agent's credentials cannot upload: refused, and nothing was written.
    let out = upload("agent", "v1");
    assert_failure(&out, 2, "access denied to packages/shop/shop-v1.tar.bz2");
    let info = milky("controller", &["info", "--json"]);
    assert_success(&info, "info");
    assert!(!stdout(&info).contains("v1"), "{}", stdout(&info));

    // The README's policies are enough for the controller and for a whole agent pass (package,
    // once-hooks lease, status report, logs).
    assert_success(&upload("controller", "v1"), "upload v1 as the controller");
    let agent = Agent::with_settings(&ctx, "stable", "iam-a", &store.endpoint, "");
    let sync = |agent_keys: &Keys| {
        agent
            .command(&["sync"])
            .envs(agent_keys.env())
            .output()
            .unwrap()
    };
    assert_success(&sync(&keys("agent")), "a pass with the agent policy");
    assert_eq!(serving(&agent).as_deref(), Some("v1"));

    // A credential that may not read packages: the pass fails saying so, v1 keeps serving.
    assert_success(&upload("controller", "v2"), "upload v2");
    let out = sync(&keys("agent-no-packages"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("access denied to packages/shop/shop-v2.tar.bz2"),
        "{}",
        stderr(&out)
    );
    assert_eq!(serving(&agent).as_deref(), Some("v1"));
    let status = milky("controller", &["status", "stable", "--json"]);
    assert_success(&status, "status");
    assert!(
        stdout(&status).contains("access denied to packages/shop/shop-v2.tar.bz2"),
        "{}",
        stdout(&status)
    );
    assert_eq!(agent.get(APP, "/").status, 200);
}
