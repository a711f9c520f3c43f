//! `install_server.sh --python`: the Pythons it adds to the agent's settings, and a Python the
//! distribution lacks installed through uv.

use super::*;

#[test]
fn install_server_adds_pythons_to_the_agents_settings() {
    let tmp = temp_dir();
    let root = tmp.path().join("root");
    let agent = agent_copy(tmp.path()).display().to_string();
    let first = [
        "--store", "s3://b/p", "--group", "stable", "--python", "3.13", &agent,
    ];
    let out = install(&root, &first);
    assert_success(&out, "install_server.sh --python 3.13");
    let said = stdout(&out);
    assert!(
        said.contains("skipped: Python 3.13 (--root, no /var/lib/milky/tools/bin/uv there)"),
        "{said}"
    );
    assert!(said.contains("skipped: uv (--root)"), "{said}");
    assert!(said.contains("apache2-dev gcc"), "{said}");
    let config_path = root.join("etc/milky/agent.toml");
    let config = read(&config_path);
    assert!(
        config.contains("\n[python]\ninterpreters = [\"") && config.contains("/python3.13\"]\n"),
        "{config}"
    );
    let again = install(&root, &first);
    assert_success(&again, "the same again");
    assert!(
        stdout(&again).contains("Nothing changed"),
        "{}",
        stdout(&again)
    );

    // Later, one more: added to the list, once.
    for _ in 0..2 {
        assert_success(&install(&root, &["--python", "3.11"]), "--python 3.11");
    }
    let config = read(&config_path);
    let line = config
        .lines()
        .find(|l| l.starts_with("interpreters = "))
        .unwrap();
    assert!(
        line.contains("/python3.13\", ") && line.ends_with("/python3.11\"]"),
        "{config}"
    );
    assert_eq!(config.matches("python3.11").count(), 1, "{config}");
    assert_accepted(&agent_check(&config, &tmp.path().join("check")));

    let out = install(&root, &["--python", "2.7"]);
    assert_failure(&out, 2, "--python must be a Python 3 series");
}

/// A Python the distribution does not package is installed by uv under /opt/milky/python and
/// listed in agent.toml. uv downloads CPythons from python-build-standalone's GitHub releases,
/// which this machine cannot reach (and no PyPI package carries them): the test makes the one
/// archive uv installs from the pyenv build of 3.13 the per-app Python tests use, in
/// python-build-standalone's layout, and hands uv a local downloads list naming it
/// (`UV_PYTHON_DOWNLOADS_JSON_URL`, which the script passes through). Everything else is the
/// script's own path: the uv it finds in the root's tools dir, `uv python install` into the
/// root, the links made relative, the setting written.
#[test]
fn install_server_installs_a_uv_managed_python_the_distribution_lacks() {
    let series = "3.13";
    let apt = Command::new("apt-cache")
        .args(["policy", &format!("python{series}")])
        .output()
        .map(|o| stdout(&o))
        .unwrap_or_default();
    assert!(
        !apt.contains("Candidate: ") || apt.contains("Candidate: (none)"),
        "apt has python{series} here, so the script would take the apt path: test a series it lacks\n{apt}"
    );
    assert!(!Path::new(&format!("/usr/bin/python{series}")).exists());

    let tmp = temp_dir();
    let root = tmp.path().join("root");
    // The archive: the pyenv build as `python/…`, as python-build-standalone's install_only.
    let build = milky_tests::pythons::test_python(series)
        .parent()
        .and_then(Path::parent)
        .expect("PREFIX/bin/pythonX.Y")
        .to_owned();
    let archive = tmp.path().join(format!("cpython-{series}-local.tar.gz"));
    let build_name = build.file_name().unwrap().to_string_lossy().into_owned();
    let out = Command::new("tar")
        .arg("-C")
        .arg(build.parent().unwrap())
        .arg(format!("--transform=s,^{build_name},python,"))
        .arg(format!("--exclude={build_name}/lib/python{series}/test"))
        .arg("--exclude=__pycache__")
        .args(["--use-compress-program=gzip -1", "-cf"])
        .arg(&archive)
        .arg(&build_name)
        .output()
        .expect("run tar");
    assert_success(&out, "tar the Python build");
    let probe = Command::new(build.join(format!("bin/python{series}")))
        .args(["-c", "import sys; print(*sys.version_info[:3])"])
        .output()
        .expect("run the Python build");
    assert_success(&probe, "the Python build's version");
    let version: Vec<u32> = stdout(&probe)
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let sha = Command::new("sha256sum").arg(&archive).output().unwrap();
    let sha = stdout(&sha).split_whitespace().next().unwrap().to_owned();
    let key = format!(
        "cpython-{}.{}.{}-linux-x86_64-gnu",
        version[0], version[1], version[2]
    );
    let downloads = serde_json::json!({
        key.clone(): {
            "name": "cpython",
            "arch": {"family": "x86_64", "variant": null},
            "os": "linux",
            "libc": "gnu",
            "major": version[0],
            "minor": version[1],
            "patch": version[2],
            "prerelease": "",
            "url": format!("file://{}", archive.display()),
            "sha256": sha,
            "variant": null,
        }
    });
    let list = tmp.path().join("downloads.json");
    write(&list, &downloads.to_string());
    // The uv a first run would have installed.
    let tools = root.join("var/lib/milky/tools/bin");
    std::fs::create_dir_all(&tools).unwrap();
    std::os::unix::fs::symlink(milky_tests::pythons::uv(), tools.join("uv")).unwrap();

    let agent = agent_copy(tmp.path()).display().to_string();
    let run = || {
        Command::new(install_server_sh())
            .arg("--root")
            .arg(&root)
            .args([
                "--store", "s3://b/p", "--group", "stable", "--python", series, &agent,
            ])
            .env("UV_PYTHON_DOWNLOADS_JSON_URL", &list)
            .env("UV_CACHE_DIR", tmp.path().join("uv-cache"))
            .env_remove("UV_PYTHON_INSTALL_MIRROR")
            .output()
            .expect("run install_server.sh")
    };
    let out = run();
    assert_success(&out, "install_server.sh --python 3.13");
    let said = stdout(&out);
    let path = format!("/opt/milky/python/bin/python{series}");
    assert!(
        said.contains(&format!("Python {series}: {path} (uv-managed)")),
        "{said}"
    );
    // Installed under the root, reached through a relative link, readable by everyone.
    let python = root.join(path.trim_start_matches('/'));
    let link = std::fs::read_link(&python).unwrap();
    assert!(link.is_relative(), "{}", link.display());
    let installed = root.join(format!("opt/milky/python/{key}"));
    assert!(installed.join("bin").is_dir(), "{}", installed.display());
    assert_eq!(mode(&installed) & 0o005, 0o005);
    let probe = Command::new(&python)
        .args(["-c", "import sys, sysconfig; print(sys.version_info[:2], sysconfig.get_config_var('LDLIBRARY'))"])
        .output()
        .expect("run the installed Python");
    assert_success(&probe, "the installed Python");
    assert!(
        stdout(&probe).starts_with(&format!("(3, {})", version[1])),
        "{}",
        stdout(&probe)
    );
    let config = read(&root.join("etc/milky/agent.toml"));
    assert!(
        config.contains(&format!("\n[python]\ninterpreters = [\"{path}\"]\n")),
        "{config}"
    );
    assert_accepted(&agent_check(&config, &tmp.path().join("check")));
    // Again: nothing to do.
    let again = run();
    assert_success(&again, "the same again");
    assert!(
        stdout(&again).contains(&format!("Python {series}: {path}"))
            && stdout(&again).contains("Nothing changed"),
        "{}",
        stdout(&again)
    );
}
