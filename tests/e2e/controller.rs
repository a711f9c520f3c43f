//! `cargo milky` against a real S3-compatible server (moto), driven as a user would.

use std::process::Output;

use milky_core::Index;
use milky_dev_support::Ports;
use milky_tests::*;
use serde_json::Value;

fn json(out: &Output) -> Value {
    assert_success(out, "command with --json");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

#[test]
fn upload_switch_remove_and_info_round_trip() {
    let ctx = TestContext::new();
    let project = ctx.project("shop", "one");
    let out = ctx.milky_in(
        &project,
        &[
            "upload",
            "--new-group",
            "--group",
            "stable",
            "--version",
            "v1",
            ".",
        ],
    );
    assert_success(&out, "upload v1");
    assert_eq!(stdout(&out), "stable now runs shop v1\n");
    assert!(
        ctx.object("packages/shop/shop-v1.tar.bz2").is_some(),
        "package is in the store"
    );

    write(&project.join("VERSION"), "two");
    // The seed's positional form: upload GROUP PATH.
    let out = ctx.milky_in(
        &project,
        &["upload", "--new-group", "unstable", ".", "--version", "v2"],
    );
    assert_success(&out, "upload v2");
    let out = ctx.milky(&["version", "--new-group", "stable", "shop", "v2"]);
    assert_success(&out, "version");
    assert_eq!(stdout(&out), "stable now runs shop v2 (was v1)\n");

    let info = json(&ctx.milky(&["info", "--json"]));
    assert_eq!(info["groups"]["stable"]["shop"], "v2");
    assert_eq!(info["groups"]["unstable"]["shop"], "v2");
    let versions = info["apps"]["shop"].as_object().unwrap();
    assert_eq!(versions.keys().collect::<Vec<_>>(), ["v1", "v2"]);
    let package = ctx.object("packages/shop/shop-v1.tar.bz2").unwrap();
    assert_eq!(versions["v1"]["size"], package.len());

    let out = ctx.milky(&["remove", "--yes", "stable", "shop"]);
    assert_success(&out, "remove");
    let index = Index::parse(&ctx.index()).unwrap();
    assert!(index.group(&"stable".parse().unwrap()).is_empty());
    assert!(
        ctx.object("packages/shop/shop-v1.tar.bz2").is_some(),
        "packages stay after remove"
    );

    let text = stdout(&ctx.milky(&["info"]));
    assert!(text.contains("group unstable\n  shop"), "{text}");
}

#[test]
fn a_version_is_immutable_and_the_same_bytes_again_are_a_no_op() {
    let ctx = TestContext::new();
    let project = ctx.project("blog", "one");
    assert_success(
        &ctx.milky_in(
            &project,
            &["upload", "--new-group", "-g", "stable", "--version", "v1"],
        ),
        "first upload",
    );
    let package = ctx.object("packages/blog/blog-v1.tar.bz2").unwrap();

    let out = json(&ctx.milky_in(
        &project,
        &[
            "upload",
            "--new-group",
            "-g",
            "stable",
            "--version",
            "v1",
            "--json",
        ],
    ));
    assert_eq!(out["uploaded"], false, "same bytes are not sent again");
    assert_eq!(out["previous"], "v1");

    write(&project.join("VERSION"), "changed");
    let index_before = ctx.index();
    let out = ctx.milky_in(
        &project,
        &["upload", "--new-group", "-g", "stable", "--version", "v1"],
    );
    assert_failure(&out, 2, "already uploaded with other bytes");
    assert_eq!(
        ctx.index(),
        index_before,
        "a refused upload changes nothing"
    );
    assert_eq!(
        ctx.object("packages/blog/blog-v1.tar.bz2").unwrap(),
        package
    );

    // Even if the index forgot the version, the store itself refuses to overwrite the package.
    let mut index = Index::parse(&index_before).unwrap();
    index
        .remove_app(&"stable".parse().unwrap(), &"blog".parse().unwrap())
        .unwrap();
    let forgotten = index_before.replace("[apps.blog.versions.v1]", "[apps.blog.versions.v0]");
    ctx.put_object("version.info", forgotten.as_bytes());
    let out = ctx.milky_in(
        &project,
        &["upload", "--new-group", "-g", "stable", "--version", "v1"],
    );
    assert_failure(&out, 2, "already exists in the store with other bytes");
    assert_eq!(
        ctx.object("packages/blog/blog-v1.tar.bz2").unwrap(),
        package
    );
}

#[test]
fn version_needs_the_package_in_the_store() {
    let ctx = TestContext::new();
    let project = ctx.project("api", "one");
    assert_success(
        &ctx.milky_in(
            &project,
            &["upload", "--new-group", "-g", "stable", "--version", "v1"],
        ),
        "upload v1",
    );
    assert_success(
        &ctx.milky_in(
            &project,
            &["upload", "--new-group", "-g", "unstable", "--version", "v2"],
        ),
        "upload v2",
    );
    let out = ctx.milky(&["version", "--new-group", "stable", "api", "v7"]);
    assert_failure(&out, 2, "api v7 is not in the store");
    // Listed in the index but gone from the store: checked, not assumed.
    ctx.delete_object("packages/api/api-v2.tar.bz2");
    let before = ctx.index();
    let out = ctx.milky(&["version", "--new-group", "stable", "api", "v2"]);
    assert_failure(&out, 2, "api v2 is not in the store");
    assert_eq!(ctx.index(), before);
    let out = ctx.milky(&["remove", "--yes", "stable", "nosuchapp"]);
    assert_failure(&out, 2, "group stable does not run app nosuchapp");
}

#[test]
fn a_broken_index_is_never_overwritten() {
    let ctx = TestContext::new();
    let project = ctx.project("cms", "one");
    let broken = "schema = 1\n[groups.stable\ncms = \"v1\"\n";
    ctx.put_object("version.info", broken.as_bytes());
    let out = ctx.milky_in(
        &project,
        &["upload", "--new-group", "-g", "stable", "--version", "v1"],
    );
    assert_failure(&out, 1, "version.info is broken");
    assert!(
        stderr(&out).contains("line 2"),
        "says where: {}",
        stderr(&out)
    );
    assert_eq!(ctx.index(), broken);
    for args in [
        &["version", "--new-group", "stable", "cms", "v1"][..],
        &["remove", "--yes", "stable", "cms"],
        &["info"],
    ] {
        let out = ctx.milky(args);
        assert_failure(&out, 1, "version.info is broken");
    }
    ctx.put_object("version.info", b"schema = 9\n");
    assert_failure(&ctx.milky(&["info"]), 1, "schema 9");
    assert_eq!(ctx.index(), "schema = 9\n");
}

#[test]
fn bad_names_unreachable_stores_and_missing_settings_are_clear_errors() {
    let ctx = TestContext::new();
    assert_failure(
        &ctx.milky(&["version", "--new-group", "Stable!", "app", "v1"]),
        2,
        "invalid group name \"Stable!\"",
    );
    assert_failure(
        &ctx.milky(&["version", "--new-group", "stable", "my app", "v1"]),
        2,
        "invalid app name",
    );
    assert_failure(
        &ctx.milky(&["version", "--new-group", "stable", "app", "../v1"]),
        2,
        "invalid version",
    );
    assert_failure(
        &ctx.milky(&["info", "--store", "ftp://x"]),
        2,
        "bad store URL",
    );

    // Reserved while the command runs, so nothing listens on it.
    let dead_port = Ports::one().unwrap();
    let dead = format!("http://127.0.0.1:{}", dead_port.first());
    let out = ctx.milky(&["info", "--endpoint-url", &dead]);
    assert_failure(&out, 1, "cannot reach the store");

    let out = ctx
        .milky_command(ctx.dir.path(), &["info"])
        .env_remove("MILKY_STORE")
        .output()
        .unwrap();
    assert_failure(&out, 2, "no store given");
}

#[test]
fn twenty_controllers_at_once_lose_no_update() {
    let ctx = TestContext::new();
    // Ten apps, each packed beforehand, so the race is about the index, not about packing.
    let mut packages = Vec::new();
    for n in 0..10 {
        let name = format!("app{n}");
        let project = ctx.project(&name, &name);
        let out = ctx.milky_in(
            &project,
            &["package", "--version", "v1", "--threads", "1", "--json"],
        );
        packages.push(json(&out)["path"].as_str().unwrap().to_owned());
    }
    assert_success(
        &ctx.milky(&["upload", "--new-group", "base", &packages[0]]),
        "seed upload",
    );

    // Ten uploads (each app into its own group) and ten version switches, all at once.
    let mut children = Vec::new();
    for (n, package) in packages.iter().enumerate() {
        let group = format!("up{n}");
        children.push(
            ctx.milky_command(ctx.dir.path(), &["upload", "--new-group", &group, package])
                .spawn()
                .unwrap(),
        );
        let group = format!("sw{n}");
        children.push(
            ctx.milky_command(
                ctx.dir.path(),
                &["version", "--new-group", &group, "app0", "v1"],
            )
            .spawn()
            .unwrap(),
        );
    }
    for mut child in children {
        assert!(
            child.wait().unwrap().success(),
            "a concurrent command failed"
        );
    }
    let index = Index::parse(&ctx.index()).expect("the index is valid after the race");
    let groups = index.groups();
    for n in 0..10 {
        let app: milky_core::AppName = format!("app{n}").parse().unwrap();
        assert_eq!(
            groups[&format!("up{n}").parse().unwrap()][&app].as_str(),
            "v1",
            "upload {n} lost"
        );
        assert_eq!(
            groups[&format!("sw{n}").parse().unwrap()][&"app0".parse().unwrap()].as_str(),
            "v1",
            "switch {n} lost"
        );
        assert!(
            index.package(&app, &"v1".parse().unwrap()).is_some(),
            "package entry {n} lost"
        );
    }
}

#[test]
fn large_packages_go_up_in_parts() {
    let ctx = TestContext::new();
    let project = ctx.project("media", "one");
    // 20 MB that bzip2 cannot shrink: the package is larger than one 16 MiB part.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..20_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(project.join("blob.bin"), &noise).unwrap();
    let out = json(&ctx.milky_in(
        &project,
        &[
            "upload",
            "--new-group",
            "-g",
            "stable",
            "--version",
            "v1",
            "--json",
        ],
    ));
    assert_eq!(out["uploaded"], true);
    let stored = ctx.object("packages/media/media-v1.tar.bz2").unwrap();
    assert!(
        stored.len() > 16 * 1024 * 1024,
        "package should be multipart-sized: {}",
        stored.len()
    );
    use sha2_check::sha256_hex;
    assert_eq!(sha256_hex(&stored), out["sha256"].as_str().unwrap());
    // The same version with other bytes is refused by the store's conditional complete too.
    std::fs::write(project.join("blob.bin"), &noise[1..]).unwrap();
    ctx.put_object("version.info", b"schema = 1\n");
    let out = ctx.milky_in(
        &project,
        &["upload", "--new-group", "-g", "stable", "--version", "v1"],
    );
    assert_failure(&out, 2, "already exists in the store with other bytes");
    assert_eq!(
        ctx.object("packages/media/media-v1.tar.bz2").unwrap(),
        stored
    );
}

#[test]
fn the_local_directory_store_behaves_the_same() {
    let ctx = TestContext::new();
    let project = ctx.project("local", "one");
    let store = format!("file://{}", ctx.dir.path().join("store").display());
    let milky =
        |args: &[&str]| ctx.milky_in(&project, &[&["--store", store.as_str()], args].concat());
    assert_success(
        &milky(&["upload", "--new-group", "-g", "stable", "--version", "v1"]),
        "upload",
    );
    write(&project.join("VERSION"), "two");
    assert_failure(
        &milky(&["upload", "--new-group", "-g", "stable", "--version", "v1"]),
        2,
        "other bytes",
    );
    assert_success(
        &milky(&["upload", "--new-group", "-g", "stable", "--version", "v2"]),
        "upload v2",
    );
    assert_success(
        &milky(&["version", "--new-group", "stable", "local", "v1"]),
        "version",
    );
    let info = json(&milky(&["info", "--json"]));
    assert_eq!(info["groups"]["stable"]["local"], "v1");
    assert!(
        ctx.dir
            .path()
            .join("store/packages/local/local-v2.tar.bz2")
            .is_file()
    );
}

#[test]
fn cargo_finds_the_subcommand_and_every_command_explains_itself() {
    let bin_dir = bin("cargo-milky").parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("cargo")
        .args(["milky", "--help"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_success(&out, "cargo milky --help");
    let help = stdout(&out);
    for command in ["init", "package", "upload", "version", "remove", "info"] {
        assert!(help.contains(command), "--help lists {command}: {help}");
        let out = std::process::Command::new("cargo")
            .args(["milky", command, "--help"])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert_success(&out, command);
        assert!(
            stdout(&out).contains("Usage: cargo milky"),
            "{}",
            stdout(&out)
        );
    }
}

mod sha2_check {
    pub fn sha256_hex(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, bytes).unwrap();
        milky_core::package::build::file_sha256(&path).unwrap()
    }
}

#[test]
fn wheels_are_vendored_and_a_cargo_workspace_gets_the_package_in_its_target_dir() {
    let ctx = TestContext::new();
    let workspace = ctx.dir.path().join("ws");
    write(&workspace.join("Cargo.toml"), "[workspace]\nmembers = []\n");
    let project = {
        let root = workspace.join("site");
        write(
            &root.join("manage.py"),
            "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'conf.settings')\n",
        );
        write(&root.join("conf/settings.py"), "");
        write(&root.join("conf/wsgi.py"), "application = None\n");
        write(&root.join("requirements.txt"), "sqlparse==0.6.1\n");
        assert_success(
            &ctx.milky_in(&root, &["init", "--yes", "--name", "site"]),
            "init",
        );
        root
    };
    let target = ctx.dir.path().join("cargo-target");
    let out = ctx
        .milky_command(
            &project,
            &["package", "--version", "v1", "--wheels", "--json"],
        )
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let built = json(&out);
    let path = std::path::PathBuf::from(built["path"].as_str().unwrap());
    assert_eq!(
        path,
        target.join("milky/site-v1.tar.bz2"),
        "the package lands in the Cargo target dir"
    );
    assert_eq!(built["manifest"]["release"]["wheels"], true);
    let listing = std::process::Command::new("tar")
        .arg("-tjf")
        .arg(&path)
        .output()
        .unwrap();
    assert_success(&listing, "tar -tjf accepts the package");
    assert!(
        stdout(&listing).contains("wheels/sqlparse-0.6.1-py3-none-any.whl"),
        "{}",
        stdout(&listing)
    );
}
