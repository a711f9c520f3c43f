//! `cargo xtask test`: everything CI runs.

use milky_dev_support::Moto;

use crate::tools;

fn run_tests(extra: &[String]) -> anyhow::Result<()> {
    tools::ensure_apt_packages()?;
    let moto_program = tools::ensure_moto()?;
    let s3s_fs_program = tools::ensure_s3s_fs()?;

    // Build once: the binaries the end-to-end tests run, and every test binary.
    tools::run(tools::cargo().args(["build", "--workspace", "--bins", "--tests"]))?;

    // One S3-compatible server for the whole run; each test makes its own bucket in it.
    let moto = Moto::start(&moto_program)?;
    let has_nextest = tools::cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut command = tools::cargo();
    command
        .env("MILKY_TEST_S3_ENDPOINT", &moto.endpoint)
        // For tests that start a moto of their own (with IAM checks on).
        .env("MILKY_TEST_MOTO", &moto_program)
        .env("MILKY_TEST_S3S_FS", &s3s_fs_program);
    if has_nextest {
        command.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        eprintln!("xtask: cargo-nextest not found; running cargo test");
        command.args(["test", "--workspace", "--no-fail-fast"]);
    }
    tools::run(command.args(extra))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let extra = match args.first().map(String::as_str) {
        Some("--") => &args[1..],
        _ => args,
    };
    run_tests(extra)
}
