//! s3s-fs for the e2e tests: dev-support's server with the tests' credentials (see
//! [`crate::aws_env`]). `cargo xtask test` installs it and names it in `MILKY_TEST_S3S_FS`.

use std::path::Path;

pub use milky_dev_support::S3sFs;

/// Starts s3s-fs over a directory under `dir` with an empty `bucket`; a test that needs it fails
/// loudly when it is not installed.
pub fn start(dir: &Path, bucket: &str) -> S3sFs {
    let program = milky_dev_support::s3s_fs_program().unwrap_or_else(|| {
        panic!("s3s-fs is not installed: run `cargo xtask test`, which installs it (cargo install s3s-fs --version 0.14.1 --features binary), or set MILKY_TEST_S3S_FS to its path")
    });
    S3sFs::start(&program, dir, bucket, ("milkytest", "milkytest"))
        .unwrap_or_else(|e| panic!("starting s3s-fs: {e:#}"))
}
