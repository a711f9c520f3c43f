//! Releases of the Django fixture, as packages would unpack: wheels downloaded once per
//! machine, releases prepared once and shared across tests and test processes, and overlays that
//! lay a few files over a shared release.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use milky_agent::web::{AppSite, ReleaseSetup, prepare_release};
use milky_dev_support::{copy_project, walk};

const WHEELS_DIR: &str = "/tmp/milky-test-wheels";
const RELEASES_DIR: &str = "/tmp/milky-web-test-releases";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/django-app")
}

/// Runs `f` holding an exclusive lock on `path`, so parallel test processes (nextest) prepare a
/// shared thing once.
fn with_file_lock<T>(path: &Path, f: impl FnOnce() -> T) -> T {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    file.lock().unwrap();
    let out = f();
    file.unlock().unwrap();
    out
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Wheels of the fixture's requirements, downloaded once per machine.
fn wheels() -> PathBuf {
    let dir = PathBuf::from(WHEELS_DIR);
    with_file_lock(&dir.join(".lock"), || {
        if !dir.join(".complete").exists() {
            // Debian's python3 may come without pip; a throwaway venv always has it.
            let venv = dir.join(".pip-venv");
            if !venv.join("bin/pip").exists() {
                run(Command::new("/usr/bin/python3")
                    .arg("-m")
                    .arg("venv")
                    .arg(&venv));
            }
            run(Command::new(venv.join("bin/pip"))
                .args(["download", "-q", "--disable-pip-version-check", "-d"])
                .arg(&dir)
                .arg("-r")
                .arg(fixture_dir().join("requirements.txt")));
            std::fs::write(dir.join(".complete"), "").unwrap();
        }
    });
    dir
}

/// Copies the fixture to `dest` as version `version`, with the wheels, as a package would
/// unpack.
pub fn unpack_fixture(dest: &Path, version: &str) {
    // Without the fixture's leftovers, venv and wheels: the wheels come next.
    copy_project(&fixture_dir(), dest).unwrap();
    std::fs::write(dest.join("VERSION"), format!("{version}\n")).unwrap();
    let wheels_dest = dest.join("wheels");
    std::fs::create_dir_all(&wheels_dest).unwrap();
    for entry in std::fs::read_dir(wheels()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "whl") {
            std::fs::copy(&path, wheels_dest.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// A hash of the fixture's files, so a changed fixture gets freshly prepared releases.
fn fixture_hash() -> String {
    let files: Vec<PathBuf> = walk(&fixture_dir())
        .into_iter()
        .filter(|path| !path.components().any(|c| c.as_os_str() == "__pycache__"))
        .collect();
    // FNV-1a: stable across runs and Rust versions, unlike DefaultHasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for file in files {
        let bytes = [
            file.to_string_lossy().as_bytes().to_vec(),
            std::fs::read(&file).unwrap(),
        ]
        .concat();
        for b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

/// A prepared release of the fixture at `version`, shared by all tests and test processes.
pub fn shared_release(version: &str) -> PathBuf {
    let dir = PathBuf::from(RELEASES_DIR).join(format!("{}-{version}", fixture_hash()));
    with_file_lock(&PathBuf::from(RELEASES_DIR).join(".lock"), || {
        std::fs::set_permissions(RELEASES_DIR, std::fs::Permissions::from_mode(0o755)).unwrap();
        if !dir.join("venv/.milky-prepared").exists() {
            let _ = std::fs::remove_dir_all(&dir);
            unpack_fixture(&dir, version);
            prepare_release(&ReleaseSetup::new(&dir)).unwrap_or_else(|e| panic!("{e}"));
        }
    });
    dir
}

/// A release dir of its own that reuses a shared release's venv and files (symlinks), so a test
/// can add snippets without preparing another venv.
pub fn overlay_release(root: &Path, name: &str, shared: &Path, files: &[(&str, &str)]) -> PathBuf {
    let dir = root.join("releases").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(shared).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    for (path, contents) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    for d in [root.join("releases"), dir.clone()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

pub fn site(app: &str, host: &str, release: &Path) -> AppSite {
    AppSite::new(app, host, release, "mysite/wsgi.py")
}

/// A shared release's site, with its venv where the shared release keeps it.
pub fn overlay_site(app: &str, host: &str, release: &Path, shared: &Path) -> AppSite {
    let mut s = site(app, host, release);
    s.venv_dir = shared.join("venv");
    s
}
