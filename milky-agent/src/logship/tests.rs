//! The shipper against a real store (a local directory store), with files rotated under it the
//! ways logrotate does: every line written comes out exactly once.

use std::collections::BTreeMap;
use std::io::Write;

use milky_core::store::LocalStore;

use super::*;

struct Bench {
    _dir: tempfile::TempDir,
    logs: PathBuf,
    store: Store,
    state_file: PathBuf,
    settings: config::Logs,
    group: GroupName,
    host: HostName,
    written: usize,
    /// Every line stamped with the same second (a busy server).
    same_second: bool,
}

impl Bench {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let store = Store::Local(LocalStore::open(&dir.path().join("store")).unwrap());
        Bench {
            logs,
            store,
            state_file: dir.path().join("logs-shipped.json"),
            settings: config::Logs::default(),
            group: "stable".parse().unwrap(),
            host: "web-1".parse().unwrap(),
            written: 0,
            same_second: false,
            _dir: dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    /// Appends `n` numbered lines (each unique) with a time stamp, as a writer holding the file
    /// open would (the file is opened by path, so write before renaming to model that).
    fn write(&mut self, name: &str, n: usize) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(name))
            .unwrap();
        for _ in 0..n {
            self.written += 1;
            let (mm, ss) = if self.same_second {
                (0, 0)
            } else {
                (self.written / 60 % 60, self.written % 60)
            };
            writeln!(
                file,
                "2026/11/25 10:{mm:02}:{ss:02} [error] line {}",
                self.written
            )
            .unwrap();
        }
    }

    fn files(&self) -> Vec<LogFile> {
        vec![LogFile {
            stream: Stream::new(Source::Nginx, None, "error"),
            path: self.path("error.log"),
            cut: Cut::Never,
        }]
    }

    fn shipper(&self) -> Shipper<'_> {
        Shipper {
            store: &self.store,
            group: &self.group,
            host: &self.host,
            state_file: self.state_file.clone(),
            settings: &self.settings,
        }
    }

    async fn ship(&self) -> ShipReport {
        let report = self.shipper().ship(&self.files()).await.unwrap();
        assert_eq!(report.store_error, None);
        report
    }

    /// Every line in the store, counted by its number.
    async fn lines_out(&self) -> BTreeMap<usize, usize> {
        let mut counts = BTreeMap::new();
        for key in self.store.list("logs/").await.unwrap() {
            assert!(SegmentKey::parse(&key).is_some(), "{key}");
            let object = self.store.get(&key).await.unwrap().unwrap();
            let text = logs::gunzip(&object.bytes, 1 << 30).unwrap();
            for line in String::from_utf8(text).unwrap().lines() {
                let n: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
                *counts.entry(n).or_default() += 1;
            }
        }
        counts
    }

    async fn assert_every_line_once(&self) {
        let counts = self.lines_out().await;
        let missing: Vec<usize> = (1..=self.written)
            .filter(|n| !counts.contains_key(n))
            .collect();
        let doubled: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
        assert!(missing.is_empty(), "lines never shipped: {missing:?}");
        assert!(doubled.is_empty(), "lines shipped twice: {doubled:?}");
        assert_eq!(counts.len(), self.written);
    }
}

/// Truncates a file in place, as logrotate's copytruncate does after its copy.
fn truncate(path: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

#[tokio::test]
async fn rename_rotation_and_copytruncate_lose_no_line() {
    let mut bench = Bench::new();
    bench.write("error.log", 100);
    assert_eq!(bench.ship().await.segments, 1);

    // logrotate's default: rename, the writer appends to the renamed file until it reopens.
    bench.write("error.log", 20);
    std::fs::rename(bench.path("error.log"), bench.path("error.log.1")).unwrap();
    bench.write("error.log.1", 5);
    bench.write("error.log", 30);
    bench.ship().await;
    bench.assert_every_line_once().await;

    // copytruncate: older files shift, the live one is copied and truncated in place.
    bench.write("error.log", 12);
    std::fs::rename(bench.path("error.log.1"), bench.path("error.log.2")).unwrap();
    std::fs::copy(bench.path("error.log"), bench.path("error.log.1")).unwrap();
    truncate(&bench.path("error.log"));
    bench.write("error.log", 7);
    let report = bench.ship().await;
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    bench.assert_every_line_once().await;

    // Nothing new: nothing shipped.
    assert_eq!(bench.ship().await.segments, 0);
}

#[tokio::test]
async fn a_file_truncated_within_the_same_second_does_not_overwrite_what_was_shipped() {
    let mut bench = Bench::new();
    bench.same_second = true;
    bench.write("error.log", 10);
    bench.ship().await;
    truncate(&bench.path("error.log"));
    bench.write("error.log", 12);
    let report = bench.ship().await;
    assert_eq!(
        report.warnings.len(),
        1,
        "no copy: the truncation is reported"
    );
    bench.assert_every_line_once().await;
}

#[tokio::test]
async fn a_lost_offset_ships_the_same_key_again() {
    let mut bench = Bench::new();
    bench.write("error.log", 10);
    bench.ship().await;
    let before_crash = std::fs::read(&bench.state_file).unwrap();
    bench.write("error.log", 10);
    bench.ship().await;
    // As if the agent died after the upload and before it saved the offset.
    std::fs::write(&bench.state_file, before_crash).unwrap();
    bench.write("error.log", 10);
    bench.ship().await;
    assert_eq!(bench.store.list("logs/").await.unwrap().len(), 2);
    bench.assert_every_line_once().await;
}

#[tokio::test]
async fn a_partial_line_waits_and_the_cap_spreads_a_backlog_over_passes() {
    let mut bench = Bench::new();
    bench.settings.max_bytes_per_pass = 1000;
    bench.settings.segment_bytes = 400;
    bench.write("error.log", 100);
    std::fs::OpenOptions::new()
        .append(true)
        .open(bench.path("error.log"))
        .unwrap()
        .write_all(b"2026/11/25 10:00:00 [error] half a li")
        .unwrap();
    let first = bench.ship().await;
    assert!(first.backlog);
    assert!(first.bytes <= 1000, "{first:?}");
    let mut passes = 1;
    while bench.ship().await.backlog {
        passes += 1;
        assert!(passes < 20);
    }
    assert!(
        passes >= 3,
        "a 4.5 KB backlog at 1 KB per pass takes passes"
    );
    let counts = bench.lines_out().await;
    assert_eq!(counts.len(), 100, "the half-written line waits for its end");
    bench.assert_every_line_once().await;
}

#[tokio::test]
async fn a_store_that_refuses_keeps_the_offsets() {
    let mut bench = Bench::new();
    bench.write("error.log", 10);
    // The store cannot write under logs/ while a file stands where its dir should be.
    let blocker = bench.logs.parent().unwrap().join("store/logs");
    std::fs::write(&blocker, "in the way").unwrap();
    let report = bench.shipper().ship(&bench.files()).await.unwrap();
    assert!(report.store_error.is_some(), "{report:?}");
    assert_eq!(report.segments, 0);
    std::fs::remove_file(&blocker).unwrap();
    bench.write("error.log", 5);
    bench.ship().await;
    bench.assert_every_line_once().await;
}

#[tokio::test]
async fn shipped_web_logs_are_cut_down_and_nothing_unshipped_goes() {
    let mut bench = Bench::new();
    bench.settings.web_max_bytes = 1000;
    bench.write("error.log", 100);
    bench.write("gone.log", 5);
    let files = vec![
        LogFile {
            stream: Stream::new(Source::Nginx, None, "error"),
            path: bench.path("error.log"),
            cut: Cut::Nginx,
        },
        LogFile {
            stream: Stream::new(Source::Apache, Some("shop".parse().unwrap()), "blue"),
            path: bench.path("gone.log"),
            cut: Cut::WhenShipped,
        },
    ];
    // A pass that could not ship everything cuts nothing.
    let mut tight = bench.settings.clone();
    tight.max_bytes_per_pass = 500;
    let partial = Shipper {
        settings: &tight,
        ..bench.shipper()
    };
    let report = partial.ship(&files).await.unwrap();
    assert!(report.backlog && !report.reopen_nginx, "{report:?}");
    assert!(bench.path("error.log").exists() && bench.path("gone.log").exists());

    let report = bench.shipper().ship(&files).await.unwrap();
    assert!(report.reopen_nginx, "{report:?}");
    assert!(!bench.path("error.log").exists());
    assert!(
        bench.path("error.log.1").exists(),
        "renamed for nginx to reopen"
    );
    assert!(
        !bench.path("gone.log").exists(),
        "a removed app's log goes once shipped"
    );
    bench.assert_every_line_once().await;
}

#[tokio::test]
async fn a_rotated_file_is_finished_before_the_new_one_starts() {
    let mut bench = Bench::new();
    bench.write("error.log", 1);
    bench.ship().await;
    bench.write("error.log", 60);
    std::fs::rename(bench.path("error.log"), bench.path("error.log.1")).unwrap();
    bench.write("error.log", 30);
    bench.settings.segment_bytes = 400;
    bench.settings.max_bytes_per_pass = 1000;
    assert!(bench.ship().await.backlog);
    let shipped = bench.lines_out().await;
    assert!(
        shipped.keys().all(|n| *n <= 61),
        "the new file started before the rotated one was done: {shipped:?}"
    );
    while bench.ship().await.backlog {}
    bench.assert_every_line_once().await;
}
