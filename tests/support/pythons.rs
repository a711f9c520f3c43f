//! Pythons other than the system's, for apps that ask for one: pyenv's builds (made with
//! `--enable-shared`) copied out of root's home, which Apache's user cannot read, into
//! world-readable dirs under /opt; and the uv that `cargo xtask test` installs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `/opt/milky-test-py313/bin/python3.13` for `"3.13"`: the newest pyenv build of that series,
/// copied there once per machine (to a temp name, then renamed, so concurrent tests agree).
pub fn test_python(series: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/opt/milky-test-py{}", series.replace('.', "")));
    let python = dir.join(format!("bin/python{series}"));
    if dir.join(".milky-copied").is_file() {
        return python;
    }
    let versions = pyenv_root().join("versions");
    let mut builds: Vec<PathBuf> = std::fs::read_dir(&versions)
        .unwrap_or_else(|e| panic!("reading {}: {e}", versions.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{series}.")))
        })
        .collect();
    builds.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        name.rsplit('.').next().and_then(|n| n.parse::<u32>().ok())
    });
    let build = builds.pop().unwrap_or_else(|| {
        panic!(
            "pyenv has no Python {series} in {}: `pyenv install {series}` (with PYTHON_CONFIGURE_OPTS=--enable-shared)",
            versions.display()
        )
    });
    assert!(
        build
            .join("lib")
            .read_dir()
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("libpython{series}.so"))),
        "{} was built without --enable-shared: mod_wsgi needs libpython{series}.so",
        build.display()
    );
    let tmp = PathBuf::from(format!("{}.tmp-{}", dir.display(), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    run(Command::new("cp").arg("-a").arg(&build).arg(&tmp));
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(&tmp));
    std::fs::write(tmp.join(".milky-copied"), build.display().to_string()).unwrap();
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another test process copied it first.
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(
            dir.join(".milky-copied").is_file(),
            "{} is half made",
            dir.display()
        );
    }
    python
}

fn pyenv_root() -> PathBuf {
    if let Ok(out) = Command::new("pyenv").arg("root").output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))
        .expect("HOME is set");
    assert!(
        root.join("versions").is_dir(),
        "pyenv is not installed (no `pyenv root`, no {}): the per-app Python tests need its builds of 3.12 and 3.13",
        root.display()
    );
    root
}

/// The test tools venv `cargo xtask test` keeps (moto, uv).
fn tools_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .expect("HOME is set")
        .join("milkywhite/test-tools")
}

/// The uv `cargo xtask test` installs in the test tools venv.
pub fn uv() -> PathBuf {
    let uv = tools_dir().join("bin/uv");
    assert!(
        uv.is_file(),
        "{} is missing: run `cargo xtask test`, which installs it (pip install uv)",
        uv.display()
    );
    uv
}

/// uv's cache, shared by every test and run: the mod_wsgi wheels built for each Python and
/// the apps' packages are fetched and built once per machine.
pub fn uv_cache() -> PathBuf {
    tools_dir().join("uv-cache")
}

/// Where agents of the tests keep the mod_wsgi they build per Python (`[python] mod_wsgi_dir`):
/// the agent's own build runs on a machine's first test run (~30 s), later runs reuse it.
pub fn mod_wsgi_cache() -> PathBuf {
    tools_dir().join("mod_wsgi")
}

/// A Python with pip of the servers' default version (3.11), as a developer's machine has.
pub fn tools_python() -> PathBuf {
    let python = tools_dir().join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `cargo xtask test`",
        python.display()
    );
    python
}

/// A dir holding only a link to [`uv`], to put first on a command's PATH.
pub fn uv_on_path(parent: &Path) -> std::ffi::OsString {
    let bin = parent.join("uv-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("uv");
    if !link.exists() {
        std::os::unix::fs::symlink(uv(), &link).unwrap();
    }
    let mut dirs = vec![bin];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

fn run(command: &mut Command) {
    let status = command.status().expect("start a command");
    assert!(status.success(), "{command:?} failed ({status})");
}
