//! `cargo xtask demo`: the main job on the embedded default. A local-directory store, two servers
//! of group `stable` and one of `unstable` (each a `milky-agent run` with its own root, nginx
//! front port and Apache slots on loopback), and a small Django app taken through upload, a
//! canary on `unstable`, promote and rollback. Every step prints the command a user would type.
//!
//! The servers keep running afterwards; `cargo xtask demo --stop` stops them (by the pids they
//! wrote), and so do Ctrl-C during the demo and a new `cargo xtask demo` before it starts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use milky_dev_support::{Ports, alive, copy_project, http_get, pid_files};

use crate::tools::{self, workspace_root};

/// World-traversable, as Apache's www-data and nginx's nobody need: not under a 0700 home.
/// `MILKY_DEMO_DIR` moves it (the end-to-end test uses its own).
fn demo_root() -> PathBuf {
    std::env::var_os("MILKY_DEMO_DIR")
        .map_or_else(|| std::env::temp_dir().join("milky-demo"), PathBuf::from)
}

struct Server {
    host: &'static str,
    group: &'static str,
    front: u16,
    /// The front port and the slots' range, held while the demo runs. Servers the agents start
    /// after it has ended (a slot for a later release) may find one taken: a demo is not a test.
    _ports: Ports,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("--stop") => stop(&demo_root()),
        None => demo(),
        Some(other) => bail!("unknown demo option {other:?} (the demo takes none, or --stop)"),
    }
}

fn demo() -> anyhow::Result<()> {
    tools::ensure_apt_packages()?;
    let root = workspace_root();
    // Not quiet: the first build takes minutes, and cargo's lines show it moving.
    println!("building cargo-milky and milky-agent (minutes the first time)");
    // The workspace's binaries, as `cargo xtask test` builds them: the same feature set, so
    // after a test build nothing is compiled again.
    tools::run(tools::cargo().args(["build", "--workspace", "--bins"]))?;
    let bin = root.join("target/debug");
    let demo = demo_root();
    stop(&demo)?;
    // Ctrl-C: stop what was started so far (agents, nginx, Apache), then leave.
    let on_interrupt = demo.clone();
    ctrlc::set_handler(move || {
        eprintln!("\ninterrupted: stopping the demo's servers");
        let _ = stop(&on_interrupt);
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")?;
    if demo.exists() {
        std::fs::remove_dir_all(&demo).with_context(|| format!("clearing {}", demo.display()))?;
    }
    std::fs::create_dir_all(demo.join("shared"))?;
    chmod(&demo, 0o755)?;
    chmod(&demo.join("shared"), 0o777)?;
    let store = format!("file://{}", demo.join("store").display());

    println!(
        "MilkyWhite demo in {}: a local store ({store}) and three servers",
        demo.display()
    );
    let project = demo.join("mysite");
    copy_project(&root.join("tests/fixtures/django-app"), &project)?;
    vendor_wheels(&demo, &project)?;

    let mut servers = Vec::new();
    for (host, group) in [
        ("stable-1", "stable"),
        ("stable-2", "stable"),
        ("unstable-1", "unstable"),
    ] {
        let ports = Ports::reserve(10).context("reserving a server's ports")?;
        let server = Server {
            host,
            group,
            front: ports.first(),
            _ports: ports,
        };
        start_agent(&demo, &bin, &store, &server)?;
        servers.push(server);
    }

    let milky = |title: &str, args: &[&str]| -> anyhow::Result<()> {
        println!("\n## {title}\n$ cargo milky {}", args.join(" "));
        let status = Command::new(bin.join("cargo-milky"))
            .arg("milky")
            .args(args)
            .current_dir(&project)
            .env("MILKY_STORE", &store)
            .status()
            .with_context(|| format!("running cargo milky {}", args.join(" ")))?;
        if !status.success() {
            bail!(
                "demo step failed: cargo milky {} ({status})",
                args.join(" ")
            );
        }
        Ok(())
    };
    let set_version =
        |version: &str| std::fs::write(project.join("VERSION"), format!("{version}\n"));

    milky(
        "Describe the project (detects manage.py, the settings and the WSGI module)",
        &["init", "--yes", "--name", "mysite", "--group", "stable"],
    )?;
    set_version("v1")?;
    milky(
        "Package v1, upload it, and wait until both stable servers serve it",
        &[
            "upload",
            "--group",
            "stable",
            // The agents' first reports may not be in yet: these uploads make the groups.
            "--new-group",
            "--version",
            "v1",
            "--wait",
            "--timeout",
            "5m",
        ],
    )?;
    show(&servers, "stable", "v1")?;
    set_version("v2")?;
    milky(
        "Try v2 on unstable first",
        &[
            "upload",
            "--group",
            "unstable",
            "--new-group",
            "--version",
            "v2",
            "--wait",
            "--timeout",
            "5m",
        ],
    )?;
    show(&servers, "unstable", "v2")?;
    milky(
        "Promote unstable's version to stable, no new upload",
        &["promote", "unstable", "stable", "--wait", "--timeout", "5m"],
    )?;
    show(&servers, "stable", "v2")?;
    milky(
        "Roll stable back to the version it ran before",
        &["rollback", "stable", "mysite", "--wait", "--timeout", "5m"],
    )?;
    show(&servers, "stable", "v1")?;
    milky("What the index says", &["info"])?;
    milky("What the servers say", &["status"])?;

    println!("\nThe servers keep running:");
    for server in &servers {
        println!(
            "  {} ({}): curl -H 'Host: mysite' http://127.0.0.1:{}/",
            server.host, server.group, server.front
        );
    }
    println!(
        "Their logs: {}/<server>/agent.log. Stop them with: cargo xtask demo --stop",
        demo.display()
    );
    println!(
        "\nTry the commands yourself, with the demo's build (not installed as `cargo milky`):\n  \
         cd {}\n  export MILKY_STORE={store}\n  {}/cargo-milky milky status\n\
         To have `cargo milky` itself: cargo install --path {}",
        project.display(),
        bin.display(),
        root.join("cargo-milky").display()
    );
    Ok(())
}

/// Downloads the app's requirements as wheels into the project, so servers install offline.
fn vendor_wheels(demo: &Path, project: &Path) -> anyhow::Result<()> {
    println!(
        "downloading the app's requirements (Django) from PyPI as wheels into {}",
        project.join("wheels").display()
    );
    let venv = demo.join("pip");
    tools::run(
        Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&venv),
    )?;
    tools::run(
        Command::new(venv.join("bin/pip"))
            .args([
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "-r",
            ])
            .arg(project.join("requirements.txt"))
            .arg("-d")
            .arg(project.join("wheels")),
    )
}

fn start_agent(demo: &Path, bin: &Path, store: &str, server: &Server) -> anyhow::Result<()> {
    let root = demo.join(server.host);
    for dir in ["apps", "state", "web"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    chmod(&root, 0o755)?;
    let first_slot = server.front + 1;
    let config = root.join("agent.toml");
    let text = format!(
        "store = \"{store}\"\ngroup = \"{group}\"\nhost = \"{host}\"\n\n[paths]\napps = \"{root}/apps\"\nstate = \"{root}/state\"\nweb = \"{root}/web\"\ntemplates = \"{root}/templates\"\nlogs = \"{root}/logs\"\n\n[web]\nlisten = \"127.0.0.1:{front}\"\nslot_ports = [{first}, {last}]\n\n[env]\nMILKY_DB_PATH = \"{demo}/shared/{group}.sqlite3\"\n",
        group = server.group,
        host = server.host,
        root = root.display(),
        front = server.front,
        first = first_slot,
        last = server.front + 9,
        demo = demo.display(),
    );
    std::fs::write(&config, text)?;
    let log = std::fs::File::create(root.join("agent.log"))?;
    println!(
        "$ milky-agent --config {} run --interval 2s   # server {} of {}",
        config.display(),
        server.host,
        server.group
    );
    let child = Command::new(bin.join("milky-agent"))
        .arg("--config")
        .arg(&config)
        .args(["run", "--interval", "2s"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting milky-agent")?;
    std::fs::write(root.join("agent.pid"), child.id().to_string())?;
    Ok(())
}

/// GETs `/` through each server of `group` and checks it is `version`; prints what answered.
fn show(servers: &[Server], group: &str, version: &str) -> anyhow::Result<()> {
    for server in servers.iter().filter(|s| s.group == group) {
        println!(
            "$ curl -H 'Host: mysite' http://127.0.0.1:{}/",
            server.front
        );
        let response = http_get(server.front, "mysite", "/")
            .with_context(|| format!("GET / from {}", server.host))?;
        let (status, body) = (response.status, response.body);
        print!("{body}");
        if status != 200 || !body.contains(&format!("mysite {version} ")) {
            bail!(
                "{} should serve {version}, it answered {status}: {body}",
                server.host
            );
        }
    }
    Ok(())
}

/// Stops the demo's agents, then the nginx and Apache processes they started, by their pids.
fn stop(demo: &Path) -> anyhow::Result<()> {
    if !demo.exists() {
        return Ok(());
    }
    // Agents first, so none starts a server again. One busy in a pass finishes it before it
    // heeds SIGTERM; after 5 s it gets SIGKILL, which a pass is built to survive.
    let agents = with_running(pids(demo, true), demo, true);
    milky_dev_support::stop(&agents, Duration::from_secs(5));
    // Read the servers' pid files only now: a pass may have started one meanwhile.
    let servers = with_running(pids(demo, false), demo, false);
    milky_dev_support::stop(&servers, Duration::from_secs(15));
    for pid_file in pid_files(demo) {
        let _ = std::fs::remove_file(pid_file);
    }
    let stopped = agents.len() + servers.len();
    if stopped > 0 {
        println!("stopped the demo's servers ({stopped} processes)");
    }
    Ok(())
}

/// Pids from the demo's pid files: the agents' (`agent.pid`) or the web servers'.
fn pids(demo: &Path, agents: bool) -> Vec<u32> {
    pid_files(demo)
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n == "agent.pid") == agents)
        .filter_map(|f| std::fs::read_to_string(f).ok()?.trim().parse().ok())
        .filter(|pid| alive(*pid))
        .collect()
}

/// Adds the demo's processes that its pid files miss (one started just before an interrupted
/// demo could write its pid file, or whose files a new demo cleared): agents run with a config
/// in the demo dir, nginx and Apache with their config root there.
fn with_running(mut pids: Vec<u32>, demo: &Path, agents: bool) -> Vec<u32> {
    let demo = demo.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        // Split on spaces too: nginx's master rewrites its command line into one string.
        let cmdline = String::from_utf8_lossy(&cmdline);
        let words: Vec<&str> = cmdline.split(['\0', ' ']).collect();
        let program = words.first().map(|w| w.rsplit('/').next().unwrap_or(w));
        let is_agent = program == Some("milky-agent");
        let is_server = matches!(program, Some("nginx:" | "nginx" | "apache2"));
        let in_demo = words.iter().any(|w| w.starts_with(&demo));
        if in_demo && (if agents { is_agent } else { is_server }) && !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    pids
}

fn chmod(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}
