//! What the web-stack tests share: the tools they need, temp roots, releases of the fixture, a
//! stack that cleans up after itself, and HTTP against the front.

mod http;
mod releases;
mod stack;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

pub use self::http::{assert_serves, get, keep_alive_get, nginx_workers};
pub use self::releases::{overlay_release, overlay_site, shared_release, site, unpack_fixture};
pub use self::stack::TestStack;

/// A test that needs nginx, Apache or mod_wsgi fails when they are missing: a silent pass would
/// hide that nothing was tested.
pub fn require_tools() {
    let mut missing = Vec::new();
    for (tool, args) in [("nginx", ["-v"]), ("apache2", ["-v"])] {
        if Command::new(tool).args(args).output().is_err() {
            missing.push(tool.to_owned());
        }
    }
    for path in [
        "/usr/lib/apache2/modules/mod_wsgi.so",
        "/usr/bin/python3",
        "/etc/nginx/mime.types",
    ] {
        if !Path::new(path).exists() {
            missing.push(path.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "these tests need nginx, apache2, libapache2-mod-wsgi-py3 and python3-venv (apt); missing: {missing:?}"
    );
}

/// A temp dir under /tmp that www-data and nobody can enter (tempfile makes them 0700).
pub fn temp_root(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("create temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod temp dir");
    dir
}
