//! Benchmark 6, on paper: what idle passes, status reports, `cargo milky status` and `--wait`,
//! index downloads and kept packages cost in S3 at 10 to 10,000 servers, priced from the
//! requests and bytes benchmarks 3, 7 and 8 measured.

use std::fmt::Write as _;

use super::report::Report;

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
