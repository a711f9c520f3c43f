//! Test support for MilkyWhite's end-to-end tests: the binaries under test, a real
//! S3-compatible server (moto) on loopback, and throwaway projects.
//!
//! What xtask and the agent's web-stack tests need too (reserved ports, processes by pid, moto,
//! HTTP over loopback, file trees) is in `milky-dev-support`; this crate is the end-to-end
//! harness on top of it.
//!
//! Everything started here is ended by process id when the test process ends, and nothing
//! talks to anything but loopback: the AWS settings handed to the binaries disable the instance
//! metadata service and every shared config file.

pub mod agent;
pub mod django;
pub mod iam;
pub mod pythons;
pub mod racy_store;
pub mod s3s_fs;
pub mod tmpfs;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use milky_dev_support::{Moto, moto_program};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// A binary of the workspace, built by `cargo xtask test` (or `cargo build`) before the tests run.
pub fn bin(name: &str) -> PathBuf {
    // Test binaries live in target/<profile>/deps; the workspace's binaries one level up.
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build --workspace --bins`, which `cargo xtask test` does)",
        path.display()
    );
    path
}

/// The endpoint of the S3-compatible server shared by this test process: `MILKY_TEST_S3_ENDPOINT`
/// if `cargo xtask test` started one, else a moto server started here on first use. That one is
/// kept in a static, never dropped: it stops when this process ends (see [`Moto`]).
pub fn s3_endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    static MOTO: OnceLock<Moto> = OnceLock::new();
    ENDPOINT.get_or_init(|| match std::env::var("MILKY_TEST_S3_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => endpoint,
        _ => {
            let moto = moto_program().unwrap_or_else(|| {
                panic!("moto_server is not installed: run `cargo xtask test`, which installs it (pip install 'moto[server]')")
            });
            let moto = MOTO.get_or_init(|| Moto::start(&moto).expect("start moto_server"));
            moto.endpoint.clone()
        }
    })
}

/// The environment every binary under test gets: fixed test credentials, the loopback endpoint,
/// and no instance-metadata look-ups or shared AWS config files.
pub fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "milkytest".into()),
        ("AWS_SECRET_ACCESS_KEY", "milkytest".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT_URL", endpoint.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
    ]
}

/// One test's world: its own bucket on the shared S3 server and its own temp dir.
pub struct TestContext {
    pub endpoint: String,
    pub bucket: String,
    pub dir: tempfile::TempDir,
    pub client: aws_sdk_s3::Client,
    runtime: tokio::runtime::Runtime,
}

impl TestContext {
    pub fn new() -> Self {
        let endpoint = s3_endpoint().to_owned();
        let bucket = format!("milky-test-{}", rand_suffix());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = runtime.block_on(async {
            let config = aws_sdk_s3::config::Builder::new()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .endpoint_url(&endpoint)
                .force_path_style(true)
                .region(aws_sdk_s3::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_s3::config::Credentials::new(
                    "milkytest",
                    "milkytest",
                    None,
                    None,
                    "test",
                ))
                .build();
            let client = aws_sdk_s3::Client::from_conf(config);
            client
                .create_bucket()
                .bucket(&bucket)
                .send()
                .await
                .expect("create the test bucket");
            client
        });
        let dir = tempfile::Builder::new()
            .prefix("milky-e2e-")
            .tempdir()
            .expect("temp dir");
        // MILKY_KEEP_TEST_DIRS=1 keeps each test's files (configs, logs, releases) for a post-mortem.
        let mut dir = dir;
        if std::env::var_os("MILKY_KEEP_TEST_DIRS").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        Self {
            endpoint,
            bucket,
            dir,
            client,
            runtime,
        }
    }

    /// The store URL of this test's bucket.
    pub fn store(&self) -> String {
        format!("s3://{}/fleet", self.bucket)
    }

    /// `cargo-milky milky ARGS…` (as cargo calls it) against this test's store.
    pub fn milky(&self, args: &[&str]) -> Output {
        self.milky_in(self.dir.path(), args)
    }

    pub fn milky_in(&self, cwd: &Path, args: &[&str]) -> Output {
        self.milky_command(cwd, args)
            .output()
            .expect("run cargo-milky")
    }

    /// `cargo milky upload` of `project` to `group` (made if new) as `version`, packed fast
    /// (bzip2 level 1); fails the test if it fails.
    pub fn upload(&self, project: &Path, group: &str, version: &str) {
        let args = [
            "upload",
            "--new-group",
            "-g",
            group,
            "--version",
            version,
            "--level",
            "1",
        ];
        let out = self.milky_in(project, &args);
        assert_success(&out, &format!("upload {version} to {group}"));
    }

    pub fn milky_command(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(bin("cargo-milky"));
        command
            .current_dir(cwd)
            .arg("milky")
            .args(args)
            .env("MILKY_STORE", self.store())
            // The store checks the controller remembers stay in this test's dir.
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env_remove("MILKY_ALLOW_UNSAFE_STORE")
            .env_remove("MILKY_SIGNING_KEY")
            .env_remove("RUST_LOG");
        for (key, value) in aws_env(&self.endpoint) {
            command.env(key, value);
        }
        command
    }

    /// An object's bytes in this test's store, read with our own S3 client.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.runtime.block_on(async {
            let got = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(format!("fleet/{key}"))
                .send()
                .await
                .ok()?;
            Some(got.body.collect().await.ok()?.into_bytes().to_vec())
        })
    }

    pub fn put_object(&self, key: &str, bytes: &[u8]) {
        self.runtime.block_on(async {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(format!("fleet/{key}"))
                .body(bytes.to_vec().into())
                .send()
                .await
                .expect("put object");
        });
    }

    /// The keys under `prefix` in this test's store.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        self.runtime.block_on(async {
            let listed = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(format!("fleet/{prefix}"))
                .send()
                .await
                .expect("list objects");
            listed
                .contents()
                .iter()
                .filter_map(|o| o.key()?.strip_prefix("fleet/").map(str::to_owned))
                .collect()
        })
    }

    pub fn delete_object(&self, key: &str) {
        self.runtime.block_on(async {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(format!("fleet/{key}"))
                .send()
                .await
                .expect("delete");
        });
    }

    pub fn index(&self) -> String {
        String::from_utf8(self.object("version.info").expect("version.info exists"))
            .expect("utf-8 index")
    }

    /// A minimal Django-shaped project for packaging tests, with a VERSION file.
    pub fn project(&self, name: &str, version_marker: &str) -> PathBuf {
        let root = self.dir.path().join(name);
        write(
            &root.join("manage.py"),
            "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'site_conf.settings')\n",
        );
        write(&root.join("site_conf/__init__.py"), "");
        write(
            &root.join("site_conf/settings.py"),
            "STATIC_ROOT = BASE_DIR / 'static_collected'\n",
        );
        write(&root.join("site_conf/wsgi.py"), "application = None\n");
        write(&root.join("requirements.txt"), "Django>=4.2,<5\n");
        write(&root.join("VERSION"), version_marker);
        let out = self.milky_in(&root, &["init", "--yes", "--name", name]);
        assert_success(&out, "init");
        root
    }
}

impl Default for TestContext {
    fn default() -> Self {
        Self::new()
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("create dirs");
    let mut file = std::fs::File::create(path).expect("create file");
    file.write_all(text.as_bytes()).expect("write file");
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails the test with the command's output unless it succeeded.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// Fails the test unless the command failed with `code` and said `needle` on stderr.
pub fn assert_failure(out: &Output, code: i32, needle: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}:\nstdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
    assert!(
        stderr(out).contains(needle),
        "expected {needle:?} on stderr:\n{}",
        stderr(out)
    );
}
