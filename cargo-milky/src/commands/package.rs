//! `cargo milky package`: build `<app>-<version>.tar.bz2` from a project directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use clap::Args;
use ignore::Match;
use ignore::gitignore::GitignoreBuilder;
use milky_core::Version;
use milky_core::package::source::{self, GitState};
use milky_core::package::{BuildRequest, BuiltPackage, ProjectTree, build};

use crate::exit::user_error;
use crate::progress::Printer;
use crate::settings::load_project;

mod wheels;

/// Build a package (a deterministic .tar.bz2 with its manifest) from a Django project.
///
/// The version is --version, else `git describe --tags`, else the short commit, else the source
/// date. .gitignore and .milkyignore rules are honoured; .git, __pycache__, *.pyc and virtualenvs
/// are never packed. The same tree gives the same bytes. The package lands in the Cargo target
/// dir when the project sits in a Cargo workspace, else in DIR/target/milky/. Prints its path.
#[derive(Debug, Args)]
pub struct PackageArgs {
    /// The project directory (holding milky.toml)
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub build: BuildArgs,
    /// Print the manifest and package facts as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// Options shared by `package` and `upload DIR`.
#[derive(Debug, Args, Clone)]
pub struct BuildArgs {
    /// The version to give the package [default: from git, else the source date]
    #[arg(long = "version", value_name = "VERSION")]
    pub version: Option<Version>,
    /// Where to write the package [default: the Cargo target dir's milky/, else DIR/target/milky]
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Vendor every requirement as a wheel into wheels/, so servers install offline
    #[arg(long)]
    pub wheels: bool,
    /// The Python whose pip fetches the wheels. With `[app] python` set, wheels are for that
    /// version and the servers' platform (manylinux); without, they are built for this Python
    #[arg(long, default_value = "python3", value_name = "PYTHON")]
    pub python: String,
    /// bzip2 level, 1 (fast) to 9 (small)
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub level: u32,
    /// Compression threads [default: one per core]
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(args: PackageArgs, printer: Printer) -> anyhow::Result<BuiltPackage> {
    let built = build_package(&args.dir, &args.build, printer)?;
    if args.json {
        super::print_json(&serde_json::json!({
            "path": built.path,
            "app": built.manifest.app.name,
            "version": built.manifest.release.version,
            "sha256": built.sha256,
            "size": built.size,
            "manifest": built.manifest,
        }))?;
    } else {
        outln!("{}", built.path.display());
    }
    Ok(built)
}

/// Builds the package of the project in `dir`.
pub fn build_package(
    dir: &Path,
    args: &BuildArgs,
    printer: Printer,
) -> anyhow::Result<BuiltPackage> {
    let config = load_project(dir)?;
    let out_dir = match &args.out_dir {
        Some(dir) => dir.clone(),
        None => default_out_dir(dir),
    };
    // Absolute, so the printed path works from wherever the caller is.
    let out_dir = std::path::absolute(&out_dir)?;
    warn_excluded_tracked(dir, &config.package.exclude, printer);
    let git = GitState::read(dir);
    let tree = ProjectTree::walk(dir, &config, &out_dir)?;
    let source_date = source::source_date(&git, tree.newest_mtime());
    let version = match &args.version {
        Some(version) => version.clone(),
        None => source::default_version(&git, source_date)
            .ok_or_else(|| user_error("could not derive a version from git; pass --version"))?,
    };
    check_dependencies(dir, &config.app)?;
    let wheels = (args.wheels || config.package.wheels)
        .then(|| wheels::vendor(dir, &config.app, &args.python, printer))
        .transpose()?;
    let spinner = printer.spinner(&format!(
        "packing {} {version} from {}",
        config.app.name,
        dir.display()
    ));
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let built = build(&BuildRequest {
        tree: &tree,
        config: &config,
        version,
        commit: git.commit_label(),
        source_date,
        wheels_dir: wheels.as_ref().map(|w| w.path()),
        out_dir: &out_dir,
        level: args.level,
        threads,
    })
    .with_context(|| format!("packing {}", dir.display()))?;
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    printer.status(format!(
        "packed {} {} ({} entries, {} bytes): {}",
        built.manifest.app.name,
        built.manifest.release.version,
        built.manifest.release.entries,
        built.size,
        built.path.display()
    ));
    Ok(built)
}

/// Warns about files git tracks that `[package] exclude` leaves out: a pattern that matches
/// deeper than meant (`media/` also drops `app/fixtures/media/`) would otherwise shrink the
/// package without a word. Quiet outside a git checkout.
fn warn_excluded_tracked(dir: &Path, excludes: &[String], printer: Printer) {
    if excludes.is_empty() {
        return;
    }
    let Ok(output) = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["ls-files", "-z", "--cached"])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    if !output.status.success() {
        return;
    }
    // The same rules, from the same crate, as the packer's (milky_core::package::build).
    let mut builder = GitignoreBuilder::new(dir);
    for pattern in excludes {
        if builder.add_line(None, pattern).is_err() {
            return;
        }
    }
    let Ok(matcher) = builder.build() else {
        return;
    };
    let mut dropped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for raw in output.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let path = String::from_utf8_lossy(raw).into_owned();
        if !dir.join(&path).exists() {
            continue;
        }
        if let Match::Ignore(glob) = matcher.matched_path_or_any_parents(&path, false) {
            dropped
                .entry(glob.original().to_owned())
                .or_default()
                .push(path);
        }
    }
    for (pattern, files) in dropped {
        const SHOWN: usize = 3;
        let mut names = files
            .iter()
            .take(SHOWN)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if files.len() > SHOWN {
            names += &format!(" and {} more", files.len() - SHOWN);
        }
        let hint = if pattern.starts_with('/') {
            String::new()
        } else {
            format!("; if only the project's top-level one is meant, anchor it: \"/{pattern}\"")
        };
        printer.status(format!(
            "warning: [package] exclude {pattern:?} leaves out {} file{} that git tracks: {names}{hint}",
            files.len(),
            if files.len() == 1 { "" } else { "s" },
        ));
    }
}

/// `<cargo target dir>/milky` if the project is inside a Cargo workspace, else `DIR/target/milky`.
fn default_out_dir(dir: &Path) -> PathBuf {
    let in_cargo_project = dir
        .canonicalize()
        .ok()
        .is_some_and(|abs| abs.ancestors().any(|a| a.join("Cargo.toml").is_file()));
    if in_cargo_project
        && let Ok(metadata) = cargo_metadata::MetadataCommand::new()
            .current_dir(dir)
            .no_deps()
            .exec()
    {
        return metadata.target_directory.into_std_path_buf().join("milky");
    }
    dir.join("target").join("milky")
}

/// Refuses a package whose servers would install no dependencies, or fail to: the named
/// requirements file or lock missing, or a pyproject.toml that lists dependencies with neither
/// a requirements file nor a uv.lock beside it.
fn check_dependencies(dir: &Path, app: &milky_core::project::AppSettings) -> anyhow::Result<()> {
    let named = dir.join(&app.requirements);
    if app.uses_uv_lock() {
        let pyproject = named.with_file_name("pyproject.toml");
        if !named.is_file() || !pyproject.is_file() {
            return Err(user_error(format!(
                "[app] requirements names {}, which needs both it and pyproject.toml beside it\n  fix: run `uv lock` in {}",
                app.requirements,
                named.parent().unwrap_or(dir).display()
            )));
        }
        return Ok(());
    }
    if named.is_file() {
        return Ok(());
    }
    if app.requirements != "requirements.txt" {
        return Err(user_error(format!(
            "[app] requirements names {}, which does not exist\n  fix: write it, or point [app] requirements at the project's requirements file or uv.lock",
            named.display()
        )));
    }
    let lists_dependencies = std::fs::read_to_string(dir.join("pyproject.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .is_some_and(|t| {
            t.get("project")
                .and_then(|p| p.get("dependencies"))
                .and_then(|d| d.as_array())
                .is_some_and(|d| !d.is_empty())
        });
    if lists_dependencies {
        return Err(user_error(format!(
            "pyproject.toml lists dependencies, but servers install from a lock or a requirements file and {} has neither\n  fix: `uv lock` and set [app] requirements = \"uv.lock\" (`cargo milky init --force` detects it), or write requirements.txt (`uv export --no-hashes -o requirements.txt`)",
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use milky_core::ProjectConfig;

    use super::*;

    fn app(requirements: &str) -> milky_core::project::AppSettings {
        ProjectConfig::parse(&format!(
            "[app]\nname = \"shop\"\nwsgi = \"a:b\"\nrequirements = \"{requirements}\"\n"
        ))
        .unwrap()
        .app
    }

    #[test]
    fn a_package_whose_servers_would_install_nothing_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // No dependencies anywhere: nothing to install, nothing refused.
        check_dependencies(root, &app("requirements.txt")).unwrap();
        std::fs::write(
            root.join("pyproject.toml"),
            "[project]\nname = \"shop\"\ndependencies = [\"django\"]\n",
        )
        .unwrap();
        let err = check_dependencies(root, &app("requirements.txt"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`uv lock`") && err.contains("requirements.txt"),
            "{err}"
        );
        let err = check_dependencies(root, &app("uv.lock"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("run `uv lock`"), "{err}");
        std::fs::write(root.join("uv.lock"), "version = 1\n").unwrap();
        check_dependencies(root, &app("uv.lock")).unwrap();
        std::fs::write(root.join("requirements.txt"), "django\n").unwrap();
        check_dependencies(root, &app("requirements.txt")).unwrap();
        let err = check_dependencies(root, &app("requirements/prod.txt"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
