//! The agent's .deb, built from the debug binary and taken apart with dpkg-deb.

use super::*;

fn workspace_version() -> String {
    let text = read(&workspace_root().join("Cargo.toml"));
    let doc: toml_edit::DocumentMut = text.parse().expect("Cargo.toml");
    doc["workspace"]["package"]["version"]
        .as_str()
        .expect("workspace version")
        .replace('-', "~")
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("run dpkg-deb");
    assert_success(&out, &format!("dpkg-deb {args:?}"));
    stdout(&out)
}

/// The .deb, built from the debug binary (a release build is too slow for every test run) by
/// the same code as `cargo xtask dist`, taken apart with dpkg-deb.
#[test]
fn the_deb_holds_the_agent_its_timer_and_example_settings() {
    let tmp = temp_dir();
    let agent = agent_copy(tmp.path());
    let out_dir = tmp.path().join("dist");
    let out = Command::new(bin("xtask"))
        .args(["dist", "--deb-only", "--compress", "none", "--binary"])
        .arg(&agent)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("run xtask dist");
    assert_success(&out, "xtask dist --deb-only");
    let arch = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .expect("dpkg");
    let arch = stdout(&arch).trim().to_owned();
    let version = workspace_version();
    let deb = out_dir.join(format!("milky-agent_{version}_{arch}.deb"));
    assert!(deb.is_file(), "{} was built", deb.display());
    assert!(
        stdout(&out).contains(&deb.display().to_string()),
        "prints what it built"
    );

    let info = dpkg_deb(&["--info"], &deb);
    for needle in [
        "Package: milky-agent\n",
        &format!("Version: {version}\n"),
        &format!("Architecture: {arch}\n"),
        "Depends: libc6",
        "nginx, apache2, libapache2-mod-wsgi-py3, python3-venv\n",
        "Installed-Size: ",
        " postinst ",
        " prerm ",
        " conffiles ",
    ] {
        assert!(
            info.contains(needle),
            "{needle:?} in dpkg-deb --info:\n{info}"
        );
    }

    let contents = dpkg_deb(&["--contents"], &deb);
    let entry = |path: &str| {
        contents
            .lines()
            .find(|line| line.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("{path} in the package:\n{contents}"))
            .to_owned()
    };
    assert!(entry("usr/bin/milky-agent").starts_with("-rwxr-xr-x root/root"));
    for file in [
        "lib/systemd/system/milky-agent.service",
        "lib/systemd/system/milky-agent.timer",
        "etc/milky/agent.toml.example",
        "usr/share/doc/milky-agent/copyright",
    ] {
        assert!(entry(file).starts_with("-rw-r--r-- root/root"), "{file}");
    }
    assert!(
        !contents.contains("./etc/milky/agent.toml\n") && !contents.contains("cron"),
        "no live settings and no cron entry in the package:\n{contents}"
    );

    let tree = tmp.path().join("x");
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tree)
        .output()
        .unwrap();
    assert_success(&out, "dpkg-deb -x");
    // The binary given, without its debug info: smaller, and it still runs.
    let packaged = tree.join("usr/bin/milky-agent");
    assert_eq!(mode(&packaged), 0o755);
    assert!(
        std::fs::metadata(&packaged).unwrap().len() < std::fs::metadata(&agent).unwrap().len(),
        "debug info is stripped"
    );
    let version = Command::new(&packaged).arg("--version").output().unwrap();
    assert_success(&version, "the packaged milky-agent --version");
    assert!(stdout(&version).starts_with("milky-agent "));
    let unit = read(&tree.join("lib/systemd/system/milky-agent.service"));
    assert_eq!(unit, packaging("milky-agent.service"));
    assert!(unit.contains("ExecStart=/usr/bin/milky-agent sync"));
    assert!(unit.contains("ConditionPathExists=/etc/milky/agent.toml"));
    let timer = read(&tree.join("lib/systemd/system/milky-agent.timer"));
    assert_eq!(timer, packaging("milky-agent.timer"));
    assert!(timer.contains("OnBootSec=") && timer.contains("OnCalendar=*:0/5"));
    assert_eq!(
        read(&tree.join("etc/milky/agent.toml.example")),
        packaging("agent.toml.example")
    );

    let control = tmp.path().join("control");
    let out = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&control)
        .output()
        .unwrap();
    assert_success(&out, "dpkg-deb -e");
    assert_eq!(
        read(&control.join("conffiles")),
        "/etc/milky/agent.toml.example\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        assert_eq!(mode(&control.join(script)), 0o755, "{script}");
        assert_eq!(
            read(&control.join(script)),
            packaging(&format!("debian/{script}"))
        );
    }
    let postinst = read(&control.join("postinst"));
    assert!(postinst.contains("install -d -m 0755 /srv/milky /srv/milky/apps /var/lib/milky"));
    assert!(postinst.contains("systemctl disable --now \"$unit\""));
}
