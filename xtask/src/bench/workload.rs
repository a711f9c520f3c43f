//! The reference workload, generated so anyone can rerun the bench: the Django fixture of the
//! tests as app `shop`, the wheels of a realistic requirements set vendored into `wheels/`
//! (servers install offline), and Django's own source copied in as a large body of app code.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::Bench;
use crate::tools::{run, workspace_root};

/// Pinned to minor versions for Python 3.11 (Debian 12's, which mod_wsgi is built against).
pub const REQUIREMENTS: &str = "\
Django==4.2.*
djangorestframework==3.15.*
psycopg2-binary==2.9.*
Pillow==11.*
celery==5.4.*
redis==5.*
whitenoise==6.*
boto3==1.35.*
";

/// The wheels, downloaded once per machine (the bench's only access to the network).
fn wheels(bench: &Bench) -> anyhow::Result<PathBuf> {
    let dir = bench.cache.join("bench-workload");
    let wheels = dir.join("wheels");
    let marker = dir.join("requirements.txt");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == REQUIREMENTS) && wheels.is_dir() {
        return Ok(wheels);
    }
    std::fs::create_dir_all(&dir)?;
    let requirements = dir.join("requirements.in");
    std::fs::write(&requirements, REQUIREMENTS)?;
    eprintln!(
        "bench: downloading the workload's wheels into {} (once)",
        wheels.display()
    );
    run(Command::new(bench.tools_python())
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "-r",
        ])
        .arg(&requirements)
        .arg("-d")
        .arg(&wheels))?;
    std::fs::write(&marker, REQUIREMENTS)?;
    Ok(wheels)
}

/// Writes the project to `work/shop` and describes it with `cargo milky init`.
pub fn project(bench: &Bench) -> anyhow::Result<PathBuf> {
    let wheels = wheels(bench)?;
    let project = bench.work.join("shop");
    milky_dev_support::copy_project(
        &workspace_root().join("tests/fixtures/django-app"),
        &project,
    )?;
    std::fs::write(project.join("requirements.txt"), REQUIREMENTS)?;
    std::fs::write(project.join("VERSION"), "ref1\n")?;
    let vendored = project.join("wheels");
    std::fs::create_dir_all(&vendored)?;
    let mut django = None;
    for entry in std::fs::read_dir(&wheels)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".whl") {
            std::fs::copy(entry.path(), vendored.join(&name))?;
            if name.to_lowercase().starts_with("django-") {
                django = Some(entry.path());
            }
        }
    }
    // A large source tree: Django's package as app code, outside the import path.
    let django = django.context("no Django wheel among the workload's wheels")?;
    run(Command::new("/usr/bin/python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&django)
        .arg(project.join("vendor/django_src")))?;
    let out = bench
        .milky(&project, &["init", "--yes", "--force", "--name", "shop"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "cargo milky init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(project)
}

/// Size in bytes and number of files of a tree.
pub fn tree_size(dir: &Path) -> (u64, u64) {
    milky_dev_support::walk(dir)
        .iter()
        .filter_map(|path| path.symlink_metadata().ok())
        .fold((0, 0), |(bytes, files), meta| {
            (bytes + meta.len(), files + 1)
        })
}
