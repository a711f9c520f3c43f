//! Benchmark 2 — Upload and download throughput against moto on loopback, against `aws s3 cp` (awscli
//! from PyPI) on the same file.
//!
//! Our upload is `cargo milky upload FILE` into a fresh bucket each run (a version is written
//! once), timed from its progress lines (10 % to `uploaded`, scaled to 100 %) so the manifest
//! read before it is left out; the whole command is reported too. Our download is the agent's,
//! from benchmark 1b.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use super::report::Report;
use super::stats::{Samples, timed};
use super::unpack::line_time;
use super::{Bench, lines_of};

pub fn run(
    bench: &Bench,
    package: &Path,
    downloads: &Samples,
    report: &mut Report,
) -> anyhow::Result<()> {
    let size = std::fs::metadata(package)?.len() as f64 / 1e6;
    let file = package.to_string_lossy().into_owned();
    let aws = bench.tools_venv().join("bin/aws");
    let aws_cmd = |args: &[&str]| {
        let mut command = Command::new(&aws);
        command
            .args([
                "s3",
                "cp",
                "--only-show-errors",
                "--endpoint-url",
                &bench.moto.endpoint,
            ])
            .args(args);
        for (key, value) in bench.aws_env() {
            command.env(key, value);
        }
        command
    };
    let (mut up, mut up_command, mut aws_up, mut aws_down, mut aws_start) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let target = bench.work.join("aws-download.tar.bz2");
    for round in 0..bench.runs {
        eprintln!("bench 2: transfers, round {}/{}", round + 1, bench.runs);
        let bucket = format!("upload{round}");
        bench.moto.create_bucket(&bucket)?;
        let start = std::time::Instant::now();
        let (ok, lines) = lines_of(
            bench
                .milky(
                    &bench.work,
                    &["upload", "--new-group", "--group", "g", &file],
                )
                .env("MILKY_STORE", format!("s3://{bucket}/fleet")),
        )?;
        up_command.push(start.elapsed().as_secs_f64());
        anyhow::ensure!(ok, "upload failed:\n{}", super::servers::text(&lines));
        if let (Some(tenth), Some(done)) =
            (line_time(&lines, ": 10% ("), line_time(&lines, "uploaded "))
        {
            up.push((done - tenth).as_secs_f64() * 10.0 / 9.0);
        }
        aws_up.push(timed(&mut aws_cmd(&[
            &file,
            &format!("s3://bench/awscli/pkg{round}.tar.bz2"),
        ]))?);
        aws_down.push(timed(&mut aws_cmd(&[
            "s3://bench/awscli/pkg0.tar.bz2",
            &target.to_string_lossy(),
        ]))?);
        let _ = std::fs::remove_file(&target);
        aws_start.push(timed(Command::new(&aws).arg("--version"))?);
    }
    let rate = |s: &Samples| Samples(s.0.iter().map(|t| size / t).collect());
    let mut body = format!(
        "The reference package, {size:.1} MB, over loopback to moto.\n\n| transfer | wall | throughput | vs `aws s3 cp` |\n|---|---|---|---|\n"
    );
    let rows = [
        (
            "upload: `cargo milky upload` (bytes on the wire)",
            &up,
            aws_up.median(),
        ),
        (
            "upload: `cargo milky upload FILE`, whole command",
            &up_command,
            aws_up.median(),
        ),
        ("upload: `aws s3 cp FILE s3://…`", &aws_up, aws_up.median()),
        ("download: agent (from 1b)", downloads, aws_down.median()),
        (
            "download: `aws s3 cp s3://… FILE`",
            &aws_down,
            aws_down.median(),
        ),
    ];
    for (name, samples, base) in rows {
        let _ = writeln!(
            body,
            "| {name} | {} | {} | {:.2}× |",
            samples.show(2, " s"),
            rate(samples).show(1, " MB/s"),
            base / samples.median()
        );
    }
    let _ = writeln!(
        body,
        "\n{} runs. `aws s3 cp` times include its Python start-up ({} for `aws --version`); the whole `cargo milky upload`\n\
         includes reading the manifest (the last entry: only the package's last bzip2 streams are decoded) and\n\
         the index compare-and-swap. Both sides use multipart (ours above 16 MiB, 4 parts in flight;\n\
         awscli above 8 MiB, 10 threads). moto itself (one Python process) is the ceiling for both.",
        bench.runs,
        aws_start.show(2, " s"),
    );
    report.section("2. Upload and download", body);
    Ok(())
}
