//! Signed group state: a server that trusts keys requires it (unless `[signing]
//! require_signed_state = false`) and installs only what the newest state it accepted names. Each attack is made by hand in the store: an
//! old state replayed with its index, a current state beside an old index, an edited state, an
//! expired one, one signed by a deploy key the root key revoked; a legitimate rollback (a new,
//! higher generation naming an older version) works.

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
fn servers_requiring_signed_state_refuse_replayed_mixed_edited_expired_and_revoked_state() {
    let ctx = TestContext::new();
    let (public, secret) = keygen(&ctx, "keys");
    let key_id = public.split_whitespace().nth(1).unwrap();
    let project = fixture_project(ctx.dir.path(), APP, "v1");
    assert_success(
        &ctx.milky_in(&project, &["init", "--yes", "--name", APP]),
        "init",
    );

    // Every signed edit writes the group's state, one generation up: v1, then v2.
    upload(&ctx, &project, "v1", &secret);
    let first = state(&ctx);
    assert_eq!(first.generation, 1);
    assert_eq!(first.apps[&APP.parse().unwrap()].version.as_str(), "v1");
    upload(&ctx, &project, "v2", &secret);
    assert_eq!(state(&ctx).generation, 2);
    let (index_v2, state_v2) = (ctx.index(), ctx.object(STATE).unwrap());

    // A legitimate rollback is a new, higher generation naming the older version: installed.
    assert_success(
        &milky_signing(&ctx, &secret, &["rollback", "stable", APP]),
        "rollback",
    );
    assert_eq!(state(&ctx).generation, 3);
    // Trusting a key is enough: signed state is then required without being asked for.
    let settings = format!("[signing]\ntrusted_keys = [\"{public}\"]\n");
    let a = Agent::with_settings(&ctx, "stable", "a", &ctx.endpoint, &settings);
    assert_success(&a.sync(), "sync the rollback");
    assert_eq!(serving(&a).as_deref(), Some("v1"));
    let (index_v1, state_v1) = (ctx.index(), ctx.object(STATE).unwrap());
    let text = stdout(&ctx.milky(&["status", "stable"]));
    assert!(
        text.contains(&format!(
            "signed state: generation 3, signed by {key_id}, valid until"
        )),
        "{text}"
    );

    // Rollback attack: an older index with its older, genuinely signed state (naming v2).
    ctx.put_object("version.info", index_v2.as_bytes());
    ctx.put_object(STATE, &state_v2);
    refused(
        &ctx,
        &a,
        "generation 2, older than generation 3 this server already accepted",
        "v1",
    );

    // Mix and match: the current state beside the older index.
    ctx.put_object(STATE, &state_v1);
    refused(&ctx, &a, "the index names shop v2 (sha256", "v1");

    // The current state edited to name v2: its signature no longer holds.
    let mut edited = state(&ctx);
    let index = Index::parse(&index_v2).unwrap();
    let v2_sha = index
        .package(&APP.parse().unwrap(), &"v2".parse().unwrap())
        .unwrap()
        .sha256;
    let entry = edited.apps.get_mut(&APP.parse().unwrap()).unwrap();
    entry.version = "v2".parse().unwrap();
    entry.sha256 = v2_sha;
    ctx.put_object(STATE, edited.to_toml().as_bytes());
    refused(&ctx, &a, "does not match the group state", "v1");

    // A state signed by a key the server does not trust.
    let other = SecretKey::generate().unwrap();
    let stable = "stable".parse().unwrap();
    let mut foreign = GroupState::from_index(&index, &stable, 9, unix_now() + 3600);
    foreign.sign(&other);
    ctx.put_object(STATE, foreign.to_toml().as_bytes());
    refused(&ctx, &a, "is not signed by a trusted key", "v1");

    // Freeze: a state signed with the real key, newer, but expired: nothing new is installed.
    let key = SecretKey::read(&secret).unwrap();
    let mut expired = GroupState::from_index(&index, &stable, 4, unix_now() - 5);
    expired.sign(&key);
    ctx.put_object(STATE, expired.to_toml().as_bytes());
    refused(&ctx, &a, "(generation 4) expired at", "v1");
    let text = stdout(&ctx.milky(&["status", "stable"]));
    assert!(text.contains("signed state: generation 4"), "{text}");
    assert!(text.contains("EXPIRED at"), "{text}");

    // `sign-state` refreshes it (generation 5, from the index as it is: v1 again, put back
    // without the key): the server accepts it and agrees.
    ctx.put_object("version.info", index_v1.as_bytes());
    let out = milky_signing(&ctx, &secret, &["sign-state", "stable"]);
    assert_success(&out, "sign-state");
    assert!(
        stdout(&out).starts_with(&format!(
            "stable: generation 5 signed by {key_id}, valid until"
        )),
        "{}",
        stdout(&out)
    );
    let out = a.sync();
    assert_success(&out, "sync the refreshed state");
    let status = report(&ctx);
    assert!(!status.contains("expired at"), "{status}");
    assert_eq!(serving(&a).as_deref(), Some("v1"));

    // Rotation: the server trusts an offline root key, which lists the deploy keys.
    let (root_public, root) = keygen(&ctx, "root");
    let (new_public, new_secret) = keygen(&ctx, "new");
    let keys_cmd = |args: &[&str]| {
        let mut all = vec!["keys"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--root-key", root.to_str().unwrap()]);
        let out = ctx.milky(&all);
        assert_success(&out, &format!("keys {args:?}"));
        stdout(&out)
    };
    assert!(keys_cmd(&["add", &public]).starts_with("keys.toml generation 1 signed by root key"));
    let first_list = ctx.object("keys.toml").unwrap();
    let config = std::fs::read_to_string(&a.config).unwrap();
    assert!(config.ends_with("]\n"), "{config}");
    std::fs::write(
        &a.config,
        format!("{config}root_keys = [\"{root_public}\"]\n"),
    )
    .unwrap();
    assert_success(&a.sync(), "sync with the deploy key listed by the root");
    // The new deploy key is added, the old one revoked: the old one's states are refused (an
    // idle server reads the state when the index changes, as an attacker's edit would).
    keys_cmd(&["add", &new_public]);
    assert!(keys_cmd(&["revoke", key_id]).starts_with("keys.toml generation 3"));
    let version = |v: &str| assert_success(&ctx.milky(&["version", "stable", APP, v]), v);
    version("v2");
    assert_success(
        &milky_signing(&ctx, &secret, &["sign-state", "stable"]),
        "sign-state with the revoked key",
    );
    refused(
        &ctx,
        &a,
        &format!("the signed state of stable is not signed by a trusted key (signed by {key_id}"),
        "v1",
    );
    version("v1");
    assert_success(
        &milky_signing(&ctx, &new_secret, &["sign-state", "stable"]),
        "sign-state with the new key",
    );
    assert_success(&a.sync(), "sync the state signed by the new key");
    // The old list (naming the old key), replayed, is refused.
    ctx.put_object("keys.toml", &first_list);
    version("v2");
    assert_success(
        &milky_signing(&ctx, &secret, &["sign-state", "stable"]),
        "sign-state with the old key again",
    );
    refused(
        &ctx,
        &a,
        "keys.toml is generation 1, older than generation 3",
        "v1",
    );
}

/// A store whose group has no signed state yet (made before signing, or its state deleted):
/// servers that trust keys install nothing new and say how to start; `require_signed_state =
/// false` takes such a server back to package signatures alone; a server without keys goes by
/// the index as it always did.
#[test]
fn servers_that_trust_keys_require_signed_state_unless_told_otherwise() {
    let ctx = TestContext::new();
    let (public, secret) = keygen(&ctx, "keys");
    let project = fixture_project(ctx.dir.path(), APP, "v1");
    assert_success(
        &ctx.milky_in(&project, &["init", "--yes", "--name", APP]),
        "init",
    );
    upload(&ctx, &project, "v1", &secret);
    ctx.delete_object(STATE);

    let trusting = format!("[signing]\ntrusted_keys = [\"{public}\"]\n");
    let a = Agent::with_settings(&ctx, "stable", "a", &ctx.endpoint, &trusting);
    let out = a.sync();
    let hint = "the signed state of stable is missing";
    assert_failure(&out, 1, hint);
    assert!(
        stderr(&out).contains("run `cargo milky sign-state stable`"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("downloading"), "{}", stderr(&out));
    assert!(report(&ctx).contains(hint), "{}", report(&ctx));
    assert!(!a.release_dir(APP, "v1").exists(), "nothing was installed");

    let b = Agent::with_settings(&ctx, "stable", "b", &ctx.endpoint, "");
    assert_success(&b.sync(), "a server without keys: as before");
    assert_eq!(serving(&b).as_deref(), Some("v1"));

    let config = std::fs::read_to_string(&a.config).unwrap();
    std::fs::write(&a.config, format!("{config}require_signed_state = false\n")).unwrap();
    assert_success(&a.sync(), "package signatures alone");
    assert_eq!(serving(&a).as_deref(), Some("v1"));

    // Back on, with the state signed once: installed by the state.
    std::fs::write(&a.config, &config).unwrap();
    assert_success(
        &milky_signing(&ctx, &secret, &["sign-state", "stable"]),
        "sign-state",
    );
    assert_success(&a.sync(), "sync with the state");
    assert!(!report(&ctx).contains(hint), "{}", report(&ctx));
}

/// `keygen --out DIR/<name>`: the public key line and the secret key's path.
fn keygen(ctx: &TestContext, name: &str) -> (String, std::path::PathBuf) {
    let dir = ctx.dir.path().join(name);
    let out = ctx.milky(&["keygen", "--out", dir.to_str().unwrap(), "--json"]);
    assert_success(&out, "keygen");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let public = json["public_key"].as_str().unwrap().to_owned();
    (public, dir.join("signing.key"))
}
