//! Signed packages: `cargo milky keygen`, `upload --sign-key`, `sign`, and agents that trust a
//! key and refuse what it did not sign, or what was changed in the store after it signed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use milky_tests::agent::Agent;
use milky_tests::django::{fixture_project, set_fixture_version};
use milky_tests::*;
use serde_json::Value;

const APP: &str = "shop";

fn json(out: &Output) -> Value {
    assert_success(out, "command with --json");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// `keygen --out DIR --json`: the key id and the public key line.
fn keygen(ctx: &TestContext, dir: &Path) -> (String, String) {
    let out = json(&ctx.milky(&["keygen", "--out", dir.to_str().unwrap(), "--json"]));
    (
        out["key_id"].as_str().unwrap().to_owned(),
        out["public_key"].as_str().unwrap().to_owned(),
    )
}

fn upload(ctx: &TestContext, project: &Path, group: &str, version: &str, extra: &[&str]) {
    set_fixture_version(project, version);
    let mut args = vec![
        "upload",
        "--new-group",
        "--group",
        group,
        "--version",
        version,
        "--level",
        "1",
    ];
    args.extend_from_slice(extra);
    assert_success(
        &ctx.milky_in(project, &args),
        &format!("upload {version} to {group}"),
    );
}

/// The version that answers `/` through the server's nginx.
fn serving(agent: &Agent) -> Option<String> {
    let response = agent.get(APP, "/");
    (response.status == 200).then(|| response.header("X-Milky-Version").unwrap())
}

fn report(ctx: &TestContext, group: &str, host: &str) -> String {
    String::from_utf8(
        ctx.object(&format!("groups/{group}/hosts/{host}.toml"))
            .expect("the agent reports"),
    )
    .unwrap()
}

/// Rewrites `apps.shop.versions.<version>` of the index in the store, as an attacker with write
/// access could.
fn edit_entry(ctx: &TestContext, version: &str, edit: impl FnOnce(&mut toml_edit::Table)) {
    let mut index: toml_edit::DocumentMut = ctx.index().parse().unwrap();
    let entry = index["apps"][APP]["versions"][version]
        .as_table_mut()
        .expect("the version has an entry");
    edit(entry);
    ctx.put_object("version.info", index.to_string().as_bytes());
}

fn entry_field(ctx: &TestContext, version: &str, field: &str) -> toml_edit::Item {
    let index: toml_edit::DocumentMut = ctx.index().parse().unwrap();
    index["apps"][APP]["versions"][version][field].clone()
}

#[test]
fn servers_with_a_trusted_key_install_only_what_it_signed() {
    let ctx = TestContext::new();
    let keys = ctx.dir.path().join("keys");
    let (key_id, public) = keygen(&ctx, &keys);
    let secret = keys.join("signing.key");
    let secret_arg = secret.to_str().unwrap();
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_to_string(keys.join("signing.pub")).unwrap(),
        format!("{public}\n")
    );
    assert!(public.starts_with(&format!("milky-ed25519 {key_id} ")));

    let project = fixture_project(ctx.dir.path(), APP, "v1");
    assert_success(
        &ctx.milky_in(&project, &["init", "--yes", "--name", APP]),
        "init",
    );
    upload(&ctx, &project, "stable", "v1", &["--sign-key", secret_arg]);
    let signature = entry_field(&ctx, "v1", "signature");
    assert!(
        signature
            .as_str()
            .unwrap()
            .starts_with(&format!("{key_id}:")),
        "{signature}"
    );

    // Package signatures alone: signed group state, which servers that trust keys require
    // unless told otherwise, is tested in fleet_state.rs.
    let trusting =
        format!("[signing]\ntrusted_keys = [\"{public}\"]\nrequire_signed_state = false\n");
    let a = Agent::with_settings(&ctx, "stable", "a", &ctx.endpoint, &trusting);
    assert_success(&a.sync(), "sync v1");
    assert_eq!(serving(&a).as_deref(), Some("v1"));
    let status = report(&ctx, "stable", "a");
    assert!(
        status.contains(&format!(
            "[signatures]\ncheck = \"verifying\"\ntrusted_keys = [\"{key_id}\"]"
        )),
        "{status}"
    );

    // Unsigned: refused before any download; v1 keeps serving and the reports say why.
    upload(&ctx, &project, "stable", "v2", &[]);
    let out = a.sync();
    assert_failure(&out, 1, "shop v2 is unsigned");
    assert!(!stderr(&out).contains("downloading"), "{}", stderr(&out));
    assert_eq!(serving(&a).as_deref(), Some("v1"), "the old release serves");
    let status = report(&ctx, "stable", "a");
    assert!(status.contains("shop v2 is unsigned"), "{status}");
    let text = stdout(&ctx.milky(&["status", "stable"]));
    assert!(text.contains("FAILED  a: shop v2 is unsigned"), "{text}");

    // Signed afterwards (key from the environment): the next pass installs it at once.
    let out = ctx
        .milky_command(ctx.dir.path(), &["sign", APP, "v2"])
        .env("MILKY_SIGNING_KEY", &secret)
        .output()
        .unwrap();
    assert_success(&out, "sign v2");
    assert_eq!(stdout(&out), format!("shop v2 signed with key {key_id}\n"));
    assert_success(&a.sync(), "sync the signed v2");
    assert_eq!(serving(&a).as_deref(), Some("v2"));

    // Signed by `[deploy] signing_key`, then its bytes replaced in the store by another
    // package's (v1's): caught by size and sha256 against the signed entry.
    let settings = project.join("milky.toml");
    let text = std::fs::read_to_string(&settings).unwrap();
    let deploy = format!("[deploy]\nsigning_key = \"{}\"\n", secret.display());
    let text = if text.contains("[deploy]\n") {
        text.replace("[deploy]\n", &deploy)
    } else {
        format!("{text}\n{deploy}")
    };
    std::fs::write(&settings, text).unwrap();
    upload(&ctx, &project, "staging", "v3", &[]);
    assert!(
        entry_field(&ctx, "v3", "signature")
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("{key_id}:"))),
        "[deploy] signing_key signs: {}",
        ctx.index()
    );
    let v1_package = ctx.object("packages/shop/shop-v1.tar.bz2").unwrap();
    ctx.put_object("packages/shop/shop-v3.tar.bz2", &v1_package);
    assert_success(
        &ctx.milky(&["version", "--new-group", "stable", APP, "v3"]),
        "version v3",
    );
    let out = a.sync();
    // By size, or by sha256 when the two packages happen to be as long (the versions differ by
    // one byte in the manifest, and compression can even that out).
    assert_failure(&out, 1, "the index says");
    let err = stderr(&out);
    assert!(
        (err.contains("package shop v3 is ") || err.contains("package shop v3 has sha256 "))
            && err.contains("refused"),
        "{err}"
    );
    assert_eq!(serving(&a).as_deref(), Some("v2"));

    // The entry of v3 swapped for v1's (sha256, size and a valid signature, of v1): now the
    // bytes match the entry, but the signature binds v1's name, not v3's.
    edit_entry(&ctx, "v3", |entry| {
        for field in ["sha256", "size", "signature"] {
            entry[field] = entry_field(&ctx, "v1", field);
        }
    });
    let out = a.sync();
    assert_failure(
        &out,
        1,
        &format!("shop v3: the signature by key {key_id} does not match the index entry"),
    );
    assert!(!stderr(&out).contains("downloading"), "{}", stderr(&out));
    assert_eq!(serving(&a).as_deref(), Some("v2"));
    // `sign` does not vouch for it either: the bytes match the entry, the manifest does not.
    assert_failure(
        &ctx.milky(&["sign", APP, "v3", "--sign-key", secret_arg]),
        2,
        "holds the manifest of shop v1, not shop v3",
    );

    // A release on disk is bound to the bytes it was unpacked from: an entry of v1 that names
    // other bytes is refused even with a valid signature (here made with the real key).
    let v1_sha = entry_field(&ctx, "v1", "sha256")
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        std::fs::read_to_string(a.root.join("apps/shop/unpacked-from/v1")).unwrap(),
        format!("{v1_sha}\n")
    );
    let key = milky_core::signing::SecretKey::read(&secret).unwrap();
    let mut entry = milky_core::PackageEntry {
        sha256: "0".repeat(64),
        size: 1234,
        uploaded: "2026-11-25T04:25:00Z".into(),
        signature: None,
        python: None,
    };
    let resigned = key.sign_entry(&APP.parse().unwrap(), &"v1".parse().unwrap(), &entry);
    entry.signature = Some(resigned);
    edit_entry(&ctx, "v1", |row| {
        row["sha256"] = toml_edit::value(&entry.sha256);
        row["size"] = toml_edit::value(1234);
        row["signature"] = toml_edit::value(entry.signature.as_deref().unwrap());
    });
    assert_success(
        &ctx.milky(&["version", "--new-group", "stable", APP, "v1"]),
        "back to v1",
    );
    let out = a.sync();
    assert_failure(
        &out,
        1,
        &format!("shop v1 on disk was unpacked from sha256 {v1_sha}"),
    );
    assert_eq!(serving(&a).as_deref(), Some("v2"));

    // A server that stops trusting the key says that what it serves would not be installed now.
    let other_keys = ctx.dir.path().join("other-keys");
    let (_, other_public) = keygen(&ctx, &other_keys);
    let config = std::fs::read_to_string(&a.config).unwrap();
    std::fs::write(&a.config, config.replace(&public, &other_public)).unwrap();
    assert_success(
        &ctx.milky(&["version", "--new-group", "stable", APP, "v2"]),
        "back to v2",
    );
    let out = a.sync();
    assert_failure(&out, 1, "serves v2, which it would not install now");
    assert!(
        stderr(&out).contains(&format!("signed by {key_id}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(serving(&a).as_deref(), Some("v2"), "it keeps serving");

    // Without trusted keys an agent works as before, and says it does not verify.
    let plain = Agent::new(&ctx, "other", "plain");
    let out = plain.sync();
    assert_success(&out, "sync without keys");
    assert!(
        stderr(&out).contains("package signatures are not verified"),
        "{}",
        stderr(&out)
    );
    let status = report(&ctx, "other", "plain");
    assert!(status.contains("check = \"not-verifying\""), "{status}");
    let text = stdout(&ctx.milky(&["status", "other"]));
    assert!(
        text.contains("server plain does not verify signatures: no trusted keys configured"),
        "{text}"
    );
    let text = stdout(&ctx.milky(&["status", "stable"]));
    assert!(!text.contains("does not verify"), "{text}");
}

#[test]
fn keys_are_never_overwritten_or_packed_and_old_uploads_can_be_signed() {
    let ctx = TestContext::new();
    let keys = ctx.dir.path().join("keys");
    let (key_id, _) = keygen(&ctx, &keys);
    let secret: PathBuf = keys.join("signing.key");
    let secret_arg = secret.to_str().unwrap();
    let again = ctx.milky(&["keygen", "--out", keys.to_str().unwrap()]);
    assert_failure(&again, 2, "exists; pass --force");
    assert_eq!(
        std::fs::read_to_string(keys.join("signing.pub"))
            .unwrap()
            .split(' ')
            .nth(1),
        Some(key_id.as_str()),
        "the key is unchanged"
    );
    // --secret/--public name the files; the public line goes to stdout, the how-to to stderr.
    let out = ctx.milky(&[
        "keygen",
        "--secret",
        keys.join("ci.key").to_str().unwrap(),
        "--public",
        keys.join("ci.pub").to_str().unwrap(),
    ]);
    assert_success(&out, "keygen --secret --public");
    let ci_public = stdout(&out).trim().to_owned();
    assert!(ci_public.starts_with("milky-ed25519 "), "{ci_public}");
    assert!(
        stderr(&out).contains("trusted_keys = [\""),
        "{}",
        stderr(&out)
    );
    let ci_id = ci_public.split(' ').nth(1).unwrap().to_owned();

    let project = ctx.project("blog", "one");
    // A key inside the project would be packed: refused before anything is built.
    std::fs::copy(&secret, project.join("signing.key")).unwrap();
    let out = ctx.milky_in(
        &project,
        &[
            "upload",
            "--new-group",
            "-g",
            "stable",
            "--version",
            "v1",
            "--sign-key",
            "signing.key",
        ],
    );
    assert_failure(&out, 2, "is inside the project");
    std::fs::remove_file(project.join("signing.key")).unwrap();
    // Not a secret key.
    let out = ctx.milky_in(
        &project,
        &[
            "upload",
            "--new-group",
            "-g",
            "stable",
            "--version",
            "v1",
            "--sign-key",
            keys.join("signing.pub").to_str().unwrap(),
        ],
    );
    assert_failure(&out, 2, "this is a public key");
    assert!(ctx.object("version.info").is_none(), "nothing was written");

    // Uploaded unsigned, then again with a key: the entry gets the signature.
    assert_success(
        &ctx.milky_in(
            &project,
            &["upload", "--new-group", "-g", "stable", "--version", "v1"],
        ),
        "unsigned upload",
    );
    assert!(ctx.index().contains("[apps.blog.versions.v1]"));
    assert!(!ctx.index().contains("signature"), "{}", ctx.index());
    let out = ctx.milky_in(
        &project,
        &[
            "upload",
            "--new-group",
            "-g",
            "stable",
            "--version",
            "v1",
            "--sign-key",
            secret_arg,
            "--json",
        ],
    );
    let outcome = json(&out);
    assert_eq!(outcome["uploaded"], false);
    assert_eq!(outcome["signed_by"], key_id.as_str());
    assert!(
        stderr(&out).contains(&format!("signed the entry of blog v1 with key {key_id}")),
        "{}",
        stderr(&out)
    );
    let info = stdout(&ctx.milky(&["info"]));
    assert!(info.contains(&format!("signed {key_id}")), "{info}");

    // Another key's upload keeps the signature; `sign` replaces it, checking the store's bytes.
    let out = ctx.milky_in(
        &project,
        &[
            "upload",
            "--new-group",
            "-g",
            "stable",
            "--version",
            "v1",
            "--sign-key",
            keys.join("ci.key").to_str().unwrap(),
        ],
    );
    assert_success(&out, "upload with another key");
    assert!(
        stderr(&out).contains(&format!("keeps its signature by key {key_id}")),
        "{}",
        stderr(&out)
    );
    let out = json(&ctx.milky(&[
        "sign",
        "blog",
        "v1",
        "--sign-key",
        keys.join("ci.key").to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(out["key_id"], ci_id.as_str());
    assert_eq!(out["replaced"], key_id.as_str());
    assert_eq!(out["changed"], true);
    assert!(ctx.index().contains(&format!("signature = \"{ci_id}:")));

    // A package in the store that no longer matches its entry is not signed.
    ctx.put_object("packages/blog/blog-v1.tar.bz2", b"tampered");
    assert_failure(
        &ctx.milky(&["sign", "blog", "v1", "--sign-key", secret_arg]),
        2,
        "does not match the index entry of blog v1",
    );
    assert_failure(
        &ctx.milky(&["sign", "blog", "v9", "--sign-key", secret_arg]),
        2,
        "has no uploaded version v9",
    );
}

/// Envs carry secrets: a server that trusts a key uses only an env that key signed for exactly
/// its group, app and generation, and keeps serving with the env it has otherwise.
#[test]
fn servers_with_a_trusted_key_use_only_envs_it_signed() {
    let ctx = TestContext::new();
    let keys = ctx.dir.path().join("keys");
    let (key_id, public) = keygen(&ctx, &keys);
    let secret = keys.join("signing.key");
    let secret_arg = secret.to_str().unwrap();
    let project = fixture_project(ctx.dir.path(), APP, "v1");
    assert_success(
        &ctx.milky_in(&project, &["init", "--yes", "--name", APP]),
        "init",
    );
    let set = |value: &str, extra: &[&str]| {
        let greeting = format!("GREETING={value}");
        let mut args = vec!["env", "set", "--new-group", "stable", APP, &greeting];
        args.extend_from_slice(extra);
        ctx.milky(&args)
    };
    let out = set("signed-1", &["--sign-key", secret_arg]);
    assert_success(&out, "env set, signed");
    assert!(
        stdout(&out).contains(&format!("env generation 1, signed by {key_id}")),
        "{}",
        stdout(&out)
    );
    let listed = json(&ctx.milky(&["env", "list", "stable", APP, "--json"]));
    assert_eq!(listed["signed_by"].as_str(), Some(key_id.as_str()));
    upload(&ctx, &project, "stable", "v1", &["--sign-key", secret_arg]);

    // Package signatures alone: signed group state, which servers that trust keys require
    // unless told otherwise, is tested in fleet_state.rs.
    let trusting =
        format!("[signing]\ntrusted_keys = [\"{public}\"]\nrequire_signed_state = false\n");
    let a = Agent::with_settings(&ctx, "stable", "a", &ctx.endpoint, &trusting);
    assert_success(&a.sync(), "sync with the signed env");
    assert!(a.get(APP, "/").body.contains("greeting: signed-1"));

    // Edited without the key: the CLI warns, the server refuses it and keeps the signed env.
    let out = set("unsigned-2", &[]);
    assert_success(&out, "env set, unsigned");
    assert!(
        stderr(&out).contains("this generation is not"),
        "{}",
        stderr(&out)
    );
    let out = a.sync();
    assert_failure(&out, 1, "the env of shop in stable is unsigned");
    let page = a.get(APP, "/").body;
    assert!(page.contains("greeting: signed-1"), "{page}");
    let status = report(&ctx, "stable", "a");
    assert!(
        status.contains("the env of shop in stable is unsigned"),
        "{status}"
    );

    // Signed as it is: a new generation, which the next pass runs.
    let out = ctx
        .milky_command(ctx.dir.path(), &["env", "sign", "stable", APP])
        .env("MILKY_SIGNING_KEY", &secret)
        .output()
        .unwrap();
    assert_success(&out, "env sign");
    assert!(
        stdout(&out).contains(&format!("env generation 3 signed by {key_id}")),
        "{}",
        stdout(&out)
    );
    assert_success(&a.sync(), "sync the signed env");
    assert!(a.get(APP, "/").body.contains("greeting: unsigned-2"));
    // Signing again changes nothing.
    let out = ctx.milky(&["env", "sign", "stable", APP, "--sign-key", secret_arg]);
    assert_success(&out, "env sign again");
    assert!(stdout(&out).contains("was signed by"), "{}", stdout(&out));

    // Changed in the store after signing, as an attacker with write access could: a variable
    // added under the same signature and a bumped generation in the index.
    let key = format!("groups/stable/env/{APP}.toml");
    let text = String::from_utf8(ctx.object(&key).unwrap()).unwrap();
    let forged = text
        .replace("generation = 3", "generation = 4")
        .replace("[vars]\n", "[vars]\nDEBUG = \"1\"\n");
    assert_ne!(forged, text);
    ctx.put_object(&key, forged.as_bytes());
    let mut index: toml_edit::DocumentMut = ctx.index().parse().unwrap();
    index["env"]["stable"][APP] = toml_edit::value(4);
    ctx.put_object("version.info", index.to_string().as_bytes());
    let out = a.sync();
    assert_failure(
        &out,
        1,
        &format!("the env of shop in stable: the signature by key {key_id} does not match the env"),
    );
    assert!(a.get(APP, "/").body.contains("greeting: unsigned-2"));

    // `env sign` on an app without an env is a user error.
    assert_failure(
        &ctx.milky(&["env", "sign", "stable", "blog", "--sign-key", secret_arg]),
        2,
        "blog has no env in stable: nothing to sign",
    );
}
