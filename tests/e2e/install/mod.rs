//! `install_server.sh` and the agent's .deb, tried for real: the script installs into a
//! throwaway root (`--root`, which skips apt and systemctl), the .deb is built from the debug
//! binary and taken apart with dpkg-deb. Nothing is installed on this machine, and the agent
//! started to check a written config is kept from starting nginx, so nothing outlives a test.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use milky_dev_support::{Ports, Signal, pids_in, signal, wait_for_port};
use milky_tests::*;

mod deb;
mod pythons;

fn install_server_sh() -> PathBuf {
    workspace_root().join("install_server.sh")
}

fn packaging(name: &str) -> String {
    let path = workspace_root().join("packaging").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn install(root: &Path, args: &[&str]) -> Output {
    Command::new(install_server_sh())
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run install_server.sh")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A private copy of the debug agent, so a rebuild running beside the tests cannot change the
/// bytes the test compares.
fn agent_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("milky-agent");
    std::fs::copy(bin("milky-agent"), &copy).expect("copy the agent binary");
    copy
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("milky-install-")
        .tempdir()
        .expect("temp dir")
}

/// Runs `milky-agent --config <config> sync` with the given settings redirected into `dir`
/// (paths, and an nginx start command that fails at once, so nothing is started), against an
/// empty `file://` store. The agent exits 2 on settings it refuses; with settings it accepts,
/// the pass gets as far as the store and fails with 1 because the store has no index.
fn agent_check(settings: &str, dir: &Path) -> Output {
    let mut doc: toml_edit::DocumentMut = settings.parse().expect("the settings are TOML");
    let store = dir.join("store");
    std::fs::create_dir_all(&store).expect("store dir");
    doc["store"] = toml_edit::value(format!("file://{}", store.display()));
    doc["paths"] = toml_edit::table();
    for (key, sub) in [
        ("apps", "apps"),
        ("state", "state"),
        ("web", "web"),
        ("templates", "templates"),
    ] {
        doc["paths"][key] = toml_edit::value(dir.join(sub).display().to_string());
    }
    if doc.get("commands").is_none() {
        doc["commands"] = toml_edit::table();
    }
    doc["commands"]["nginx_start"] = toml_edit::value(toml_edit::Array::from_iter(["false"]));
    let config = dir.join("check.toml");
    std::fs::write(&config, doc.to_string()).expect("write the check config");
    let out = Command::new(bin("milky-agent"))
        .arg("--config")
        .arg(&config)
        .arg("sync")
        .env_remove("RUST_LOG")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("run milky-agent");
    stop_anything_started(&dir.join("web"));
    out
}

/// Nothing should have been started (nginx's start command is `false`); should the agent ever
/// start something anyway, it is stopped here by the pids in its own pid files.
fn stop_anything_started(web: &Path) {
    let pids = pids_in(web);
    for pid in &pids {
        let _ = signal(*pid, Signal::TERM);
    }
    assert!(
        pids.is_empty(),
        "the config check started processes (stopped now): {pids:?}"
    );
}

fn assert_accepted(out: &Output) {
    assert_failure(out, 1, "version.info");
}

#[test]
fn install_server_sets_up_a_root_and_a_second_run_changes_nothing() {
    let tmp = temp_dir();
    let root = tmp.path().join("root");
    // The default sites the distribution's packages enable.
    for (link, target) in [
        (
            "etc/nginx/sites-enabled/default",
            "../sites-available/default",
        ),
        (
            "etc/apache2/sites-enabled/000-default.conf",
            "../sites-available/000-default.conf",
        ),
    ] {
        let link = root.join(link);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
    let agent = agent_copy(tmp.path());
    let port = Ports::one().unwrap();
    let listen = format!("127.0.0.1:{}", port.first());
    let agent_arg = agent.display().to_string();
    let args = [
        "--store",
        "s3://my-bucket/milky",
        "--group",
        "stable",
        "--host",
        "web-1",
        "--endpoint-url",
        "http://127.0.0.1:9000",
        "--listen",
        &listen,
        "--scheduler",
        "cron",
        &agent_arg,
    ];

    let out = install(&root, &args);
    assert_success(&out, "install_server.sh --root");
    let said = stdout(&out);
    assert!(
        said.contains("skipped: apt (--root)") && said.contains("skipped: systemctl"),
        "says what --root skips:\n{said}"
    );

    for dir in ["etc/milky", "srv/milky", "srv/milky/apps", "var/lib/milky"] {
        assert_eq!(mode(&root.join(dir)), 0o755, "{dir}");
    }
    let installed = root.join("usr/local/bin/milky-agent");
    assert_eq!(mode(&installed), 0o755);
    assert!(
        std::fs::read(&installed).unwrap() == std::fs::read(&agent).unwrap(),
        "the installed binary is the one given"
    );
    let config = root.join("etc/milky/agent.toml");
    assert_eq!(mode(&config), 0o600, "agent.toml may hold secrets");
    assert_eq!(
        read(&config),
        format!(
            "# MilkyWhite agent settings, written by install_server.sh.\n\
             # Every setting, with its default: /etc/milky/agent.toml.example\n\
             store = \"s3://my-bucket/milky\"\n\
             group = \"stable\"\n\
             host = \"web-1\"\n\
             endpoint_url = \"http://127.0.0.1:9000\"\n\
             \n\
             [web]\n\
             listen = \"{listen}\"\n"
        )
    );
    let example = root.join("etc/milky/agent.toml.example");
    assert_eq!(mode(&example), 0o644);
    assert_eq!(read(&example), packaging("agent.toml.example"));
    let cron = root.join("etc/cron.d/milky-agent");
    assert_eq!(mode(&cron), 0o644);
    let cron_text = read(&cron);
    assert_eq!(
        cron_text,
        packaging("milky-agent.cron").replace("/usr/bin/milky-agent", "/usr/local/bin/milky-agent")
    );
    assert!(cron_text.contains(
        "*/5 * * * * root /usr/local/bin/milky-agent sync >>/var/log/milky-agent.log 2>&1"
    ));
    assert!(cron_text.contains("@reboot     root /usr/local/bin/milky-agent sync"));
    assert!(cron_text.contains("PATH=") && cron_text.contains("/usr/sbin"));
    assert_eq!(
        read(&root.join("etc/logrotate.d/milky-agent")),
        packaging("milky-agent.logrotate")
    );
    for gone in [
        "etc/nginx/sites-enabled/default",
        "etc/apache2/sites-enabled/000-default.conf",
        "etc/systemd/system/milky-agent.timer",
    ] {
        assert!(
            root.join(gone).symlink_metadata().is_err(),
            "{gone} is not there"
        );
    }

    // The written settings are accepted by the agent (a broken file is refused with 2).
    assert_accepted(&agent_check(&read(&config), &tmp.path().join("check")));
    assert_failure(
        &agent_check(
            &read(&config).replace("stable", "Not A Group"),
            &tmp.path().join("check-bad"),
        ),
        2,
        "group",
    );

    // Again, with the same arguments: nothing changes, and it says so.
    let again = install(&root, &args);
    assert_success(&again, "second run");
    assert!(
        stdout(&again).contains("Nothing changed") && !stdout(&again).contains("  changed:"),
        "{}",
        stdout(&again)
    );

    // Other options do not overwrite the settings without --force.
    let other = install(
        &root,
        &["--store", "s3://my-bucket/milky", "--group", "canary"],
    );
    assert_success(&other, "run with another group");
    assert!(stdout(&other).contains("--force"), "{}", stdout(&other));
    assert!(read(&config).contains("group = \"stable\""));
    let forced = install(
        &root,
        &[
            "--store",
            "s3://my-bucket/milky",
            "--group",
            "canary",
            "--force",
        ],
    );
    assert_success(&forced, "run with --force");
    assert!(read(&config).contains("group = \"canary\""));
    assert!(read(&config).contains("listen = \"0.0.0.0:80\""));

    // The systemd timer instead of cron: the unit and timer, and the cron entry goes.
    let systemd = install(&root, &["--scheduler", "systemd"]);
    assert_success(&systemd, "--scheduler systemd");
    let unit = read(&root.join("etc/systemd/system/milky-agent.service"));
    assert_eq!(
        unit,
        packaging("milky-agent.service")
            .replace("/usr/bin/milky-agent", "/usr/local/bin/milky-agent")
    );
    assert!(unit.contains("ExecStart=/usr/local/bin/milky-agent sync"));
    assert!(unit.contains("Type=oneshot") && unit.contains("KillMode=process"));
    assert_eq!(
        read(&root.join("etc/systemd/system/milky-agent.timer")),
        packaging("milky-agent.timer")
    );
    assert!(
        root.join("etc/cron.d/milky-agent")
            .symlink_metadata()
            .is_err()
    );
    let systemd_again = install(&root, &["--scheduler", "systemd"]);
    assert!(stdout(&systemd_again).contains("Nothing changed"));
}

#[test]
fn install_server_refuses_bad_arguments_before_changing_anything() {
    let tmp = temp_dir();
    let root = tmp.path().join("root");
    let agent = agent_copy(tmp.path());
    let agent = agent.display().to_string();
    for (args, needle) in [
        (vec!["--group", "stable", &agent], "--store and --group"),
        (
            vec!["--store", "ftp://x", "--group", "stable", &agent],
            "--store must be",
        ),
        (
            vec!["--store", "s3://b/p", "--group", "Stable", &agent],
            "--group",
        ),
        (
            vec![
                "--store", "s3://b/p", "--group", "stable", "--listen", "80", &agent,
            ],
            "--listen",
        ),
        (
            vec!["--store", "s3://b/p", "--group", "stable"],
            "no agent binary",
        ),
        (
            vec!["--store", "s3://b/p", "--group", "stable", "/etc/hostname"],
            "not a milky-agent binary",
        ),
        (vec!["--bogus"], "unknown option"),
    ] {
        let out = install(&root, &args);
        assert_failure(&out, 2, needle);
        assert!(
            !root.join("etc/milky/agent.toml").exists(),
            "{args:?} wrote nothing"
        );
    }
    let help = Command::new(install_server_sh())
        .arg("--help")
        .output()
        .unwrap();
    assert_success(&help, "--help");
    assert!(stdout(&help).contains("--root DIR"));
}

#[test]
fn install_server_writes_trusted_keys_the_agent_takes() {
    let tmp = temp_dir();
    let root = tmp.path().join("root");
    let agent = agent_copy(tmp.path()).display().to_string();
    let keys: Vec<String> = ["a", "b"]
        .iter()
        .map(|name| {
            let out = Command::new(bin("cargo-milky"))
                .args(["milky", "keygen", "--out"])
                .arg(tmp.path().join(name))
                .output()
                .expect("run cargo milky keygen");
            assert_success(&out, "cargo milky keygen");
            stdout(&out).trim().to_owned()
        })
        .collect();
    let mut args = vec!["--store", "s3://b/p", "--group", "stable"];
    for key in &keys {
        args.extend(["--trusted-key", key.as_str()]);
    }
    args.push(&agent);
    assert_success(&install(&root, &args), "install_server.sh --trusted-key");
    let config = read(&root.join("etc/milky/agent.toml"));
    assert!(
        config.ends_with(&format!(
            "\n[signing]\ntrusted_keys = [\n    \"{}\",\n    \"{}\",\n]\n",
            keys[0], keys[1]
        )),
        "{config}"
    );
    assert_accepted(&agent_check(&config, &tmp.path().join("check")));

    // A key that is not a public key line is refused before anything is written.
    let other = tmp.path().join("other");
    let out = install(
        &other,
        &[
            "--store",
            "s3://b/p",
            "--group",
            "stable",
            "--trusted-key",
            "ssh-ed25519 AAAA",
            &agent,
        ],
    );
    assert_failure(&out, 2, "--trusted-key must be a public key line");
    assert!(!other.join("etc/milky/agent.toml").exists());
}

/// A child process ended (by its own pid) when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn install_server_downloads_the_agent_from_a_url() {
    let tmp = temp_dir();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let agent = agent_copy(&served);
    std::fs::write(served.join("not-an-agent"), "<html>404</html>").unwrap();
    let ports = Ports::one().unwrap();
    let port = ports.first();
    let _server = Child(
        Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(&served)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start python3 -m http.server"),
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        wait_for_port(addr, std::time::Duration::from_secs(10)),
        "the HTTP server listens"
    );
    let root = tmp.path().join("root");
    let base = format!("http://127.0.0.1:{port}");
    let args = |file: &str| {
        vec![
            "--store".to_owned(),
            "s3://my-bucket/milky".to_owned(),
            "--group".to_owned(),
            "stable".to_owned(),
            "--agent".to_owned(),
            format!("{base}/{file}"),
        ]
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        install(&root, &args)
    };

    assert_failure(&run(args("missing")), 2, "could not download");
    assert_failure(&run(args("not-an-agent")), 2, "not a milky-agent binary");
    assert!(
        !root.join("etc").exists() && !root.join("usr").exists(),
        "a bad download changes nothing"
    );

    let out = run(args("milky-agent"));
    assert_success(&out, "install from a URL");
    assert!(
        std::fs::read(root.join("usr/local/bin/milky-agent")).unwrap()
            == std::fs::read(&agent).unwrap(),
        "the downloaded binary is installed"
    );
    assert!(stdout(&run(args("milky-agent"))).contains("Nothing changed"));
}

/// Every setting in the example exists in the agent with a value it accepts: the example with
/// every setting uncommented is a config the agent takes.
#[test]
fn the_example_settings_are_all_accepted_by_the_agent() {
    let tmp = temp_dir();
    let example = packaging("agent.toml.example");
    let uncommented: String = example
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    }) =>
            {
                rest
            }
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(
        uncommented.contains("\n[web]\n") && uncommented.contains("\nkeep = 3\n"),
        "the settings were uncommented:\n{uncommented}"
    );
    assert_accepted(&agent_check(&uncommented, tmp.path()));
}

/// `install_server.sh` works alone on a server, so it carries copies of `packaging/`: they must
/// stay the same.
#[test]
fn install_server_embeds_the_packaging_files_unchanged() {
    let script = read(&install_server_sh());
    let mut embedded = Vec::new();
    let mut lines = script.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("# >>> packaging/") else {
            continue;
        };
        let mut text = String::new();
        lines
            .by_ref()
            .find(|l| l.trim_end().ends_with("<<'EOF'"))
            .expect("a heredoc follows the marker");
        for body in lines.by_ref().take_while(|l| *l != "EOF") {
            text.push_str(body);
            text.push('\n');
        }
        assert_eq!(
            text,
            packaging(name),
            "install_server.sh's copy of packaging/{name} differs: copy the file into the script"
        );
        embedded.push(name.to_owned());
    }
    embedded.sort();
    assert_eq!(
        embedded,
        [
            "agent.toml.example",
            "milky-agent.cron",
            "milky-agent.logrotate",
            "milky-agent.service",
            "milky-agent.timer"
        ]
    );
}

#[test]
fn shell_scripts_pass_shellcheck() {
    let root = workspace_root();
    let out = Command::new("shellcheck")
        .current_dir(&root)
        .args([
            "install_server.sh",
            "packaging/debian/postinst",
            "packaging/debian/prerm",
            "packaging/debian/postrm",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("shellcheck is needed for this test (apt-get install shellcheck; `cargo xtask test` installs it): {e}")
        });
    assert_success(&out, "shellcheck");
}
