//! `--wheels`: every dependency vendored as a wheel into the package's `wheels/`, so servers
//! install offline. With `[app] python` set the wheels are downloaded for that Python and the
//! servers' platform (manylinux), whatever Python this machine runs; without it they are built
//! for the Python given by `--python`, as the servers' default Python is assumed to match.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use milky_core::project::AppSettings;
use milky_core::python::PythonSpec;

use crate::exit::user_error;
use crate::progress::Printer;

/// The manylinux tags a Debian 12 / Ubuntu 22.04 server (glibc ≥ 2.35) accepts, newest first.
const MANYLINUX: &[&str] = &[
    "manylinux_2_34",
    "manylinux_2_31",
    "manylinux_2_28",
    "manylinux_2_24",
    "manylinux_2_17",
    "manylinux2014",
];

/// Fills a temporary dir that becomes the package's `wheels/`.
pub fn vendor(
    dir: &Path,
    app: &AppSettings,
    python: &str,
    printer: Printer,
) -> anyhow::Result<tempfile::TempDir> {
    let wheels = tempfile::tempdir()?;
    // A uv lock is exported to a requirements file first (exact pins, no dev dependencies).
    let exported;
    let requirements = if app.uses_uv_lock() {
        exported = tempfile::NamedTempFile::new()?;
        let lock = dir.join(&app.requirements);
        let project = lock.parent().unwrap_or(dir);
        let output = Command::new("uv")
            .args(["export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes"])
            .args(["--format", "requirements-txt", "--quiet", "-o"])
            .arg(exported.path())
            .current_dir(project)
            .output()
            .context("running `uv export` to list the locked packages (is uv installed? `pip install uv`)")?;
        if !output.status.success() {
            anyhow::bail!(
                "uv export in {} failed ({}):\n{}",
                project.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        exported.path().to_owned()
    } else {
        dir.join(&app.requirements)
    };
    if !requirements.is_file() {
        return Err(user_error(format!(
            "--wheels needs a requirements file, and {} does not exist",
            requirements.display()
        )));
    }
    let target = app
        .python
        .as_deref()
        .map(PythonSpec::parse)
        .transpose()
        .map_err(user_error)?
        .map(|spec| {
            spec.lowest_series().ok_or_else(|| {
                user_error(format!("[app] python {spec:?} allows no Python 3 version"))
            })
        })
        .transpose()?;
    let mut command = Command::new(python);
    command.args(["-m", "pip"]);
    match target {
        Some(version) => {
            let arch = std::env::consts::ARCH;
            printer.status(format!(
                "downloading wheels for CPython {} on manylinux {arch} ({})",
                version.short(),
                requirements.display()
            ));
            command.args(["download", "--only-binary=:all:", "--implementation", "cp"]);
            command.args(["--python-version", &version.short()]);
            for tag in MANYLINUX {
                command.arg("--platform").arg(format!("{tag}_{arch}"));
            }
            command.arg("-d");
        }
        None => {
            printer.status(format!(
                "building wheels for {} with {python} -m pip wheel",
                requirements.display()
            ));
            command.args(["wheel", "--wheel-dir"]);
        }
    }
    command
        .arg(wheels.path())
        .args(["--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements)
        .current_dir(dir);
    let output = command
        .output()
        .with_context(|| format!("running {python} -m pip"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if let (Some(version), Some(package)) = (target, missing_wheel(&stderr)) {
            return Err(user_error(format!(
                "{package} has no wheel for CPython {} on manylinux {}, so servers could not install it offline\n  fix: pin a version of it that ships one, or package without --wheels (servers then install from PyPI)\n{stderr}",
                version.short(),
                std::env::consts::ARCH
            )));
        }
        anyhow::bail!("{python} -m pip failed ({}):\n{stderr}", output.status);
    }
    Ok(wheels)
}

/// The requirement pip found no distribution for: `… No matching distribution found for NAME`.
fn missing_wheel(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|line| {
        let (_, rest) = line.split_once("No matching distribution found for ")?;
        Some(rest.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_without_a_wheel_is_named() {
        let stderr = "ERROR: Could not find a version that satisfies the requirement psycopg2==2.9.9 (from versions: none)\nERROR: No matching distribution found for psycopg2==2.9.9\n";
        assert_eq!(missing_wheel(stderr).as_deref(), Some("psycopg2==2.9.9"));
        assert_eq!(missing_wheel("ERROR: network down"), None);
    }
}
