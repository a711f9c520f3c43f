//! Building a package from a project directory.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ignore::WalkBuilder;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use sha2::{Digest, Sha256};

use super::compress::ParallelBzWriter;
use super::{FORMAT, Manifest, ReleaseInfo};
use crate::layout;
use crate::names::Version;
use crate::project::{FILE_NAME, ProjectConfig};

/// Directories never packed, whatever the ignore files say.
const NEVER_PACKED_DIRS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    "node_modules",
    ".mypy_cache",
    ".pytest_cache",
    ".tox",
];

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {message}")]
    Refused { path: PathBuf, message: String },
    #[error("reading the project tree: {0}")]
    Walk(#[from] ignore::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    /// What to pack, walked once: [`ProjectTree::walk`].
    pub tree: &'a ProjectTree,
    pub config: &'a ProjectConfig,
    pub version: Version,
    pub commit: Option<String>,
    pub source_date: SystemTime,
    /// A directory of wheels to pack as `wheels/` (see `cargo milky package --wheels`).
    pub wheels_dir: Option<&'a Path>,
    /// Where the `.tar.bz2` goes; left out of the package if it lies inside the project.
    pub out_dir: &'a Path,
    pub level: u32,
    pub threads: usize,
}

/// A package on disk.
#[derive(Debug, Clone)]
pub struct BuiltPackage {
    pub path: PathBuf,
    pub manifest: Manifest,
    /// sha256 of the `.tar.bz2` file.
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File { executable: bool },
    Symlink(PathBuf),
}

#[derive(Debug, Clone)]
struct Entry {
    /// Path inside the archive, `/`-separated.
    name: String,
    source: PathBuf,
    kind: Kind,
}

/// The entries to pack, sorted by name, as walked from a project directory.
#[derive(Debug, Clone)]
pub struct ProjectTree {
    entries: Vec<Entry>,
    newest_mtime: SystemTime,
}

impl ProjectTree {
    /// Walks the project with its ignore rules; symlinks out of the tree are refused here.
    pub fn walk(
        project_dir: &Path,
        config: &ProjectConfig,
        out_dir: &Path,
    ) -> Result<Self, BuildError> {
        walk(project_dir, config, out_dir)
    }

    /// The newest mtime among what is packed: the source date of a tree that is not a clean
    /// git checkout.
    pub fn newest_mtime(&self) -> SystemTime {
        self.newest_mtime
    }
}

fn excludes(project_dir: &Path, config: &ProjectConfig) -> Result<Gitignore, BuildError> {
    let mut builder = GitignoreBuilder::new(project_dir);
    for pattern in ["*.pyc", "*.pyo", ".DS_Store", "*.swp"].iter().chain(
        config
            .package
            .exclude
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .iter(),
    ) {
        builder.add_line(None, pattern).map_err(BuildError::Walk)?;
    }
    Ok(builder.build()?)
}

fn walk(
    project_dir: &Path,
    config: &ProjectConfig,
    out_dir: &Path,
) -> Result<ProjectTree, BuildError> {
    let excludes = excludes(project_dir, config)?;
    let out_dir = out_dir
        .canonicalize()
        .unwrap_or_else(|_| out_dir.to_owned());
    let root = project_dir.canonicalize().map_err(io_err(project_dir))?;
    let walker = WalkBuilder::new(&root)
        .hidden(false)
        .parents(false)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .add_custom_ignore_filename(".milkyignore")
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry({
            let (root, out_dir) = (root.clone(), out_dir.clone());
            move |entry| {
                let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
                let name = entry.file_name().to_string_lossy();
                // A virtualenv is recognised by its pyvenv.cfg, whatever it is called.
                let holds_output = entry.path() != root && out_dir.starts_with(entry.path());
                !(is_dir
                    && (holds_output
                        || NEVER_PACKED_DIRS.contains(&name.as_ref())
                        || entry.path().join("pyvenv.cfg").exists()))
            }
        })
        .build();
    let mut entries = Vec::new();
    let mut newest = UNIX_EPOCH;
    for item in walker {
        let item = item?;
        let path = item.path();
        if path == root || path.starts_with(&out_dir) {
            continue;
        }
        let rel = path.strip_prefix(&root).expect("walk stays under the root");
        let file_type = item.file_type().expect("only stdin has no file type");
        if excludes
            .matched_path_or_any_parents(rel, file_type.is_dir())
            .is_ignore()
        {
            continue;
        }
        let name = rel.to_str().ok_or_else(|| BuildError::Refused {
            path: path.to_owned(),
            message: "file names must be UTF-8".into(),
        })?;
        if name == FILE_NAME {
            continue; // replaced by the manifest
        }
        let meta = item.metadata()?;
        newest = newest.max(meta.modified().unwrap_or(UNIX_EPOCH));
        let kind = if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_symlink() {
            let target = std::fs::read_link(path).map_err(io_err(path))?;
            check_symlink(path, rel, &target)?;
            Kind::Symlink(target)
        } else if file_type.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            Kind::File {
                executable: mode & 0o111 != 0,
            }
        } else {
            tracing::warn!(path = %path.display(), "skipping a special file (socket, fifo or device)");
            continue;
        };
        entries.push(Entry {
            name: name.replace(std::path::MAIN_SEPARATOR, "/"),
            source: path.to_owned(),
            kind,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ProjectTree {
        entries,
        newest_mtime: newest,
    })
}

/// A symlink is packed only if it stays inside the tree: servers refuse any other.
fn check_symlink(path: &Path, rel: &Path, target: &Path) -> Result<(), BuildError> {
    let mut depth = rel.components().count() as i64 - 1;
    let inside = !target.is_absolute()
        && target.components().all(|c| {
            match c {
                std::path::Component::ParentDir => depth -= 1,
                std::path::Component::Normal(_) => depth += 1,
                _ => {}
            }
            depth >= 0
        });
    if inside {
        Ok(())
    } else {
        Err(BuildError::Refused {
            path: path.to_owned(),
            message: format!(
                "symlink to {} points outside the project; servers would refuse it",
                target.display()
            ),
        })
    }
}

fn wheel_entries(wheels_dir: &Path) -> Result<Vec<Entry>, BuildError> {
    let mut entries = vec![Entry {
        name: "wheels".into(),
        source: wheels_dir.to_owned(),
        kind: Kind::Dir,
    }];
    let mut names = Vec::new();
    for item in std::fs::read_dir(wheels_dir).map_err(io_err(wheels_dir))? {
        let item = item.map_err(io_err(wheels_dir))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.ends_with(".whl") || name.ends_with(".tar.gz") {
            names.push(name);
        }
    }
    names.sort();
    entries.extend(names.into_iter().map(|name| Entry {
        source: wheels_dir.join(&name),
        name: format!("wheels/{name}"),
        kind: Kind::File { executable: false },
    }));
    Ok(entries)
}

/// Packs the project into `out_dir/<app>-<version>.tar.bz2`, written under a temporary name and
/// renamed when complete, so a half-written package never carries the final name.
pub fn build(request: &BuildRequest<'_>) -> Result<BuiltPackage, BuildError> {
    let mut entries = request.tree.entries.clone();
    if let Some(wheels) = request.wheels_dir {
        entries.retain(|e| e.name != "wheels" && !e.name.starts_with("wheels/"));
        entries.extend(wheel_entries(wheels)?);
        entries.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let app = &request.config.app.name;
    fs_err::create_dir_all(request.out_dir).map_err(|e| BuildError::Io {
        path: request.out_dir.to_owned(),
        source: e,
    })?;
    let path = request
        .out_dir
        .join(layout::package_file_name(app, &request.version));
    let temp = tempfile::Builder::new()
        .prefix(".milky-package-")
        .tempfile_in(request.out_dir)
        .map_err(io_err(request.out_dir))?;
    let output = HashingWriter::new(temp.as_file().try_clone().map_err(io_err(temp.path()))?);
    let compressor = ParallelBzWriter::new(output, request.level, request.threads);
    let mut tar = tar::Builder::new(compressor);
    let mtime = request
        .source_date
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);

    let mut listing = Sha256::new();
    for entry in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        match &entry.kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, &entry.name, io::empty())
                    .map_err(io_err(&path))?;
                listing.update(format!("D 755 {}\n", entry.name));
            }
            Kind::File { executable } => {
                let mode = if *executable { 0o755 } else { 0o644 };
                let file = fs_err::File::open(&entry.source).map_err(|e| BuildError::Io {
                    path: entry.source.clone(),
                    source: e,
                })?;
                let size = file.metadata().map_err(io_err(&entry.source))?.len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(mode);
                header.set_size(size);
                let mut reader = HashingReader {
                    inner: file.take(size),
                    hasher: Sha256::new(),
                };
                tar.append_data(&mut header, &entry.name, &mut reader)
                    .map_err(io_err(&entry.source))?;
                listing.update(format!(
                    "F {mode:o} {} {}\n",
                    hex::encode(reader.hasher.finalize()),
                    entry.name
                ));
            }
            Kind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                tar.append_link(&mut header, &entry.name, target)
                    .map_err(io_err(&entry.source))?;
                listing.update(format!("L {} {}\n", target.display(), entry.name));
            }
        }
    }

    let config = request.config;
    let manifest = Manifest {
        format: FORMAT,
        app: config.app.clone(),
        hooks: config.hooks.clone(),
        snippets: config.snippets.clone(),
        release: ReleaseInfo {
            version: request.version.clone(),
            built: humantime::format_rfc3339_seconds(
                UNIX_EPOCH + std::time::Duration::from_secs(mtime),
            )
            .to_string(),
            commit: request.commit.clone(),
            content_sha256: hex::encode(listing.finalize()),
            entries: entries.len() as u64,
            wheels: request.wheels_dir.is_some(),
        },
    };
    let manifest_text = manifest.to_toml();
    let mut header = tar::Header::new_gnu();
    header.set_mtime(mtime);
    header.set_mode(0o644);
    header.set_size(manifest_text.len() as u64);
    tar.append_data(&mut header, FILE_NAME, manifest_text.as_bytes())
        .map_err(io_err(&path))?;

    let compressor = tar.into_inner().map_err(io_err(&path))?;
    let output = compressor.finish().map_err(io_err(&path))?;
    let (file, sha256, size) = output.finish();
    file.sync_all().map_err(io_err(&path))?;
    temp.persist(&path).map_err(|e| BuildError::Io {
        path: path.clone(),
        source: e.error,
    })?;
    // Readable by everyone: the package is no secret and servers' users must read it.
    fs_err::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).map_err(
        |e| BuildError::Io {
            path: path.clone(),
            source: e,
        },
    )?;
    Ok(BuiltPackage {
        path,
        manifest,
        sha256,
        size,
    })
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Counts and hashes what passes through, so the package's sha256 costs no second read.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// The inner writer, the sha256 (hex) and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.size)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// sha256 of a file, hex.
pub fn file_sha256(path: &Path) -> io::Result<String> {
    let mut file = fs_err::File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}
