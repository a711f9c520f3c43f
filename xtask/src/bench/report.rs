//! `docs/BENCHMARKS.md`: the runs, the machine, the targets, one section per benchmark.
//!
//! A run with `--only` replaces the sections and target rows of the benchmarks it ran and keeps
//! the others from the page it finds; every section and row names the run that measured it, and
//! the table of runs lists those runs.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use super::Bench;
use crate::tools::workspace_root;

pub struct Report {
    machine: Vec<(String, String)>,
    run: Run,
    only: Option<Vec<String>>,
    /// The page as an earlier run left it, for a run with `--only`.
    earlier: Page,
    sections: Vec<(String, String)>,
    targets: Vec<[String; 5]>,
}

/// A row of the table of runs.
#[derive(Debug, Clone, PartialEq, Default)]
struct Run {
    label: String,
    command: String,
    date: String,
    took: String,
    load: String,
    rustc: String,
}

/// What the page holds, each item with the label of the run that measured it.
#[derive(Debug, Default)]
struct Page {
    runs: Vec<Run>,
    /// Run label, then the benchmark id, target, measured, met and why.
    targets: Vec<(String, [String; 5])>,
    /// Run label, title, body.
    sections: Vec<(String, String, String)>,
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The 1-minute load average: how busy the machine was besides the bench.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The benchmark a section title or target id belongs to ("1b" of "1b. Unpacking …").
fn bench_id(title: &str) -> &str {
    title.split_once(". ").map_or(title, |(id, _)| id)
}

/// Benchmarks in their order: "1" < "1b" < "2" < … < "10".
fn order(id: &str) -> (u32, String) {
    let digits = id.len() - id.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    (
        id[..digits].parse().unwrap_or(u32::MAX),
        id[digits..].to_owned(),
    )
}

/// The cells of a markdown table row; `\|` inside a cell is not a separator.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut escaped = false;
    for c in inner.chars() {
        if c == '|' && !escaped {
            cells.push(String::new());
        } else {
            cells.last_mut().expect("one cell").push(c);
        }
        escaped = c == '\\';
    }
    cells.iter().map(|c| c.trim().to_owned()).collect()
}

/// Rows of the first table in `text`, without its header and separator.
fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(cells)
        .collect()
}

/// The line a section body starts with, naming its run.
fn measured_by(label: &str) -> String {
    format!("*Measured by run {label}.*")
}

impl Page {
    /// Reads a page this module wrote; anything else gives an empty page.
    fn parse(text: &str) -> Self {
        let mut page = Page::default();
        for part in text.split("\n## ").skip(1) {
            let (title, body) = part.split_once('\n').unwrap_or((part, ""));
            match title {
                "Runs" => {
                    for row in table_rows(body) {
                        if let [label, command, date, took, load, rustc] = &row[..] {
                            page.runs.push(Run {
                                label: label.clone(),
                                command: command.trim_matches('`').to_owned(),
                                date: date.clone(),
                                took: took.clone(),
                                load: load.clone(),
                                rustc: rustc.clone(),
                            });
                        }
                    }
                }
                "Targets" => {
                    for row in table_rows(body) {
                        if let [id, run, target, measured, met, why] = &row[..] {
                            page.targets.push((
                                run.clone(),
                                [
                                    id.clone(),
                                    target.clone(),
                                    measured.clone(),
                                    met.clone(),
                                    why.clone(),
                                ],
                            ));
                        }
                    }
                }
                "Machine" => {}
                _ => {
                    let body = body.trim_start_matches('\n');
                    let (first, rest) = body.split_once('\n').unwrap_or((body, ""));
                    if let Some(label) = first
                        .strip_prefix("*Measured by run ")
                        .and_then(|l| l.strip_suffix(".*"))
                    {
                        let rest = rest.trim_start_matches('\n').trim_end_matches('\n');
                        page.sections
                            .push((label.to_owned(), title.to_owned(), rest.to_owned()));
                    }
                }
            }
        }
        page
    }
}

impl Report {
    pub fn new(bench: &Bench, quick: bool, only: Option<Vec<String>>) -> Self {
        let cpu = output(
            "sh",
            &["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
        );
        let mem = output(
            "sh",
            &[
                "-c",
                "awk '/MemTotal/ {printf \"%.1f GB\", $2/1048576}' /proc/meminfo",
            ],
        );
        let (bytes, files) = super::workload::tree_size(&bench.project);
        let machine = vec![
            (
                "CPU".into(),
                format!("{} × {}", output("nproc", &[]), cpu.trim()),
            ),
            ("Memory".into(), mem),
            (
                "OS".into(),
                format!(
                    "Debian {} (kernel {})",
                    output("cat", &["/etc/debian_version"]),
                    output("uname", &["-r"])
                ),
            ),
            (
                "Workload".into(),
                format!(
                    "the tests' Django fixture + wheels of `{}` + Django's source as app code: {:.1} MB in {files} files",
                    super::workload::REQUIREMENTS
                        .lines()
                        .collect::<Vec<_>>()
                        .join(", "),
                    bytes as f64 / 1e6
                ),
            ),
        ];
        let run = Run {
            label: String::new(),
            command: format!(
                "cargo xtask bench{}{}{}",
                if quick { " --quick" } else { "" },
                if bench.debug_build {
                    " --debug-build"
                } else {
                    ""
                },
                only.as_ref()
                    .map(|o| format!(" --only {}", o.join(",")))
                    .unwrap_or_default(),
            ),
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            took: String::new(),
            load: load(),
            rustc: output("rustc", &["-V"]),
        };
        // Only a partial run keeps anything of the page it replaces.
        let earlier = if only.is_some() {
            std::fs::read_to_string(workspace_root().join("docs/BENCHMARKS.md"))
                .map(|text| Page::parse(&text))
                .unwrap_or_default()
        } else {
            Page::default()
        };
        Self {
            machine,
            run,
            only,
            earlier,
            sections: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// Benchmark 3's requests per idle pass, as the page's earlier run measured them, with
    /// "run X" naming that run.
    pub fn earlier_idle_requests(&self) -> Option<(f64, String)> {
        self.earlier
            .targets
            .iter()
            .find(|(_, row)| row[0] == "3" && row[1] == "one conditional request per idle pass")
            .and_then(|(run, row)| {
                let requests = row[2].split_whitespace().next()?.parse().ok()?;
                Some((requests, format!("run {run}")))
            })
    }

    pub fn section(&mut self, title: &str, body: String) {
        self.sections.push((title.to_owned(), body));
    }

    /// A target row: which benchmark, the target, what was measured, met or not, and why not.
    pub fn target(&mut self, id: &str, target: &str, measured: String, met: bool, why: &str) {
        self.targets.push([
            id.to_owned(),
            target.to_owned(),
            measured,
            if met {
                "met".into()
            } else {
                "**not met**".into()
            },
            why.to_owned(),
        ]);
    }

    pub fn finish(&mut self, took: Duration) {
        self.run.took = format!("{:.0} min", took.as_secs_f64() / 60.0);
        self.run.load = format!("{} → {}", self.run.load, load());
    }

    pub fn markdown(&self) -> String {
        let page = self.merged();
        let mut md = String::from("# Benchmarks\n\n");
        md += "Written by `cargo xtask bench`, which reproduces it on any Debian 12 machine: it makes its own\n\
               workload, installs what it measures against and runs every baseline in the same run.\n\
               `cargo xtask bench --quick` does fewer repetitions; `--only 1,1b` reruns some benchmarks and\n\
               keeps the others' sections from the run that measured them. Every section and target row\n\
               names its run. Figures are the median of the runs with min–max in brackets; ratios are\n\
               baseline ÷ MilkyWhite (higher is better) on medians.\n\n";
        md += "## Runs\n\n| run | command | date | took | load (1 min) start → end | rustc |\n|---|---|---|---|---|---|\n";
        for run in &page.runs {
            let _ = writeln!(
                md,
                "| {} | `{}` | {} | {} | {} | {} |",
                run.label, run.command, run.date, run.took, run.load, run.rustc
            );
        }
        md += "\nThe machine has other load than the bench's own: the load column says how much (a\n\
               load above the core count means that CPU time was shared).\n";
        md += "\n## Machine\n\n| As of the latest run | |\n|---|---|\n";
        for (key, value) in &self.machine {
            let _ = writeln!(md, "| {key} | {value} |");
        }
        md += "\n## Targets\n\n| # | run | target | measured | | what limits it |\n|---|---|---|---|---|---|\n";
        for (run, [id, rest @ ..]) in &page.targets {
            let _ = writeln!(md, "| {id} | {run} | {} |", rest.join(" | "));
        }
        for (run, title, body) in &page.sections {
            let _ = write!(md, "\n## {title}\n\n{}\n\n{body}\n", measured_by(run));
        }
        md
    }

    /// This run's items, and the earlier page's for the benchmarks this run did not do.
    fn merged(&self) -> Page {
        let rerun = |id: &str| {
            self.only
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == id))
        };
        let mut page = Page::default();
        for (run, row) in &self.earlier.targets {
            if !rerun(&row[0]) {
                page.targets.push((run.clone(), row.clone()));
            }
        }
        for (run, title, body) in &self.earlier.sections {
            if !rerun(bench_id(title)) {
                page.sections
                    .push((run.clone(), title.clone(), body.clone()));
            }
        }
        let kept: Vec<&Run> = self
            .earlier
            .runs
            .iter()
            .filter(|r| {
                page.targets.iter().any(|(run, _)| *run == r.label)
                    || page.sections.iter().any(|(run, _, _)| *run == r.label)
            })
            .collect();
        // The letter after the latest kept run's, so that a letter names one run.
        let label = kept
            .iter()
            .filter_map(|r| r.label.chars().next())
            .max()
            .map_or('A', |last| {
                char::from_u32(u32::from(last) + 1)
                    .filter(char::is_ascii_uppercase)
                    .unwrap_or('A')
            })
            .to_string();
        page.runs = kept.into_iter().cloned().collect();
        page.runs.push(Run {
            label: label.clone(),
            ..self.run.clone()
        });
        for row in &self.targets {
            page.targets.push((label.clone(), row.clone()));
        }
        for (title, body) in &self.sections {
            page.sections.push((
                label.clone(),
                title.clone(),
                body.trim_end_matches('\n').to_owned(),
            ));
        }
        // Stable: a benchmark's rows keep the order they were written in.
        page.targets.sort_by_key(|(_, row)| order(&row[0]));
        page.sections
            .sort_by_key(|(_, title, _)| order(bench_id(title)));
        page
    }
}

/// Benchmark 6, on paper from benchmark 3's measured requests per idle pass (with the run that
/// measured them), and benchmarks 7 and 8's measures of `status`, `--wait` and the index.
pub fn scale(
    report: &mut Report,
    per_pass: Option<(f64, String)>,
    fleet: Option<super::fleet::FleetFigures>,
    index: Option<super::index_growth::IndexFigures>,
) {
    // S3 Standard, us-east-1: GET (a 304 is billed as a GET) and PUT, per 1,000 requests.
    const GET: f64 = 0.0004 / 1000.0;
    const PUT: f64 = 0.005 / 1000.0;
    let source = per_pass.as_ref().map_or_else(
        || "assumed: benchmark 3 did not run".to_owned(),
        |(_, run)| format!("measured by {run}"),
    );
    let per_pass = per_pass.map_or(1.0, |(requests, _)| requests);
    // Status reports: written on change and at least every HEARTBEAT (10 min).
    let heartbeats = 24.0 * 6.0;
    let mut body = format!(
        "From benchmark 3: an idle pass makes {per_pass} request(s) ({}); each agent also writes its status\n\
         report once per 10-minute heartbeat (144 PUTs/day) and on change. Prices: S3 Standard us-east-1,\n\
         $0.0004 per 1,000 GETs (a 304 counts as a GET), $0.005 per 1,000 PUTs; deploys add one package\n\
         GET per server per release and are left out. Data transfer inside a region is free.\n\n\
         | cadence | servers | requests/day | cost/day | cost/month (30 d) |\n|---|---|---|---|---|\n",
        source
    );
    for (cadence, passes) in [
        ("cron every 5 min", 288.0),
        ("`run --interval 30s`", 2880.0),
    ] {
        for servers in [10.0, 1_000.0, 10_000.0] {
            let gets = per_pass * passes * servers;
            let puts = heartbeats * servers;
            let day = gets * GET + puts * PUT;
            let _ = writeln!(
                body,
                "| {cadence} | {servers:.0} | {:.0} | ${day:.2} | ${:.2} |",
                gets + puts,
                day * 30.0
            );
        }
    }
    let _ = writeln!(
        body,
        "\nThe heartbeat dominates the cost at cron cadence (a PUT costs 12.5 GETs); at 30 s passes the\n\
         conditional GETs do. 10,000 servers at 30 s make ~{:.0} requests/s on the index, well within\n\
         S3's 5,500 GET/s per prefix.",
        per_pass * 10_000.0 / 30.0
    );
    controller_costs(&mut body, fleet, index);
    report.section("6. Scale on paper", body);
}

/// What `status`, `--wait` and the index cost at 10,000 servers, and the packages kept, from
/// benchmarks 7 and 8's measures where they ran.
fn controller_costs(
    body: &mut String,
    fleet: Option<super::fleet::FleetFigures>,
    index: Option<super::index_growth::IndexFigures>,
) {
    // LIST is billed as a PUT; storage at $0.023 per GB-month; data out to the internet at
    // $0.09 per GB (inside a region it is free).
    const LIST: f64 = 0.005 / 1000.0;
    const GET: f64 = 0.0004 / 1000.0;
    const GB_MONTH: f64 = 0.023;
    const GB_OUT: f64 = 0.09;
    let servers = 10_000.0;
    let pages = (servers / 1000.0_f64).ceil();
    let status = servers * GET + pages * LIST;
    // A 5-minute rollout watched with `--wait`, one poll a second.
    let polls = 300.0;
    let _ = write!(
        body,
        "\n### The controller and the index at 10,000 servers\n\n{}\n\n\
         | what | requests | cost |\n|---|---|---|\n\
         | `cargo milky status` (every report, {pages:.0} listing pages){} | {:.0} | ${status:.4} |\n",
        match fleet {
            Some(_) =>
                "Requests per `--wait` poll, `status`'s time and memory and a server's download per index\n\
                 change as benchmark 7 measured them in this run.",
            None =>
                "Benchmark 7 did not run: requests are counted from the design (a listing page per 1,000\n\
                 reports, a GET per report read), nothing is measured.",
        },
        fleet.map_or(String::new(), |f| format!(
            ": {:.2} s, {:.0} MB peak RSS from {}",
            f.status_wall, f.status_rss, f.status_store
        )),
        servers + pages,
    );
    let poll = fleet.map_or(1.0 + pages, |f| f.unchanged_poll_requests);
    let _ = write!(
        body,
        "| a 5-minute `--wait`, 1 poll/s, re-reading only changed reports ({poll:.0} requests a poll{}) | ~{:.0} + changed reports | ${:.3} + $0.0004 per 1,000 changed |\n\
         | the same `--wait` before (every report every poll) | {:.0} | ${:.2} |\n",
        if fleet.is_some() { ", measured" } else { "" },
        polls * poll,
        polls * (GET + (poll - 1.0) * LIST) + servers * GET,
        polls * (servers + 1.0 + pages),
        polls * (servers * GET + GET + pages * LIST),
    );
    let per_change = |bytes: u64| bytes as f64 * servers;
    let _ = write!(
        body,
        "\nEvery change of version.info is downloaded by every server: free inside a region, ${GB_OUT:.2}\n\
         per GB to servers outside AWS.\n\n\
         | index | a server's pass after a change | 10,000 servers per change | out of AWS, per change |\n|---|---|---|---|\n"
    );
    let mut row = |what: &str, bytes: u64| {
        let _ = writeln!(
            body,
            "| {what} | {:.1} KB | {:.1} MB | ${:.3} |",
            bytes as f64 / 1000.0,
            per_change(bytes) / 1e6,
            per_change(bytes) / 1e9 * GB_OUT
        );
    };
    if let Some(fleet) = fleet {
        row("this run's store (benchmark 7)", fleet.download.changed);
    }
    if let Some(index) = index {
        row(
            "after 5,000 uploads, default policy (benchmark 8)",
            index.with_policy.download.changed,
        );
        row(
            "after 5,000 uploads, no policy (benchmark 8)",
            index.without.download.changed,
        );
    }
    if fleet.is_none() && index.is_none() {
        body.push_str("| (benchmarks 7 and 8 did not run: not priced) | | | |\n");
    }
    // Packages: the reference package is ~40 MB; the default policy keeps at most the 20 newest
    // plus each group's current one and 10 of history.
    let package_gb = 0.04;
    let kept = index.map_or(31.0, |i| i.with_policy.entries as f64);
    let _ = writeln!(
        body,
        "\nPackages (~40 MB each, as benchmark 1's): 5,000 uploads kept for ever hold {:.0} GB,\n\
         ${:.2} a month and growing; the default policy keeps {kept:.0} per app and group{}\n\
         ({:.1} GB, ${:.2} a month).",
        5000.0 * package_gb,
        5000.0 * package_gb * GB_MONTH,
        if index.is_some() {
            " after benchmark 8's 5,000 uploads"
        } else {
            " at most (benchmark 8 did not run)"
        },
        kept * package_gb,
        kept * package_gb * GB_MONTH
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(only: Option<&str>, earlier: &str, label_note: &str) -> Report {
        let mut report = Report {
            machine: vec![("CPU".into(), "2 × test".into())],
            run: Run {
                command: format!("cargo xtask bench {label_note}"),
                date: "today".into(),
                took: "1 min".into(),
                load: "1.0 → 2.0".into(),
                rustc: "rustc test".into(),
                ..Run::default()
            },
            only: only.map(|o| o.split(',').map(str::to_owned).collect()),
            earlier: Page::parse(earlier),
            sections: Vec::new(),
            targets: Vec::new(),
        };
        for id in ["1", "1b", "2"] {
            if report
                .only
                .as_ref()
                .is_none_or(|o| o.iter().any(|x| x == id))
            {
                report.section(
                    &format!("{id}. Bench {id}"),
                    format!(
                        "| a | b |\n|---|---|\n| {label_note} \\| x | 1 |\n\n### Sub\n\ntext\n"
                    ),
                );
                report.target(id, "fast", format!("{label_note} 2×"), true, "");
            }
        }
        report
    }

    #[test]
    fn a_partial_run_replaces_its_benchmarks_and_keeps_the_others_with_their_run() {
        let full = report(None, "", "first").markdown();
        let partial = report(Some("1b"), &full, "second").markdown();
        let page = Page::parse(&partial);
        let labels: Vec<_> = page.runs.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["A", "B"], "{partial}");
        assert_eq!(page.runs[1].command, "cargo xtask bench second");
        let sections: Vec<_> = page
            .sections
            .iter()
            .map(|(run, title, body)| (run.as_str(), title.as_str(), body.contains("first")))
            .collect();
        assert_eq!(
            sections,
            [
                ("A", "1. Bench 1", true),
                ("B", "1b. Bench 1b", false),
                ("A", "2. Bench 2", true)
            ]
        );
        let targets: Vec<_> = page
            .targets
            .iter()
            .map(|(run, row)| (run.as_str(), row[0].as_str(), row[2].as_str()))
            .collect();
        assert_eq!(
            targets,
            [
                ("A", "1", "first 2×"),
                ("B", "1b", "second 2×"),
                ("A", "2", "first 2×")
            ]
        );
        // Rewriting the page from itself changes nothing.
        let again = report(Some("9"), &partial, "third").markdown();
        let page_again = Page::parse(&again);
        assert_eq!(page_again.sections, page.sections);
        assert_eq!(page_again.targets, page.targets);

        // Once no section or row is left from run A, it leaves the table.
        let replaced = report(Some("1,2"), &partial, "fourth").markdown();
        let labels: Vec<_> = Page::parse(&replaced)
            .runs
            .iter()
            .map(|r| (r.label.clone(), r.command.clone()))
            .collect();
        assert_eq!(
            labels,
            [
                ("B".to_owned(), "cargo xtask bench second".to_owned()),
                ("C".to_owned(), "cargo xtask bench fourth".to_owned())
            ]
        );
    }
}
