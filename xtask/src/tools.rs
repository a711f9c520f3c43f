//! Installing what the tests and the demo need on a fresh Debian machine, idempotently, saying
//! what is installed and why.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Debian packages: the web stack the agent drives, the Python that mod_wsgi is built against
/// (with venv), Apache's build tools (apxs: the agent builds mod_wsgi for other Pythons), git
/// for packaging versions, and the tools tests call (shellcheck, bzip2 for `tar -xjf`, setpriv
/// from util-linux, pebble: an ACME test CA with its DNS server).
pub const APT_PACKAGES: &[&str] = &[
    "nginx",
    "apache2",
    "libapache2-mod-wsgi-py3",
    "apache2-dev",
    "gcc",
    "python3-venv",
    "python3-pip",
    "git",
    "curl",
    "shellcheck",
    "bzip2",
    "util-linux",
    "pebble",
];

/// The S3-compatible server the tests start on loopback. 5.2.5 answers conditional writes with
/// 412 and conditional GETs with 304 (measured when it was chosen); 5.2.1 mis-serialises multipart completes.
pub const MOTO: &str = "moto[server]==5.2.5";

/// The uv the tests give agents (`[python] uv`) and `uv lock` projects with: a binary wheel
/// on PyPI, so pip installs it like moto.
pub const UV: &str = "uv==0.13.8";

/// `cargo` in the workspace root, without the variables `cargo xtask` itself was run with
/// (`CARGO_PKG_NAME=xtask`, …). Build scripts such as ring's watch some of them, so a nested
/// build that inherits them fingerprints differently from a plain `cargo build` and the two
/// keep rebuilding the crates above ring (rustls, the AWS SDK) for each other.
pub fn cargo() -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(workspace_root());
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_by_cargo_run = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || matches!(
                key,
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            );
        if set_by_cargo_run {
            command.env_remove(key);
        }
    }
    command
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_owned()
}

/// Runs a command, echoing it, and fails with its status.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {}", display(command));
    let status = command
        .status()
        .with_context(|| format!("starting {}", display(command)))?;
    if !status.success() {
        bail!("{} failed ({status})", display(command));
    }
    Ok(())
}

pub fn display(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn missing_apt_packages() -> Vec<&'static str> {
    APT_PACKAGES
        .iter()
        .copied()
        .filter(|package| {
            let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", package]).output();
            !matches!(out, Ok(out) if String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
        })
        .collect()
}

/// Installs the missing Debian packages (as root, or through sudo).
pub fn ensure_apt_packages() -> anyhow::Result<()> {
    let missing = missing_apt_packages();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let apt = |args: &[&str]| {
        let mut command = if is_root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    run(&mut apt(&["update", "-qq"]))?;
    run(apt(&["install", "-y", "-qq", "--no-install-recommends"]).args(&missing))?;
    // The distribution's own Apache and nginx services are not used: tests start their own.
    Ok(())
}

/// A venv of test tools (moto) kept across clones in the user's cache dir.
pub fn tools_venv() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| workspace_root().join("target"));
    cache.join("milkywhite").join("test-tools")
}

/// Makes sure moto's server (and uv) are installed in the tools venv; returns moto's path.
pub fn ensure_moto() -> anyhow::Result<PathBuf> {
    let venv = tools_venv();
    let moto = venv.join("bin").join("moto_server");
    let marker = venv.join(".installed");
    let wanted = format!("{MOTO} {UV}");
    if moto.is_file() && std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        return Ok(moto);
    }
    eprintln!("xtask: installing {wanted} into {} (once)", venv.display());
    if !venv.join("bin").join("python").exists() {
        run(Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&venv))?;
    }
    run(Command::new(venv.join("bin").join("pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        MOTO,
        UV,
    ]))?;
    std::fs::write(&marker, wanted).with_context(|| format!("writing {}", marker.display()))?;
    Ok(moto)
}

/// A second S3-compatible server for the store tests: it checks request signatures, and checks
/// write conditions without a lock (the kind of store `doctor` must catch).
pub const S3S_FS_VERSION: &str = "0.14.1";

/// Makes sure s3s-fs is installed in the tools dir (`cargo install`, a few minutes, once);
/// returns its path.
pub fn ensure_s3s_fs() -> anyhow::Result<PathBuf> {
    let root = tools_venv();
    let program = root.join("bin").join("s3s-fs");
    let marker = root.join(".s3s-fs-installed");
    if program.is_file() && std::fs::read_to_string(&marker).is_ok_and(|m| m == S3S_FS_VERSION) {
        return Ok(program);
    }
    eprintln!(
        "xtask: installing s3s-fs {S3S_FS_VERSION} into {} (once, a few minutes)",
        root.display()
    );
    run(cargo()
        .args(["install", "s3s-fs", "--version", S3S_FS_VERSION])
        .args(["--features", "binary", "--locked", "--root"])
        .arg(&root))?;
    std::fs::write(&marker, S3S_FS_VERSION)
        .with_context(|| format!("writing {}", marker.display()))?;
    Ok(program)
}

/// Release builds of both binaries, for `bench` and `dist`.
pub fn build_release() -> anyhow::Result<()> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "cargo-milky",
        "-p",
        "milky-agent",
    ]))
}
