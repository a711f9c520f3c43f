//! Packing and unpacking, end to end on real trees and hand-made hostile archives.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::project::ProjectConfig;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "milky.toml",
        "[app]\nname = \"myapp\"\nwsgi = \"mysite.wsgi:application\"\n\n[package]\nexclude = [\"secrets/\"]\n\n[deploy]\nstore = \"s3://b/p\"\n",
    );
    write(root, "manage.py", "print('hi')\n");
    write(root, "mysite/wsgi.py", "application = None\n");
    write(root, "mysite/__pycache__/wsgi.cpython-311.pyc", "x");
    write(root, "pages/views.pyc", "x");
    write(root, ".git/HEAD", "ref: x");
    write(root, "venv/pyvenv.cfg", "home = /usr/bin");
    write(root, "venv/lib/site.py", "x");
    write(root, ".gitignore", "*.log\n");
    write(root, "debug.log", "noise");
    write(root, ".milkyignore", "notes.txt\n");
    write(root, "notes.txt", "private");
    write(root, "secrets/key", "private");
    write(root, "static/site.css", "body{}");
    std::os::unix::fs::symlink("static/site.css", root.join("style.css")).unwrap();
    dir
}

fn build_into(project: &Path, out: &Path, threads: usize) -> BuiltPackage {
    let config = ProjectConfig::load(project).unwrap();
    build(&BuildRequest {
        tree: &ProjectTree::walk(project, &config, out).unwrap(),
        config: &config,
        version: "v1".parse().unwrap(),
        commit: None,
        source_date: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        wheels_dir: None,
        out_dir: out,
        level: 9,
        threads,
    })
    .unwrap()
}

fn names_in(package: &Path) -> Vec<String> {
    let file = std::fs::File::open(package).unwrap();
    let mut archive = tar::Archive::new(bzip2::read::MultiBzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

#[test]
fn packs_what_belongs_and_nothing_else() {
    let project = project();
    let out = project.path().join("target/milky");
    let built = build_into(project.path(), &out, 2);
    assert_eq!(built.path, out.join("myapp-v1.tar.bz2"));
    assert_eq!(
        names_in(&built.path),
        [
            ".gitignore",
            ".milkyignore",
            "manage.py",
            "mysite",
            "mysite/wsgi.py",
            "pages",
            "static",
            "static/site.css",
            "style.css",
            "milky.toml"
        ]
    );
    assert_eq!(built.manifest.release.entries, 9);
    // The output dir exists now; a second build must not pack it either.
    let again = build_into(project.path(), &out, 2);
    assert_eq!(again.sha256, built.sha256);
    let text = std::fs::read_to_string(&built.path).err();
    assert!(text.is_some(), "package should be binary bzip2");
}

#[test]
fn same_tree_same_bytes_whatever_the_thread_count() {
    let project = project();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let first = build_into(project.path(), a.path(), 1);
    let second = build_into(project.path(), b.path(), 3);
    assert_eq!(
        std::fs::read(&first.path).unwrap(),
        std::fs::read(&second.path).unwrap()
    );
    assert_eq!(first.sha256, second.sha256);
    assert_eq!(first.sha256, build::file_sha256(&first.path).unwrap());
}

#[test]
fn round_trip_keeps_content_and_manifest_leaves_out_deploy_settings() {
    let project = project();
    let out = tempfile::tempdir().unwrap();
    let built = build_into(project.path(), out.path(), 2);
    let target = tempfile::tempdir().unwrap();
    let manifest = unpack(
        std::fs::File::open(&built.path).unwrap(),
        target.path(),
        UnpackLimits::default(),
    )
    .unwrap();
    assert_eq!(manifest, built.manifest);
    assert_eq!(manifest.release.version.as_str(), "v1");
    assert_eq!(
        std::fs::read_to_string(target.path().join("mysite/wsgi.py")).unwrap(),
        "application = None\n"
    );
    assert_eq!(
        std::fs::read_link(target.path().join("style.css")).unwrap(),
        Path::new("static/site.css")
    );
    let packed_manifest = std::fs::read_to_string(target.path().join("milky.toml")).unwrap();
    assert!(
        !packed_manifest.contains("s3://"),
        "deploy settings leaked: {packed_manifest}"
    );
    assert!(
        packed_manifest.contains("content_sha256"),
        "{packed_manifest}"
    );
}

#[test]
fn symlink_out_of_the_project_is_refused_when_packing() {
    let project = project();
    std::os::unix::fs::symlink("../../etc/passwd", project.path().join("mysite/passwd")).unwrap();
    let config = ProjectConfig::load(project.path()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = ProjectTree::walk(project.path(), &config, out.path()).unwrap_err();
    assert!(
        err.to_string().contains("points outside the project"),
        "{err}"
    );
}

/// A hand-made archive: tar entries written raw, so hostile ones are possible.
fn hostile(build_entries: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    build_entries(&mut tar);
    let data = tar.into_inner().unwrap();
    let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    encoder.write_all(&data).unwrap();
    encoder.finish().unwrap()
}

fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header
}

fn raw_path(header: &mut tar::Header, name: &str) {
    // set_path refuses '..' and absolute paths; a hostile archive does not.
    let bytes = name.as_bytes();
    let gnu = header.as_gnu_mut().unwrap();
    gnu.name = [0; 100];
    gnu.name[..bytes.len()].copy_from_slice(bytes);
    header.set_cksum();
}

fn file(tar: &mut tar::Builder<Vec<u8>>, name: &str, body: &[u8]) {
    let mut h = header(tar::EntryType::Regular, body.len() as u64);
    raw_path(&mut h, name);
    tar.append(&h, body).unwrap();
}

fn link(tar: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, target: &str) {
    let mut h = header(kind, 0);
    raw_path(&mut h, name);
    h.set_link_name(target).unwrap();
    h.set_cksum();
    tar.append(&h, std::io::empty()).unwrap();
}

fn unpack_err(archive: Vec<u8>, limits: UnpackLimits) -> (String, tempfile::TempDir) {
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("release");
    std::fs::create_dir(&target).unwrap();
    let err = unpack(&archive[..], &target, limits)
        .unwrap_err()
        .to_string();
    (err, outer)
}

#[test]
fn hostile_archives_are_refused_before_anything_escapes() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("dot-dot", hostile(|t| file(t, "../escaped", b"x")), "'..'"),
        (
            "absolute",
            hostile(|t| file(t, "/tmp/milky-escaped", b"x")),
            "absolute",
        ),
        (
            "symlink out",
            hostile(|t| link(t, tar::EntryType::Symlink, "evil", "../../etc")),
            "outside",
        ),
        (
            "absolute symlink",
            hostile(|t| link(t, tar::EntryType::Symlink, "evil", "/etc/passwd")),
            "outside",
        ),
        (
            "hard link",
            hostile(|t| link(t, tar::EntryType::Link, "evil", "/etc/passwd")),
            "hard links",
        ),
        (
            "write through a planted symlink",
            hostile(|t| {
                link(t, tar::EntryType::Symlink, "dir", ".");
                file(t, "dir/x", b"x");
            }),
            "through a symlink",
        ),
        (
            "fifo",
            hostile(|t| {
                t.append(
                    &{
                        let mut h = header(tar::EntryType::Fifo, 0);
                        raw_path(&mut h, "pipe");
                        h
                    },
                    std::io::empty(),
                )
                .unwrap()
            }),
            "fifos",
        ),
        (
            "device",
            hostile(|t| {
                t.append(
                    &{
                        let mut h = header(tar::EntryType::Char, 0);
                        raw_path(&mut h, "null");
                        h
                    },
                    std::io::empty(),
                )
                .unwrap()
            }),
            "device",
        ),
        (
            "no manifest",
            hostile(|t| file(t, "app.py", b"x")),
            "no milky.toml",
        ),
        (
            "bad manifest",
            hostile(|t| file(t, "milky.toml", b"format = 1\n")),
            "manifest is invalid",
        ),
    ];
    for (what, archive, needle) in cases {
        let (err, outer) = unpack_err(archive, UnpackLimits::default());
        assert!(err.contains(needle), "{what}: {err}");
        assert!(!outer.path().join("escaped").exists(), "{what} escaped");
    }
    assert!(!Path::new("/tmp/milky-escaped").exists());
}

#[test]
fn bombs_and_broken_streams_are_refused() {
    let big = hostile(|t| file(t, "zeros", &vec![0u8; 2_000_000]));
    let (err, _dir) = unpack_err(
        big,
        UnpackLimits {
            max_bytes: 1_000_000,
            max_entries: 10,
        },
    );
    assert!(err.contains("more than 1000000 bytes"), "{err}");
    let many = hostile(|t| (0..20).for_each(|i| file(t, &format!("f{i}"), b"x")));
    let (err, _dir) = unpack_err(
        many,
        UnpackLimits {
            max_bytes: 1 << 30,
            max_entries: 10,
        },
    );
    assert!(err.contains("more than 10 entries"), "{err}");
    let mut truncated = hostile(|t| file(t, "data", &[7u8; 100_000]));
    truncated.truncate(truncated.len() / 2);
    let (err, _dir) = unpack_err(truncated, UnpackLimits::default());
    assert!(err.contains("corrupt or truncated"), "{err}");
    let (err, _dir) = unpack_err(
        b"BZh9 this is not bzip2 at all".to_vec(),
        UnpackLimits::default(),
    );
    assert!(err.contains("corrupt or truncated"), "{err}");
}

/// `read_manifest` finds the manifest in the package's last bzip2 streams, where the packer puts
/// it, and anywhere else by reading the whole archive.
#[test]
fn manifest_is_read_from_the_tail_or_else_from_the_whole_archive() {
    let project = project();
    // Incompressible bytes, so the package has several streams before the manifest.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let noise: Vec<u8> = (0..3 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(project.path().join("blob.bin"), noise).unwrap();
    let out = tempfile::tempdir().unwrap();
    let built = build_into(project.path(), out.path(), 2);
    let starts = decompress::stream_starts(&std::fs::File::open(&built.path).unwrap()).unwrap();
    assert!(starts.len() > 3, "{starts:?}");
    let text = unpack::manifest_from_tail(&built.path).expect("the manifest is at the end");
    assert_eq!(Manifest::parse(&text).unwrap(), built.manifest);
    assert_eq!(read_manifest(&built.path).unwrap(), built.manifest);

    // The manifest first and another entry after it: not found at the end, found by reading.
    let moved = out.path().join("moved.tar.bz2");
    std::fs::write(
        &moved,
        hostile(|tar| {
            file(tar, "milky.toml", text.as_bytes());
            file(tar, "late.txt", b"after the manifest");
        }),
    )
    .unwrap();
    assert_eq!(unpack::manifest_from_tail(&moved), None);
    assert_eq!(read_manifest(&moved).unwrap(), built.manifest);
}
