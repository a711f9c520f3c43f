//! The Django fixture (tests/fixtures/django-app) as a project ready to upload, with its
//! requirements vendored as wheels so servers install offline and fast.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use milky_dev_support::copy_project;

use crate::workspace_root;

/// Shared by every test (and the web-stack tests): the only network access of the suite.
const WHEELS_CACHE: &str = "/tmp/milky-test-wheels";

/// The fixture's wheels (Django and its dependencies), downloaded once per machine.
pub fn fixture_wheels() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let wheels = PathBuf::from(WHEELS_CACHE);
    let has_django = std::fs::read_dir(&wheels)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .to_lowercase()
                .starts_with("django-")
        });
    if has_django {
        return wheels;
    }
    // A venv of the servers' Python has a pip even where Debian's python3 has none.
    let pip_venv = PathBuf::from("/tmp/milky-test-pip");
    if !pip_venv.join("bin/pip").exists() {
        let status = Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&pip_venv)
            .status()
            .expect("run /usr/bin/python3 -m venv");
        assert!(
            status.success(),
            "creating {} failed: is python3-venv installed?",
            pip_venv.display()
        );
    }
    let requirements = workspace_root().join("tests/fixtures/django-app/requirements.txt");
    let status = Command::new(pip_venv.join("bin/pip"))
        .args([
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "-r",
        ])
        .arg(&requirements)
        .arg("-d")
        .arg(&wheels)
        .status()
        .expect("run pip download");
    assert!(
        status.success(),
        "downloading the fixture's wheels into {WHEELS_CACHE} failed"
    );
    wheels
}

/// Copies the fixture into `dir/name`, says `version` in its VERSION file, vendors its wheels.
pub fn fixture_project(parent: &Path, name: &str, version: &str) -> PathBuf {
    let project = parent.join(name);
    copy_project(
        &workspace_root().join("tests/fixtures/django-app"),
        &project,
    )
    .expect("copy the Django fixture");
    set_fixture_version(&project, version);
    let wheels = project.join("wheels");
    std::fs::create_dir_all(&wheels).expect("create wheels/");
    for entry in std::fs::read_dir(fixture_wheels())
        .expect("read the wheel cache")
        .flatten()
    {
        if !entry.file_name().to_string_lossy().ends_with(".whl") {
            continue;
        }
        std::fs::copy(entry.path(), wheels.join(entry.file_name())).expect("copy a wheel");
    }
    project
}

pub fn set_fixture_version(project: &Path, version: &str) {
    std::fs::write(project.join("VERSION"), format!("{version}\n")).expect("write VERSION");
}
