//! Installing what the tests and the demo need on a fresh Debian machine, idempotently, saying
//! what is installed and why.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Debian packages: the web stack the agent drives, the Python that mod_wsgi is built against
/// (with venv), git for packaging versions, and the tools tests call (shellcheck, bzip2 for
/// `tar -xjf`, setpriv from util-linux).
pub const APT_PACKAGES: &[&str] = &[
    "nginx",
    "apache2",
    "libapache2-mod-wsgi-py3",
    "python3-venv",
    "python3-pip",
    "git",
    "curl",
    "shellcheck",
    "bzip2",
    "util-linux",
];

/// The S3-compatible server the tests start on loopback. 5.2.5 answers conditional writes with
/// 412 and conditional GETs with 304 (see FACTS.md); 5.2.1 mis-serialises multipart completes.
pub const MOTO: &str = "moto[server]==5.2.5";

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

/// Makes sure moto's server is installed in the tools venv; returns its path.
pub fn ensure_moto() -> anyhow::Result<PathBuf> {
    let venv = tools_venv();
    let moto = venv.join("bin").join("moto_server");
    let marker = venv.join(".installed");
    if moto.is_file() && std::fs::read_to_string(&marker).is_ok_and(|m| m == MOTO) {
        return Ok(moto);
    }
    eprintln!("xtask: installing {MOTO} into {} (once)", venv.display());
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
    ]))?;
    std::fs::write(&marker, MOTO).with_context(|| format!("writing {}", marker.display()))?;
    Ok(moto)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Ten consecutive free loopback ports, a new range per call. They lie below the kernel's
/// ephemeral range (32768 and up), so an outgoing connection's local port can never take one
/// that an Apache slot binds only later.
pub fn free_port_range() -> u16 {
    static NEXT_BASE: std::sync::Mutex<u16> = std::sync::Mutex::new(0);
    let mut next = NEXT_BASE.lock().unwrap_or_else(|e| e.into_inner());
    if *next == 0 {
        *next = 21_000 + (std::process::id() % 500) as u16 * 10;
    }
    loop {
        let base = *next;
        *next = if base >= 32_750 { 21_000 } else { base + 10 };
        if (base..base + 10).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
}

/// A child process that is killed (by its own pid) when this guard goes.
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts moto on a free loopback port and waits until it answers.
pub fn start_moto(moto: &Path) -> anyhow::Result<(Guard, String)> {
    let port = free_port()?;
    let child = Command::new(moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", moto.display()))?;
    let guard = Guard(child);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if start.elapsed().as_secs() > 30 {
            bail!("moto did not listen on {addr} within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok((guard, format!("http://{addr}")))
}

/// Whether a process runs (a zombie does not count: PID 1 here never reaps orphans).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// Copies the Django fixture (or any project) without its caches, databases and collected files.
pub fn copy_project(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "__pycache__" || name.ends_with(".sqlite3") || name == "static_collected" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type()?.is_dir() {
            copy_project(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Release builds of both binaries, for `bench` and `dist`.
pub fn build_release() -> anyhow::Result<()> {
    run(Command::new("cargo").current_dir(workspace_root()).args([
        "build",
        "--release",
        "-p",
        "cargo-milky",
        "-p",
        "milky-agent",
    ]))
}
