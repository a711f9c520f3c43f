//! File trees: copying a project, listing the files under a dir, the end of a log file.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

/// The files (and links) under `dir`, in path order. A dir that does not exist has none, and an
/// entry that cannot be read is left out: a running server may delete files while we look.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|entry| !entry.file_type().is_dir())
        .map(walkdir::DirEntry::into_path)
        .collect()
}

/// Copies the tree at `from` into `to` (created if needed), leaving out every entry whose file
/// name `skip` accepts, with everything under it. Links are copied as the files they point at.
pub fn copy_tree(from: &Path, to: &Path, skip: impl Fn(&str) -> bool) -> io::Result<()> {
    fs_err::create_dir_all(to)?;
    let entries = WalkDir::new(from)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| !skip(&entry.file_name().to_string_lossy()));
    for entry in entries {
        let entry = entry?;
        let target = to.join(entry.path().strip_prefix(from).expect("under `from`"));
        if entry.file_type().is_dir() {
            fs_err::create_dir_all(&target)?;
        } else {
            fs_err::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// What running a Python project leaves in its tree, never its source: bytecode caches, SQLite
/// databases, collected static files, a venv, vendored wheels.
pub fn is_project_leftover(name: &str) -> bool {
    matches!(name, "__pycache__" | "static_collected" | "venv" | "wheels")
        || name.ends_with(".sqlite3")
}

/// Copies a project's source (the Django fixture, say) without what running it left behind
/// ([`is_project_leftover`]); the copy gets its wheels and database of its own.
pub fn copy_project(from: &Path, to: &Path) -> io::Result<()> {
    copy_tree(from, to, is_project_leftover)
}

/// The last `lines` lines of the file at `path` (from its last 64 KiB at most), for an error
/// message; empty if it cannot be read.
pub fn tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let read = || -> io::Result<String> {
        let mut file = fs_err::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let text = read().unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn walk_lists_files_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in ["b.txt", "a/z.txt", "a/b/c.txt", "a.txt"] {
            write(&root.join(file), file);
        }
        std::fs::create_dir(root.join("empty")).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        let found: Vec<String> = walk(root)
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(found, ["a/b/c.txt", "a/z.txt", "a.txt", "b.txt", "link"]);
        assert!(walk(&root.join("missing")).is_empty());
    }

    #[test]
    fn copy_project_copies_the_source_and_leaves_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        for file in [
            "manage.py",
            "mysite/settings.py",
            "mysite/__pycache__/settings.cpython-311.pyc",
            "db.sqlite3",
            "static_collected/app.css",
            "venv/bin/python",
            "wheels/Django-4.2-py3-none-any.whl",
            "pages/templates/index.html",
        ] {
            write(&from.join(file), &format!("content of {file}"));
        }
        let to = dir.path().join("to");
        copy_project(&from, &to).unwrap();
        let copied: Vec<String> = walk(&to)
            .iter()
            .map(|p| p.strip_prefix(&to).unwrap().display().to_string())
            .collect();
        assert_eq!(
            copied,
            [
                "manage.py",
                "mysite/settings.py",
                "pages/templates/index.html"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(to.join("mysite/settings.py")).unwrap(),
            "content of mysite/settings.py"
        );
    }

    #[test]
    fn copy_tree_names_the_path_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = copy_tree(&missing, &dir.path().join("to"), |_| false).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        assert_eq!(tail(&log, 3), "line 98\nline 99\nline 100");
        assert_eq!(tail(&log, 1000).lines().count(), 100);
        assert_eq!(tail(&dir.path().join("missing"), 3), "");
    }
}
