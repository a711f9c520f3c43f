//! `cargo xtask bench`: MilkyWhite against the tools and the design it replaces, each baseline
//! measured in the same run on the same machine, written to `docs/BENCHMARKS.md`.
//!
//! The bench makes its own workload (see [`workload`]), installs what it needs (lbzip2, wrk,
//! GNU time from Debian; awscli and boto3 in a venv), builds the release binaries, starts moto
//! on loopback and talks to nothing else. Every load loop is bounded in time and every process
//! it starts is ended by its pid. `--quick` runs fewer repetitions; `--only 1,1b,…` a subset
//! (the report then says so); `--debug-build` measures the debug binaries instead of building
//! the fat-LTO release ones (for I/O-bound rows on a machine too busy to build; the report's
//! command says so).

mod converge;
mod costs;
mod cpu;
mod download;
mod fleet;
mod idle;
mod index_growth;
mod meter;
mod moto;
mod package;
mod report;
mod servers;
mod stats;
mod switch;
mod transfer;
mod unpack;
mod workload;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::tools::{self, run as run_cmd, workspace_root};

/// The bench's own tools, beside the tests' tools venv.
const TOOLS_PIP: &[&str] = &["awscli", "boto3"];
const DEBIAN: &[&str] = &["lbzip2", "bzip2", "wrk", "time", "tar"];

/// What every benchmark needs.
pub struct Bench {
    pub work: PathBuf,
    pub cache: PathBuf,
    pub milky_bin: PathBuf,
    pub agent: PathBuf,
    pub moto: moto::Moto,
    /// The store every server reads: `s3://bench/fleet`.
    pub store: String,
    pub project: PathBuf,
    /// Repetitions of the quick measures (packing, unpacking, transfers).
    pub runs: usize,
    pub quick: bool,
    /// Measuring target/debug's binaries (`--debug-build`), not the release build's.
    pub debug_build: bool,
}

impl Bench {
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "milkybench".into()),
            ("AWS_SECRET_ACCESS_KEY", "milkybench".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.moto.endpoint.clone()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ]
    }

    /// `cargo-milky milky ARGS…` in `cwd` against the bench's store.
    pub fn milky(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(&self.milky_bin);
        command
            .current_dir(cwd)
            .arg("milky")
            .args(args)
            .env("MILKY_STORE", &self.store)
            .env_remove("RUST_LOG");
        for (key, value) in self.aws_env() {
            command.env(key, value);
        }
        command
    }

    /// Runs `cargo milky ARGS…`, failing with its output unless it succeeds.
    pub fn milky_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.milky(&self.work, args).output()?;
        if !out.status.success() {
            bail!(
                "cargo milky {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Packs the project as `version` (not timed) and returns the package path.
    pub fn package(&self, version: &str) -> anyhow::Result<PathBuf> {
        std::fs::write(self.project.join("VERSION"), format!("{version}\n"))?;
        let out_dir = self.work.join("packages");
        let out = self
            .milky(
                &self.project,
                &[
                    "package",
                    "--version",
                    version,
                    "--out-dir",
                    &out_dir.to_string_lossy(),
                ],
            )
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "packing {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }

    pub fn tools_venv(&self) -> PathBuf {
        self.cache.join("bench-tools")
    }

    pub fn tools_python(&self) -> PathBuf {
        self.tools_venv().join("bin/python")
    }
}

/// Runs a command, reading its stderr line by line with the time each line arrived.
pub fn lines_of(command: &mut Command) -> anyhow::Result<(bool, Vec<(Instant, String)>)> {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", tools::display(command)))?;
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
        lines.push((Instant::now(), line?));
    }
    Ok((child.wait()?.success(), lines))
}

struct Options {
    quick: bool,
    only: Option<Vec<String>>,
    debug_build: bool,
}

fn options(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        quick: false,
        only: None,
        debug_build: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--debug-build" => options.debug_build = true,
            "--only" => {
                let list = args.next().context("--only needs a list, e.g. 1,1b,3")?;
                options.only = Some(list.split(',').map(str::to_owned).collect());
            }
            other => {
                bail!(
                    "unknown bench option {other:?} (known: --quick, --debug-build, --only 1,1b,2,3,4,5,6,7,8)"
                )
            }
        }
    }
    Ok(options)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let options = options(args)?;
    let wanted = |id: &str| {
        options
            .only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o == id))
    };
    let root = workspace_root();
    let started = Instant::now();

    tools::ensure_apt_packages()?;
    ensure_debian(DEBIAN)?;
    let moto_bin = tools::ensure_moto()?;
    let cache = tools::tools_venv()
        .parent()
        .expect("the tools venv has a parent")
        .to_owned();
    ensure_tools_venv(&cache.join("bench-tools"))?;
    let profile = if options.debug_build {
        // As the tests build them: the same features, so nothing is rebuilt.
        tools::run(tools::cargo().args(["build", "--workspace", "--bins"]))?;
        "debug"
    } else {
        tools::build_release()?;
        "release"
    };

    // Under /tmp: Apache's and nginx's users must reach the releases (a home dir is 0700). One
    // per checkout, so that benches of two worktrees on one machine do not clear each other's.
    let checkout = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let work = PathBuf::from(format!("/tmp/milky-bench-{checkout}"));
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755))?;
    let moto = moto::Moto::start(&moto_bin, &work)?;
    moto.create_bucket("bench")?;
    let mut bench = Bench {
        work: work.clone(),
        cache,
        milky_bin: root.join("target").join(profile).join("cargo-milky"),
        agent: root.join("target").join(profile).join("milky-agent"),
        moto,
        store: "s3://bench/fleet".into(),
        project: PathBuf::new(),
        runs: if options.quick { 2 } else { 5 },
        quick: options.quick,
        debug_build: options.debug_build,
    };
    bench.project = workload::project(&bench)?;

    let mut report = report::Report::new(&bench, options.quick, options.only.clone());
    // Every later benchmark needs the reference package; packing it is benchmark 1.
    let package = if wanted("1") {
        package::run(&bench, &mut report)?
    } else {
        bench.package("ref1")?
    };
    bench.milky_ok(&[
        "upload",
        "--new-group",
        "--group",
        "unpack",
        &package.to_string_lossy(),
    ])?;
    let mut downloads = stats::Samples::default();
    if wanted("1b") {
        downloads = unpack::run(&bench, &package, &mut report)?;
    }
    if wanted("2") {
        transfer::run(&bench, &package, &downloads, &mut report)?;
    }
    // Without benchmark 3 in this run, benchmark 6 prices what the page's run of it measured.
    let mut idle_requests = report.earlier_idle_requests();
    if wanted("3") {
        idle_requests = Some((idle::run(&bench, &mut report)?, "this run".to_owned()));
    }
    if wanted("4") {
        converge::run(&bench, &mut report)?;
    }
    if wanted("5") {
        switch::run(&bench, &mut report)?;
    }
    let fleet = if wanted("7") {
        Some(fleet::run(&bench, &mut report)?)
    } else {
        None
    };
    let index = if wanted("8") {
        Some(index_growth::run(&bench, &package, &mut report)?)
    } else {
        None
    };
    if wanted("6") {
        costs::scale(&mut report, idle_requests, fleet, index);
    }
    report.finish(started.elapsed());
    let path = root.join("docs/BENCHMARKS.md");
    std::fs::write(&path, report.markdown())?;
    eprintln!(
        "bench: wrote {} in {:.0} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Debian packages the bench needs beyond the tests' own.
fn ensure_debian(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", p]).output();
            !matches!(out, Ok(out) if String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("bench: installing Debian packages: {}", missing.join(" "));
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let apt = |args: &[&str]| {
        let mut command = if root {
            Command::new("apt-get")
        } else {
            Command::new("sudo")
        };
        if !root {
            command.arg("apt-get");
        }
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    run_cmd(&mut apt(&["update", "-qq"]))?;
    run_cmd(apt(&["install", "-y", "-qq", "--no-install-recommends"]).args(&missing))
}

/// awscli (the `aws s3 cp` baseline) and boto3 (the original design's agent) in a venv of the
/// servers' Python, installed once.
fn ensure_tools_venv(venv: &Path) -> anyhow::Result<()> {
    let marker = venv.join(".bench-installed");
    let want = TOOLS_PIP.join(" ");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == want) {
        return Ok(());
    }
    eprintln!("bench: installing {want} into {} (once)", venv.display());
    if !venv.join("bin/python").exists() {
        run_cmd(
            Command::new("/usr/bin/python3")
                .args(["-m", "venv"])
                .arg(venv),
        )?;
    }
    run_cmd(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(TOOLS_PIP),
    )?;
    std::fs::write(&marker, want)?;
    Ok(())
}
