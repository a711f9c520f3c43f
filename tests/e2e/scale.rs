//! Many servers and many versions: `status` read concurrently against the sequential reader,
//! `prune` racing uploads, `hosts forget --older-than`.

use std::process::Output;
use std::thread;

use milky_core::status::{AppStatus, HostStatus};
use milky_core::{Index, Version};
use milky_tests::*;
use serde_json::Value;

fn json(out: &Output) -> Value {
    assert_success(out, "command with --json");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

/// A report as an agent writes it, `minutes_ago` old.
fn report(host: &str, minutes_ago: u64, shop: AppStatus) -> String {
    let at = std::time::SystemTime::now() - std::time::Duration::from_secs(minutes_ago * 60);
    let status = HostStatus {
        apps: [("shop".parse().unwrap(), shop)].into(),
        ..HostStatus::new(host.parse().unwrap(), "big".parse().unwrap(), at)
    };
    toml::to_string(&status).unwrap()
}

/// Ages of stale servers grow between two runs: the same output but for them.
fn without_ages(mut status: Value) -> Value {
    for stale in status["big"]["stale"].as_array_mut().unwrap() {
        stale[1] = Value::from(0);
    }
    status
}

fn text_without_ages(text: &str) -> String {
    text.lines()
        .map(
            |line| match (line.find("last report "), line.find(" ago")) {
                (Some(start), Some(end)) => format!("{}{}", &line[..start], &line[end..]),
                _ => line.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn status_of_hundreds_of_reports_reads_the_same_as_one_after_another() {
    let ctx = TestContext::new();
    let project = ctx.project("shop", "one");
    ctx.upload(&project, "big", "v1");
    ctx.upload(&project, "big", "v2");
    let up = AppStatus {
        serving: Some(v("v2")),
        wanted: Some(v("v2")),
        healthy: true,
        ..AppStatus::default()
    };
    let behind = AppStatus {
        serving: Some(v("v1")),
        wanted: Some(v("v1")),
        healthy: true,
        ..AppStatus::default()
    };
    let failed = AppStatus {
        failed: Some(v("v2")),
        error: Some("health check failed".into()),
        ..behind.clone()
    };
    // 300 servers: 240 serve v2, 40 lag, 12 failed, 6 went stale, 2 wrote garbage.
    for n in 0..300 {
        let host = format!("web-{n:03}");
        let text = match n {
            0..240 => report(&host, 1, up.clone()),
            240..280 => report(&host, 1, behind.clone()),
            280..292 => report(&host, 2, failed.clone()),
            292..298 => report(&host, 90, behind.clone()),
            _ => "not = [toml".into(),
        };
        ctx.put_object(&format!("groups/big/hosts/{host}.toml"), text.as_bytes());
    }

    let concurrent = json(&ctx.milky(&["status", "big", "--json"]));
    let sequential = json(&ctx.milky(&["status", "big", "--json", "--read-concurrency", "1"]));
    assert_eq!(without_ages(concurrent.clone()), without_ages(sequential));
    let big = &concurrent["big"];
    let shop = &big["apps"]["shop"];
    let count = |v: &Value| v.as_array().unwrap().len();
    assert_eq!(
        (
            count(&big["live"]),
            count(&shop["serving"]),
            count(&shop["lagging"])
        ),
        (292, 240, 40)
    );
    assert_eq!((count(&shop["failed"]), count(&big["stale"])), (12, 6));
    assert_eq!(count(&big["unreadable"]), 2);

    let text = |extra: &[&str]| {
        let mut args = vec!["status", "big"];
        args.extend_from_slice(extra);
        let out = ctx.milky(&args);
        assert_success(&out, "status");
        stdout(&out)
    };
    let summary = text(&[]);
    assert_eq!(
        text_without_ages(&summary),
        text_without_ages(&text(&["--read-concurrency", "1"]))
    );
    assert!(
        summary.contains("group big: 292 live server(s), 6 stale\n")
            && summary.contains("240/292 serving; 12 failed, 40 lagging\n"),
        "{summary}"
    );
    // The failed come first, ten of each list, the rest counted.
    let first_listed = summary.lines().nth(2).unwrap_or_default();
    assert!(
        first_listed.starts_with("    FAILED  web-280:"),
        "{summary}"
    );
    assert_eq!(summary.matches("    lagging web-").count(), 10, "{summary}");
    assert!(
        summary.contains("    … shop: 2 more failed, 30 more lagging\n"),
        "{summary}"
    );
    assert!(
        summary.contains("(32 servers not listed: `cargo milky status big --all`"),
        "{summary}"
    );
    let all = text(&["--all"]);
    assert_eq!(all.matches("    lagging web-").count(), 40, "{all}");
    assert_eq!(all.matches("    FAILED  web-").count(), 12, "{all}");
    assert!(!all.contains("more lagging"), "{all}");
}

/// More servers than one listing page holds (1,000): the reports of every page are read while
/// the next is listed, none lost or read twice. From s3s-fs, whose listings carry no ETag.
#[test]
fn status_reads_the_reports_of_every_listing_page() {
    let ctx = TestContext::new();
    let project = ctx.project("shop", "one");
    ctx.upload(&project, "big", "v1");
    ctx.upload(&project, "big", "v2");
    let s3s = s3s_fs::start(&ctx.dir.path().join("s3s-fs"), &ctx.bucket);
    let hosts_dir = s3s.object_path(&ctx.bucket, "fleet/groups/big/hosts");
    std::fs::create_dir_all(&hosts_dir).unwrap();
    let index = ctx.object("version.info").expect("the index");
    std::fs::write(s3s.object_path(&ctx.bucket, "fleet/version.info"), index).unwrap();
    let servers: usize = 2_345;
    for n in 0..servers {
        let host = format!("web-{n:04}");
        // Every tenth still serves v1.
        let version = if n % 10 == 0 { "v1" } else { "v2" };
        let shop = AppStatus {
            serving: Some(v(version)),
            wanted: Some(v(version)),
            healthy: true,
            ..AppStatus::default()
        };
        std::fs::write(
            hosts_dir.join(format!("{host}.toml")),
            report(&host, 1, shop),
        )
        .unwrap();
    }

    let out = ctx
        .milky_command(ctx.dir.path(), &["status", "big", "--json"])
        .env("AWS_ENDPOINT_URL", &s3s.endpoint)
        .output()
        .unwrap();
    let status = json(&out);
    let live: Vec<&str> = status["big"]["live"]
        .as_array()
        .unwrap()
        .iter()
        .map(|host| host.as_str().unwrap())
        .collect();
    let every: Vec<String> = (0..servers).map(|n| format!("web-{n:04}")).collect();
    assert_eq!(live, every, "every server once, in order");
    let shop = &status["big"]["apps"]["shop"];
    assert_eq!(
        (
            shop["serving"].as_array().unwrap().len(),
            shop["lagging"].as_array().unwrap().len()
        ),
        (servers - servers.div_ceil(10), servers.div_ceil(10))
    );
}

/// The index with every entry uploaded two days ago, and the group `scratch` gone from it
/// (its versions then run nowhere and are in no history).
fn age_and_drop_scratch(index: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in index.lines() {
        if line.starts_with('[') {
            skipping = line == "[groups.scratch]" || line == "[history.scratch]";
        }
        if skipping {
            continue;
        }
        if line.starts_with("uploaded = ") {
            out.push("uploaded = \"2026-01-01T00:00:00Z\"".to_owned());
        } else {
            out.push(line.to_owned());
        }
    }
    out.join("\n") + "\n"
}

#[test]
fn prune_removes_only_what_nothing_uses_even_while_uploads_race_it() {
    let ctx = TestContext::new();
    let project = ctx.project("shop", "one");
    for version in ["a1", "a2", "a3"] {
        ctx.upload(&project, "scratch", version);
    }
    for version in ["s1", "s2"] {
        ctx.upload(&project, "stable", version);
    }
    ctx.put_object(
        "version.info",
        age_and_drop_scratch(&ctx.index()).as_bytes(),
    );
    // a1 served somewhere once and ran its once hooks; a3's once hooks are running right now.
    ctx.put_object("groups/scratch/served/shop/a1", b"host = \"web-1\"\n");
    ctx.put_object(
        "groups/scratch/once/shop/a1/result.toml",
        b"ok = true\nhost = \"web-1\"\nfinished = \"2026-01-01T00:00:00Z\"\nhooks = []\noutput_tail = \"\"\n",
    );
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    ctx.put_object(
        "groups/scratch/once/shop/a3/lease.toml",
        format!("holder = \"web-2\"\nexpires = {expires}\ntaken = \"2026-01-01T00:00:00Z\"\n")
            .as_bytes(),
    );
    let a1_size = ctx.object("packages/shop/shop-a1.tar.bz2").unwrap().len();
    let a2_size = ctx.object("packages/shop/shop-a2.tar.bz2").unwrap().len();

    // The dry run says exactly what would go, and changes nothing.
    let before = ctx.index();
    let dry = json(&ctx.milky(&["prune", "--keep", "0", "--dry-run", "--json"]));
    assert_eq!(ctx.index(), before);
    let names = |list: &Value, field: &str| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|x| x[field].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&dry["versions"], "version"), ["a2", "a1"]);
    assert_eq!(
        names(&dry["packages"], "key"),
        [
            "packages/shop/shop-a1.tar.bz2",
            "packages/shop/shop-a2.tar.bz2"
        ]
    );
    assert_eq!(
        names(&dry["records"], "key"),
        [
            "groups/scratch/once/shop/a1/result.toml",
            "groups/scratch/served/shop/a1"
        ]
    );
    let records: u64 = dry["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["size"].as_u64().unwrap())
        .sum();
    assert_eq!(dry["bytes"], (a1_size + a2_size) as u64 + records);
    assert!(ctx.object("packages/shop/shop-a1.tar.bz2").is_some());

    // Prunes race two uploads; every edit is a compare-and-swap.
    let uploads = {
        let (ctx, project) = (&ctx, &project);
        thread::scope(|scope| {
            let prunes: Vec<_> = (0..3)
                .map(|_| scope.spawn(move || ctx.milky(&["prune", "--keep", "0", "--json"])))
                .collect();
            for version in ["s3", "s4"] {
                ctx.upload(project, "stable", version);
            }
            prunes
                .into_iter()
                .map(|p| p.join().unwrap())
                .collect::<Vec<_>>()
        })
    };
    let mut removed: Vec<String> = Vec::new();
    for out in &uploads {
        removed.extend(names(&json(out)["versions"], "version"));
    }
    removed.sort();
    assert_eq!(removed, ["a1", "a2"], "each version is removed once");

    let index = Index::parse(&ctx.index()).unwrap();
    let listed: Vec<String> = index
        .versions(&"shop".parse().unwrap())
        .unwrap()
        .keys()
        .map(ToString::to_string)
        .collect();
    // a3: its once hooks run; s1–s3: stable's history; s4 runs; s3 and s4: uploaded just now.
    assert_eq!(listed, ["a3", "s1", "s2", "s3", "s4"]);
    for version in &listed {
        assert!(
            ctx.object(&format!("packages/shop/shop-{version}.tar.bz2"))
                .is_some(),
            "the package of {version} stays"
        );
    }
    for gone in ["a1", "a2"] {
        assert!(
            ctx.object(&format!("packages/shop/shop-{gone}.tar.bz2"))
                .is_none()
        );
    }
    assert!(ctx.list("groups/scratch/served/").is_empty());
    assert_eq!(
        ctx.list("groups/scratch/once/"),
        ["groups/scratch/once/shop/a3/lease.toml"]
    );

    // The policy: saved in the index, applied after an upload (s1 and s2 leave stable's
    // history only when it fills up, so a keep of 1 with history still removes nothing in use).
    let out = ctx.milky(&["prune", "--keep", "1", "--save"]);
    assert_success(&out, "prune --save");
    let index = ctx.index();
    assert!(
        index.contains("[retention]\nkeep = 1\nolder_than = \"1h\"\nafter_upload = true\n"),
        "{index}"
    );
    let out = ctx.milky(&["prune", "--dry-run"]);
    assert_success(&out, "prune --dry-run");
    assert_eq!(stdout(&out), "nothing to prune\n");
}

#[test]
fn hosts_forget_older_than_drops_only_stale_reports() {
    let ctx = TestContext::new();
    let store = ctx.dir.path().join("store");
    let url = format!("file://{}", store.display());
    let hosts = store.join("groups/g/hosts");
    for host in ["fresh", "old-1", "old-2"] {
        write(&hosts.join(format!("{host}.toml")), "host = \"x\"\n");
    }
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for host in ["old-1", "old-2"] {
        std::fs::File::options()
            .write(true)
            .open(hosts.join(format!("{host}.toml")))
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    let forget = |extra: &[&str]| {
        let mut args = vec!["--store", url.as_str(), "hosts", "forget"];
        args.extend_from_slice(extra);
        ctx.milky(&args)
    };
    assert_failure(&forget(&["g", "--older-than", "10m"]), 2, "at least 1h");
    let dry = json(&forget(&[
        "g",
        "--older-than",
        "90m",
        "--dry-run",
        "--json",
    ]));
    let forgotten: Vec<&str> = dry
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["host"].as_str().unwrap())
        .collect();
    assert_eq!(forgotten, ["old-1", "old-2"]);
    assert!(
        hosts.join("old-1.toml").exists(),
        "a dry run deletes nothing"
    );
    assert_success(&forget(&["--older-than", "90m"]), "forget every group's");
    let left: Vec<String> = std::fs::read_dir(&hosts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["fresh.toml"]);
}
