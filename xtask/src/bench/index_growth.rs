//! Benchmark 8 — version.info after 5,000 uploads (one every 10 minutes, about five weeks of a
//! CI that uploads every commit), with the default retention policy against none (every version
//! kept, as before retention): its size, what every server downloads when it changes, and how
//! long `cargo milky info` takes to read and parse it.
//!
//! The uploads are simulated in this process with milky-core's own edits (`add_package`,
//! `set_version`, then the policy's selection and `remove_versions`, as `cargo milky upload`
//! does), each at its simulated time, so that the grace period and the ages mean what they would
//! over five weeks. The index without a policy is the same entries, all kept.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use milky_core::retention::{self, Policy};
use milky_core::{AppName, GroupName, Index, PackageEntry, Version};

use super::Bench;
use super::report::Report;
use super::stats::{Samples, usage};

const UPLOADS: u32 = 5_000;
const EVERY: Duration = Duration::from_secs(10 * 60);

/// The figures benchmark 6 prices: bytes of the index with the default policy and without.
#[derive(Debug, Clone, Copy)]
pub struct IndexFigures {
    pub with_policy: usize,
    pub without: usize,
}

fn entry(k: u32, at: SystemTime) -> PackageEntry {
    PackageEntry {
        sha256: format!("{:064x}", u64::from(k) * 0x9e37_79b9),
        size: 40_000_000 + u64::from(k),
        uploaded: humantime::format_rfc3339_seconds(at).to_string(),
        // Signed, as a careful team's uploads are: the longest entries.
        signature: Some(format!("0011223344556677:{}", "A".repeat(86))),
        python: None,
    }
}

/// The index after `UPLOADS` uploads of one app to one group, pruned by `policy` after each.
fn simulate(policy: Option<&Policy>) -> anyhow::Result<Index> {
    let (app, group): (AppName, GroupName) = ("shop".parse()?, "stable".parse()?);
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let mut index = Index::new();
    for k in 1..=UPLOADS {
        let at = start + EVERY * k;
        let version: Version = format!("v{k}").parse()?;
        index.add_package(&app, &version, &entry(k, at))?;
        index.set_version(&group, &app, &version)?;
        if let Some(policy) = policy {
            let doomed = retention::select(&index, policy, &BTreeSet::new(), at);
            let keys: Vec<(AppName, Version)> =
                doomed.into_iter().map(|d| (d.app, d.version)).collect();
            index.remove_versions(&keys);
        }
    }
    Ok(index)
}

/// The index without a policy: every entry of the simulation kept. Written as text in one go,
/// in the layout the edits write (checked on the first entry), since editing an ever larger
/// index 5,000 times in this debug-built process would take long.
fn everything() -> anyhow::Result<Index> {
    let (app, group): (AppName, GroupName) = ("shop".parse()?, "stable".parse()?);
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let block = |k: u32| {
        let e = entry(k, start + EVERY * k);
        format!(
            "\n[apps.shop.versions.v{k}]\nsha256 = \"{}\"\nsize = {}\nuploaded = \"{}\"\nsignature = \"{}\"\n",
            e.sha256,
            e.size,
            e.uploaded,
            e.signature.unwrap_or_default()
        )
    };
    let mut one = Index::new();
    one.add_package(&app, &"v1".parse()?, &entry(1, start + EVERY))?;
    let mut text = Index::new().to_string();
    anyhow::ensure!(
        one.to_string() == format!("{text}{}", block(1)),
        "the layout of an entry changed: {one}"
    );
    for k in 1..=UPLOADS {
        text += &block(k);
    }
    let mut index = Index::parse(&text)?;
    for k in UPLOADS - 10..=UPLOADS {
        index.set_version(&group, &app, &format!("v{k}").parse()?)?;
    }
    Ok(index)
}

pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<IndexFigures> {
    eprintln!("bench 8: simulating {UPLOADS} uploads with the default policy and without");
    let with_policy = simulate(Some(&Policy::default()))?.to_string();
    let without = everything()?.to_string();
    let scratch = bench.work.join("index-growth");
    let runs = if bench.quick { 3 } else { 5 };
    let mut rows = String::from(
        "| policy | entries | version.info | 10,000 servers download per change | `cargo milky info` wall | peak RSS |\n|---|---|---|---|---|---|\n",
    );
    for (name, text) in [
        ("default (keep 20, older than 1h)", &with_policy),
        ("none (before retention)", &without),
    ] {
        let store = scratch.join(if text == &with_policy {
            "with"
        } else {
            "without"
        });
        std::fs::create_dir_all(&store)?;
        std::fs::write(store.join("version.info"), text)?;
        let url = format!("file://{}", store.display());
        let (mut wall, mut rss) = (Samples::default(), Samples::default());
        for _ in 0..runs {
            let used = usage(
                &bench.milky_bin,
                &["milky", "--store", &url, "info", "--json"],
                &[],
                &scratch,
            )?;
            wall.push(used.wall * 1000.0);
            rss.push(used.max_rss_mb);
        }
        let entries = Index::parse(text)?
            .versions(&"shop".parse()?)
            .map_or(0, |v| v.len());
        let _ = writeln!(
            rows,
            "| {name} | {entries} | {:.1} KB | {:.1} MB | {} | {} |",
            text.len() as f64 / 1000.0,
            text.len() as f64 * 10_000.0 / 1e6,
            wall.show(1, " ms"),
            rss.show(1, " MB")
        );
    }
    let _ = writeln!(
        rows,
        "\n{UPLOADS} uploads of one app to one group, one every 10 minutes, each entry signed (the\n\
         longest entries); with the policy, each upload is followed by its selection and removal, as\n\
         `cargo milky upload` does. The policy keeps the 20 newest versions and the group's current\n\
         one and 10 of history. `cargo milky info --json` ({}) reads the index from a\n\
         local store, parses it once and prints it: {runs} runs each.",
        super::fleet::build_name(bench)
    );
    let size = with_policy.len();
    report.target(
        "8",
        "version.info ≤ 64 KB after 5,000 uploads with the default policy",
        format!(
            "{:.1} KB (none: {:.1} KB)",
            size as f64 / 1000.0,
            without.len() as f64 / 1000.0
        ),
        size <= 64_000,
        "",
    );
    report.section("8. The index after 5,000 uploads", rows);
    Ok(IndexFigures {
        with_policy: size,
        without: without.len(),
    })
}
