//! `cargo xtask dist`: release binaries of `cargo-milky` and `milky-agent`, `install_server.sh`
//! and the agent's Debian package, in `target/dist/`.
//!
//! The package is staged as a plain directory tree and built with `dpkg-deb --build
//! --root-owner-group` (see `deb.rs`): no cargo-deb, no debhelper. `--deb-only` builds just the
//! package from a given binary, which is how the tests check it on the debug build.

mod deb;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::tools::{self, workspace_root};

const USAGE: &str = "\
usage: cargo xtask dist [--deb-only [--binary PATH]] [--out DIR] [--compress TYPE]

Builds release binaries (cargo build --release -p cargo-milky -p milky-agent), copies them
(debug info stripped, symbols kept) and install_server.sh into target/dist/, and builds the
agent's Debian package target/dist/milky-agent_<version>_<arch>.deb, with a SHA256SUMS file.

options:
  --deb-only       only the .deb, from an existing binary (no cargo build)
  --binary PATH    the milky-agent binary for --deb-only (default: target/release/milky-agent)
  --out DIR        where to put what is built (default: target/dist)
  --compress TYPE  the .deb's compression: xz (default), gzip, zstd or none
";

#[derive(Debug)]
struct Options {
    deb_only: bool,
    binary: Option<PathBuf>,
    out: Option<PathBuf>,
    compress: String,
}

fn parse(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut options = Options {
        deb_only: false,
        binary: None,
        out: None,
        compress: "xz".into(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .with_context(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--deb-only" => options.deb_only = true,
            "--binary" => options.binary = Some(value("--binary")?.into()),
            "--out" => options.out = Some(value("--out")?.into()),
            "--compress" => options.compress = value("--compress")?,
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    if !["xz", "gzip", "zstd", "none"].contains(&options.compress.as_str()) {
        bail!(
            "--compress must be xz, gzip, zstd or none, not {:?}",
            options.compress
        );
    }
    if options.binary.is_some() && !options.deb_only {
        bail!("--binary goes with --deb-only (a full dist builds its own binaries)");
    }
    Ok(Some(options))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(options) = parse(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"));
    let out = options.out.unwrap_or_else(|| target.join("dist"));
    fs_create_dir_all(&out)?;

    let mut built = Vec::new();
    let agent = if options.deb_only {
        options
            .binary
            .unwrap_or_else(|| target.join("release/milky-agent"))
    } else {
        tools::build_release()?;
        for name in ["cargo-milky", "milky-agent"] {
            let copy = copy_executable(&target.join("release").join(name), &out.join(name))?;
            deb::strip_debug(&copy)?;
            built.push(copy);
        }
        built.push(copy_executable(
            &root.join("install_server.sh"),
            &out.join("install_server.sh"),
        )?);
        out.join("milky-agent")
    };
    if !agent.is_file() {
        bail!(
            "{} does not exist: build it first, or pass --binary",
            agent.display()
        );
    }

    let package = deb::Package {
        version: deb::debian_version(&workspace_version(&root)?),
        arch: deb::dpkg_architecture()?,
        binary: agent,
        packaging: root.join("packaging"),
        compress: options.compress,
    };
    built.push(package.build(&out)?);

    if !options.deb_only {
        write_checksums(&out, &built)?;
        built.push(out.join("SHA256SUMS"));
    }
    println!("built:");
    for path in &built {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        println!("  {}  ({:.1} MiB)", path.display(), size as f64 / 1048576.0);
    }
    Ok(())
}

/// `version` under `[workspace.package]` in the workspace's Cargo.toml: the version of every
/// crate, and of the package.
fn workspace_version(root: &Path) -> anyhow::Result<String> {
    let path = root.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut in_section = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
        } else if in_section
            && let Some(value) = line
                .strip_prefix("version")
                .and_then(|rest| rest.trim_start().strip_prefix('='))
        {
            return Ok(value.trim().trim_matches('"').to_owned());
        }
    }
    bail!("no version under [workspace.package] in {}", path.display())
}

fn fs_create_dir_all(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn copy_executable(from: &Path, to: &Path) -> anyhow::Result<PathBuf> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    deb::set_mode(to, 0o755)?;
    Ok(to.to_owned())
}

/// `SHA256SUMS` beside the files, in `sha256sum -c` format.
fn write_checksums(out: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    let mut command = Command::new("sha256sum");
    command.current_dir(out);
    for file in files {
        command.arg(file.file_name().context("a built file has a name")?);
    }
    let output = command
        .output()
        .with_context(|| format!("running {}", tools::display(&command)))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            tools::display(&command),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let path = out.join("SHA256SUMS");
    std::fs::write(&path, output.stdout).with_context(|| format!("writing {}", path.display()))
}
