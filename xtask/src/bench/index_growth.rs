//! Benchmark 8 — version.info after 5,000 uploads (one every 10 minutes, about five weeks of a
//! CI that uploads every commit), with the default retention policy against none (every version
//! kept, as before retention): its size, what a server downloads when it changes, and how long
//! `cargo milky info` takes to read and parse it.
//!
//! Everything goes through the release binary, in a local store: `cargo milky upload` (signed)
//! writes the first entry; the bench repeats that entry's lines for 4,999 more versions, each
//! uploaded 10 minutes after the one before (the last 10 minutes ago); `cargo milky version`
//! points the group at the last 11 (the current one and 10 of history); `cargo milky prune`
//! applies the default policy. With one upload every 10 minutes, pruning after each upload (as
//! `upload` does) keeps the same versions as pruning once at the end: the newest 20 span 200
//! minutes, past the one-hour grace, and every version in use is among them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};

use super::Bench;
use super::download::{Download, agent_download};
use super::report::Report;
use super::stats::{Samples, timed, usage};

const UPLOADS: u32 = 5_000;
const EVERY: Duration = Duration::from_secs(10 * 60);
/// What the reference upload is called before the bench renames it to the first version.
const FIRST: &str = "ref1";

/// The figures benchmark 6 prices: the index with the default policy and without.
#[derive(Debug, Clone, Copy)]
pub struct IndexFigures {
    pub with_policy: Measured,
    pub without: Measured,
}

/// One index's size and what a server downloads when it changes.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub bytes: usize,
    pub entries: usize,
    pub download: Download,
}

pub fn run(bench: &Bench, package: &Path, report: &mut Report) -> anyhow::Result<IndexFigures> {
    let scratch = bench.work.join("index-growth");
    let without = scratch.join("without");
    std::fs::create_dir_all(&without)?;
    eprintln!("bench 8: {UPLOADS} signed uploads into a local store");
    grow(bench, package, &without)?;
    let with = scratch.join("with");
    copy_store(&without, &with)?;
    eprintln!("bench 8: the default policy (`cargo milky prune`)");
    let prune_wall =
        timed(&mut bench.milky(&scratch, &["--store", &file_url(&with), "prune", "--json"]))?;
    let with_text = std::fs::read_to_string(with.join("version.info"))?;
    let without_text = std::fs::read_to_string(without.join("version.info"))?;

    let runs = if bench.quick { 3 } else { 5 };
    let mut measured = Vec::new();
    for (name, store, text) in [
        ("with", &with, &with_text),
        ("without", &without, &without_text),
    ] {
        let (mut wall, mut rss) = (Samples::default(), Samples::default());
        for _ in 0..runs {
            let used = usage(
                &bench.milky_bin,
                &["milky", "--store", &file_url(store), "info", "--json"],
                &[],
                &scratch,
            )?;
            wall.push(used.wall * 1000.0);
            rss.push(used.max_rss_mb);
        }
        eprintln!("bench 8: a server's download when the index {name} a policy changes");
        let download = agent_download(bench, &format!("index-{name}"), Some(text))?;
        measured.push((
            Measured {
                bytes: text.len(),
                entries: text.matches("[apps.shop.versions.").count(),
                download,
            },
            wall,
            rss,
        ));
    }
    let [
        (with_policy, with_wall, with_rss),
        (none, none_wall, none_rss),
    ] = &measured[..]
    else {
        bail!("two indexes measured");
    };
    let mut rows = String::from(
        "| policy | versions listed | version.info | a server downloads per change | 10,000 servers per change | `cargo milky info --json` wall | peak RSS |\n|---|---|---|---|---|---|---|\n",
    );
    for (name, m, wall, rss) in [
        (
            "default (keep 20, older than 1h)",
            with_policy,
            with_wall,
            with_rss,
        ),
        ("none (before retention)", none, none_wall, none_rss),
    ] {
        let _ = writeln!(
            rows,
            "| {name} | {} | {:.1} KB | {:.1} KB | {:.1} MB | {} | {} |",
            m.entries,
            m.bytes as f64 / 1000.0,
            m.download.changed as f64 / 1000.0,
            m.download.changed as f64 * 10_000.0 / 1e6,
            wall.show(1, " ms"),
            rss.show(1, " MB")
        );
    }
    let _ = writeln!(
        rows,
        "| ratio none ÷ default | {:.0}× | {:.0}× | {:.0}× | | {:.1}× | {:.1}× |",
        none.entries as f64 / with_policy.entries as f64,
        none.bytes as f64 / with_policy.bytes as f64,
        none.download.changed as f64 / with_policy.download.changed as f64,
        none_wall.median() / with_wall.median(),
        none_rss.median() / with_rss.median(),
    );
    let _ = writeln!(
        rows,
        "\n{UPLOADS} uploads of one app to one group, one every 10 minutes, each entry signed (the\n\
         longest entries). The first is a real `cargo milky upload --sign-key` into a local store;\n\
         the bench repeats its entry's lines for the others (their own version, digest, size and\n\
         upload time), `cargo milky version` points the group at the last 11 and `cargo milky prune`\n\
         applies the default policy ({}, {} s): with an upload every 10 minutes, pruning after each\n\
         upload keeps the same versions as pruning once, since the newest 20 span 200 minutes, past\n\
         the one-hour grace, and the versions in use are among them. `cargo milky info --json` ({})\n\
         reads the index from the local store, parses it once and prints it: {runs} runs each.\n\
         A server's download is measured at a byte-counting forwarder between one `milky-agent sync`\n\
         and moto, for the pass after the index changed (every byte the pass received: the index,\n\
         and the answers to its status report's PUT and its other requests); the same server's idle\n\
         pass received {} (default) and {} (none).",
        format_args!(
            "{} versions removed, {} left",
            none.entries - with_policy.entries,
            with_policy.entries
        ),
        format_args!("{prune_wall:.1}"),
        super::fleet::build_name(bench),
        bytes(with_policy.download.idle),
        bytes(none.download.idle),
    );
    report.target(
        "8",
        "version.info ≤ 64 KB after 5,000 uploads with the default policy",
        format!(
            "{:.1} KB, `info` {} (none: {:.1} KB, {:.0}× larger; `info` {})",
            with_policy.bytes as f64 / 1000.0,
            with_wall.show(1, " ms"),
            none.bytes as f64 / 1000.0,
            none.bytes as f64 / with_policy.bytes as f64,
            none_wall.show(1, " ms"),
        ),
        with_policy.bytes <= 64_000,
        "",
    );
    report.section("8. The index after 5,000 uploads", rows);
    Ok(IndexFigures {
        with_policy: *with_policy,
        without: *none,
    })
}

/// "1.2 KB" or "950 B".
pub fn bytes(n: u64) -> String {
    if n >= 1000 {
        format!("{:.1} KB", n as f64 / 1000.0)
    } else {
        format!("{n} B")
    }
}

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// The index of `UPLOADS` uploads in the local store `dir`, every version kept.
fn grow(bench: &Bench, package: &Path, dir: &Path) -> anyhow::Result<()> {
    let url = file_url(dir);
    let keys = bench.work.join("index-growth/keys");
    let milky = |args: &[&str]| -> anyhow::Result<String> {
        let mut full = vec!["--store", url.as_str()];
        full.extend_from_slice(args);
        let out = bench.milky(&bench.work, &full).output()?;
        if !out.status.success() {
            bail!(
                "cargo milky {}: {}",
                full.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    milky(&["keygen", "--out", &keys.to_string_lossy()])?;
    let key = keys.join("signing.key");
    milky(&[
        "upload",
        "--new-group",
        "--group",
        "stable",
        "--sign-key",
        &key.to_string_lossy(),
        &package.to_string_lossy(),
    ])?;
    let index_path = dir.join("version.info");
    let written = std::fs::read_to_string(&index_path)?;
    let start = SystemTime::now() - EVERY * (UPLOADS + 1);
    let text = repeat_entry(&written, |k| start + EVERY * k)?;
    std::fs::write(&index_path, text)?;
    // `version` checks that each package is in the store: the reference package under each name.
    let first = dir.join(format!("packages/shop/shop-{FIRST}.tar.bz2"));
    anyhow::ensure!(first.exists(), "{} was uploaded", first.display());
    for k in UPLOADS - 10..=UPLOADS {
        let version = format!("v{k}");
        std::fs::hard_link(
            &first,
            dir.join(format!("packages/shop/shop-{version}.tar.bz2")),
        )?;
        milky(&["version", "stable", "shop", &version])?;
    }
    std::fs::remove_file(&first)?;
    Ok(())
}

/// `index` with its one entry (the reference upload) renamed `v1` and repeated as `v2`…,
/// each with its own digest, size and upload time `at(k)`, in the layout the upload wrote.
fn repeat_entry(index: &str, at: impl Fn(u32) -> SystemTime) -> anyhow::Result<String> {
    let header = format!("[apps.shop.versions.{FIRST}]");
    let lines: Vec<&str> = index.lines().collect();
    let begin = lines
        .iter()
        .position(|l| *l == header)
        .with_context(|| format!("the upload wrote no {header}: {index}"))?;
    let end = lines[begin + 1..]
        .iter()
        .position(|l| l.starts_with('['))
        .map_or(lines.len(), |n| begin + 1 + n);
    let entry = &lines[begin + 1..end];
    for field in ["sha256 = ", "size = ", "uploaded = ", "signature = "] {
        anyhow::ensure!(
            entry.iter().any(|l| l.starts_with(field)),
            "the entry has no {field:?}: {index}"
        );
    }
    let mut blocks = String::new();
    for k in 1..=UPLOADS {
        let _ = writeln!(blocks, "[apps.shop.versions.v{k}]");
        for line in entry {
            if line.starts_with("sha256 = ") {
                let _ = writeln!(blocks, "sha256 = \"{:064x}\"", u64::from(k) * 0x9e37_79b9);
            } else if let Some(size) = line.strip_prefix("size = ") {
                let size: u64 = size.trim().parse().context("the entry's size")?;
                let _ = writeln!(blocks, "size = {}", size + u64::from(k));
            } else if line.starts_with("uploaded = ") {
                let _ = writeln!(
                    blocks,
                    "uploaded = \"{}\"",
                    humantime::format_rfc3339_seconds(at(k))
                );
            } else {
                let _ = writeln!(blocks, "{line}");
            }
        }
    }
    let before = lines[..begin]
        .join("\n")
        .replace(&format!("\"{FIRST}\""), "\"v1\"");
    let after = lines[end..].join("\n");
    Ok(format!("{before}\n{blocks}{after}\n"))
}

/// A copy of a local store: its index, and its packages as hard links.
fn copy_store(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry?;
        let target: PathBuf = to.join(entry.path().strip_prefix(from)?);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if entry.path().extension().is_some_and(|e| e == "bz2") {
            std::fs::hard_link(entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
