//! `cargo xtask demo`: the controller's main job on the embedded default, a local-directory
//! store, printing each command as a user would type it.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::tools::{self, workspace_root};

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    let root = workspace_root();
    tools::run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--quiet",
        "-p",
        "cargo-milky",
    ]))?;
    let milky = root.join("target/debug/cargo-milky");
    let demo = root.join("target/milky-demo");
    if demo.exists() {
        std::fs::remove_dir_all(&demo).with_context(|| format!("clearing {}", demo.display()))?;
    }
    let project = demo.join("mysite");
    copy_tree(&root.join("tests/fixtures/django-app"), &project)?;
    let store = format!("file://{}", demo.join("store").display());

    let step = |title: &str, args: &[&str]| -> anyhow::Result<()> {
        println!("\n## {title}\n$ cargo milky {}", args.join(" "));
        let status = Command::new(&milky)
            .arg("milky")
            .args(args)
            .current_dir(&project)
            .env("MILKY_STORE", &store)
            .status()
            .with_context(|| format!("running cargo milky {}", args.join(" ")))?;
        anyhow::ensure!(
            status.success(),
            "step failed: cargo milky {} ({status})",
            args.join(" ")
        );
        Ok(())
    };
    println!("MilkyWhite demo: a Django project, a local store at {store}");
    step(
        "Describe the project (detects manage.py, settings and WSGI module)",
        &["init", "--yes", "--group", "stable", "--force"],
    )?;
    std::fs::write(project.join("VERSION"), "v1")?;
    step(
        "Package and upload v1; group stable runs it",
        &["upload", "--group", "stable", "--version", "v1"],
    )?;
    std::fs::write(project.join("VERSION"), "v2")?;
    step(
        "Upload v2 to unstable first",
        &["upload", "--group", "unstable", "--version", "v2"],
    )?;
    step(
        "Promote v2 to stable",
        &["version", "stable", "mysite", "v2"],
    )?;
    step(
        "Roll stable back to v1",
        &["version", "stable", "mysite", "v1"],
    )?;
    step("What runs where", &["info"])?;
    println!(
        "\nThe store is a plain directory: {}",
        demo.join("store").display()
    );
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}
