//! Signed group state: a server that requires it (`[signing] require_signed_state`) installs
//! only what the newest state it accepted names. Each attack is made by hand in the store: an
//! old state replayed with its index, a current state beside an old index, an edited state, an
//! expired one; a legitimate rollback (a new, higher generation naming an older version) works.

use std::path::Path;

use milky_core::Index;
use milky_core::signing::SecretKey;
use milky_core::signing::group_state::{GroupState, unix_now};
use milky_tests::agent::Agent;
use milky_tests::django::{fixture_project, set_fixture_version};
use milky_tests::*;

const APP: &str = "shop";
const STATE: &str = "groups/stable/state.toml";

fn upload(ctx: &TestContext, project: &Path, version: &str, secret: &Path) {
    set_fixture_version(project, version);
    let args = [
        "upload",
        "--new-group",
        "--group",
        "stable",
        "--version",
        version,
        "--level",
        "1",
        "--sign-key",
        secret.to_str().unwrap(),
    ];
    assert_success(&ctx.milky_in(project, &args), &format!("upload {version}"));
}

/// `cargo milky ARGS…` with the signing key in the environment, as CI runs it.
fn milky_signing(ctx: &TestContext, secret: &Path, args: &[&str]) -> std::process::Output {
    ctx.milky_command(ctx.dir.path(), args)
        .env("MILKY_SIGNING_KEY", secret)
        .output()
        .unwrap()
}

fn state(ctx: &TestContext) -> GroupState {
    let bytes = ctx.object(STATE).expect("the group has a signed state");
    GroupState::parse(std::str::from_utf8(&bytes).unwrap()).unwrap()
}

fn serving(agent: &Agent) -> Option<String> {
    let response = agent.get(APP, "/");
    (response.status == 200).then(|| response.header("X-Milky-Version").unwrap())
}

fn report(ctx: &TestContext) -> String {
    String::from_utf8(ctx.object("groups/stable/hosts/a.toml").unwrap()).unwrap()
}

/// A sync that refuses with `why` (on stderr and in the report) and leaves `version` serving.
fn refused(ctx: &TestContext, agent: &Agent, why: &str, version: &str) {
    let out = agent.sync();
    assert_failure(&out, 1, why);
    assert!(!stderr(&out).contains("downloading"), "{}", stderr(&out));
    assert!(report(ctx).contains(why), "{}", report(ctx));
    assert_eq!(serving(agent).as_deref(), Some(version), "{why}");
}

#[test]
fn servers_requiring_signed_state_refuse_replayed_mixed_edited_and_expired_state() {
    let ctx = TestContext::new();
    let keys = ctx.dir.path().join("keys");
    let out = ctx.milky(&["keygen", "--out", keys.to_str().unwrap(), "--json"]);
    assert_success(&out, "keygen");
    let keygen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (key_id, public) = (
        keygen["key_id"].as_str().unwrap(),
        keygen["public_key"].as_str().unwrap(),
    );
    let secret = keys.join("signing.key");
    let project = fixture_project(ctx.dir.path(), APP, "v1");
    assert_success(
        &ctx.milky_in(&project, &["init", "--yes", "--name", APP]),
        "init",
    );

    // Every signed edit writes the group's state, one generation up.
    upload(&ctx, &project, "v1", &secret);
    let first = state(&ctx);
    assert_eq!(first.generation, 1);
    assert_eq!(first.apps[&APP.parse().unwrap()].version.as_str(), "v1");
    let settings =
        format!("[signing]\ntrusted_keys = [\"{public}\"]\nrequire_signed_state = true\n");
    let a = Agent::with_settings(&ctx, "stable", "a", &ctx.endpoint, &settings);
    assert_success(&a.sync(), "sync v1");
    assert_eq!(serving(&a).as_deref(), Some("v1"));
    let (index_v1, state_v1) = (ctx.index(), ctx.object(STATE).unwrap());
    upload(&ctx, &project, "v2", &secret);
    assert_eq!(state(&ctx).generation, 2);
    assert_success(&a.sync(), "sync v2");
    assert_eq!(serving(&a).as_deref(), Some("v2"));
    let (index_v2, state_v2) = (ctx.index(), ctx.object(STATE).unwrap());
    let text = stdout(&ctx.milky(&["status", "stable"]));
    assert!(
        text.contains(&format!(
            "signed state: generation 2, signed by {key_id}, valid until"
        )),
        "{text}"
    );

    // Rollback attack: the old index with its old, genuinely signed state.
    ctx.put_object("version.info", index_v1.as_bytes());
    ctx.put_object(STATE, &state_v1);
    refused(
        &ctx,
        &a,
        "generation 1, older than generation 2 this server already accepted",
        "v2",
    );

    // Mix and match: the current state beside the old index.
    ctx.put_object(STATE, &state_v2);
    refused(&ctx, &a, "the index names shop v1 (sha256", "v2");

    // The current state edited to name v1: its signature no longer holds.
    let mut edited = state(&ctx);
    let v1 = Index::parse(&index_v1).unwrap();
    let v1_sha = v1
        .package(&APP.parse().unwrap(), &"v1".parse().unwrap())
        .unwrap()
        .sha256;
    let entry = edited.apps.get_mut(&APP.parse().unwrap()).unwrap();
    entry.version = "v1".parse().unwrap();
    entry.sha256 = v1_sha;
    ctx.put_object(STATE, edited.to_toml().as_bytes());
    refused(&ctx, &a, "does not match the group state", "v2");

    // Put back, the server agrees again; a legitimate rollback is a new generation: installed.
    ctx.put_object("version.info", index_v2.as_bytes());
    ctx.put_object(STATE, &state_v2);
    assert_success(&a.sync(), "sync the restored state");
    assert_success(
        &milky_signing(&ctx, &secret, &["rollback", "stable", APP]),
        "rollback",
    );
    assert_eq!(state(&ctx).generation, 3);
    assert_success(&a.sync(), "sync the rollback");
    assert_eq!(serving(&a).as_deref(), Some("v1"));

    // Freeze: a state signed with the real key but expired; the index (edited without the
    // key, so no new state) names v2. Nothing new is installed until a fresh state arrives.
    assert_success(&ctx.milky(&["version", "stable", APP, "v2"]), "version v2");
    let key = SecretKey::read(&secret).unwrap();
    let index = Index::parse(&ctx.index()).unwrap();
    let mut expired = GroupState::from_index(&index, &"stable".parse().unwrap(), 4, unix_now() - 5);
    expired.sign(&key);
    ctx.put_object(STATE, expired.to_toml().as_bytes());
    refused(&ctx, &a, "(generation 4) expired at", "v1");
    let text = stdout(&ctx.milky(&["status", "stable"]));
    assert!(text.contains("signed state: generation 4"), "{text}");
    assert!(text.contains("EXPIRED at"), "{text}");

    // `sign-state` refreshes it (generation 5): the server catches up.
    let out = milky_signing(&ctx, &secret, &["sign-state", "stable"]);
    assert_success(&out, "sign-state");
    assert!(
        stdout(&out).starts_with(&format!(
            "stable: generation 5 signed by {key_id}, valid until"
        )),
        "{}",
        stdout(&out)
    );
    assert_success(&a.sync(), "sync the refreshed state");
    assert_eq!(serving(&a).as_deref(), Some("v2"));

    // A state signed by a key the server does not trust is refused.
    let other = SecretKey::generate().unwrap();
    let mut foreign =
        GroupState::from_index(&index, &"stable".parse().unwrap(), 9, unix_now() + 3600);
    foreign.sign(&other);
    ctx.put_object(STATE, foreign.to_toml().as_bytes());
    assert_success(&ctx.milky(&["version", "stable", APP, "v1"]), "version v1");
    refused(&ctx, &a, "is not signed by a trusted key", "v2");
}
