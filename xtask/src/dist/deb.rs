//! The agent's Debian package, built from a staged tree with `dpkg-deb --build --root-owner-group`.
//!
//! What goes in, all from `packaging/` (which `install_server.sh` embeds too):
//!
//! ```text
//! /usr/bin/milky-agent                        debug info stripped, symbols kept
//! /lib/systemd/system/milky-agent.service     one pass (oneshot)
//! /lib/systemd/system/milky-agent.timer       at boot and every 5 minutes
//! /etc/milky/agent.toml.example               a conffile; the live agent.toml is the admin's
//! /usr/share/doc/milky-agent/copyright
//! DEBIAN/control conffiles postinst prerm postrm
//! ```
//!
//! The package runs the agent from the systemd timer only, not from /etc/cron.d: every system it
//! targets (Debian 12, Ubuntu 22.04+) boots with systemd, a timer gives the boot run and the
//! periodic one from one unit with the journal as log, never starts a pass while one runs, and
//! needs no cron package. Machines without systemd (containers) use `install_server.sh`, which
//! writes the cron entry instead.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::tools;

pub struct Package {
    /// A Debian version (see [`debian_version`]).
    pub version: String,
    /// As `dpkg --print-architecture` says: `amd64`, `arm64`.
    pub arch: String,
    /// The `milky-agent` binary to package.
    pub binary: PathBuf,
    /// The repository's `packaging/` directory.
    pub packaging: PathBuf,
    /// `dpkg-deb -Z`: xz, gzip, zstd or none.
    pub compress: String,
}

/// A file of the package: where it comes from, where it goes, its mode.
struct Entry {
    source: PathBuf,
    dest: &'static str,
    mode: u32,
}

impl Package {
    pub fn file_name(&self) -> String {
        format!("milky-agent_{}_{}.deb", self.version, self.arch)
    }

    fn entries(&self) -> Vec<Entry> {
        let packaging = |name: &str| self.packaging.join(name);
        let entry = |source: PathBuf, dest, mode| Entry { source, dest, mode };
        vec![
            entry(self.binary.clone(), "usr/bin/milky-agent", 0o755),
            entry(
                packaging("milky-agent.service"),
                "lib/systemd/system/milky-agent.service",
                0o644,
            ),
            entry(
                packaging("milky-agent.timer"),
                "lib/systemd/system/milky-agent.timer",
                0o644,
            ),
            entry(
                packaging("agent.toml.example"),
                "etc/milky/agent.toml.example",
                0o644,
            ),
            entry(
                packaging("debian/copyright"),
                "usr/share/doc/milky-agent/copyright",
                0o644,
            ),
            entry(packaging("debian/conffiles"), "DEBIAN/conffiles", 0o644),
            entry(packaging("debian/postinst"), "DEBIAN/postinst", 0o755),
            entry(packaging("debian/prerm"), "DEBIAN/prerm", 0o755),
            entry(packaging("debian/postrm"), "DEBIAN/postrm", 0o755),
        ]
    }

    /// Stages the tree under `out/.deb-staging`, builds `out/milky-agent_<version>_<arch>.deb`
    /// and returns its path. The staging tree is removed afterwards.
    pub fn build(&self, out: &Path) -> anyhow::Result<PathBuf> {
        let staging = out.join(".deb-staging");
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .with_context(|| format!("clearing {}", staging.display()))?;
        }
        for entry in self.entries() {
            let dest = staging.join(entry.dest);
            create_dirs(&staging, dest.parent().context("an entry has a parent")?)?;
            std::fs::copy(&entry.source, &dest).with_context(|| {
                format!("copying {} to {}", entry.source.display(), dest.display())
            })?;
            set_mode(&dest, entry.mode)?;
        }
        strip_debug(&staging.join("usr/bin/milky-agent"))?;
        let control = self.control(&staging)?;
        let control_path = staging.join("DEBIAN/control");
        std::fs::write(&control_path, control)
            .with_context(|| format!("writing {}", control_path.display()))?;
        set_mode(&control_path, 0o644)?;

        let deb = out.join(self.file_name());
        tools::run(
            Command::new("dpkg-deb")
                .args(["--build", "--root-owner-group"])
                .arg(format!("-Z{}", self.compress))
                .arg(&staging)
                .arg(&deb),
        )?;
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing {}", staging.display()))?;
        Ok(deb)
    }

    /// `packaging/debian/control` with the version, architecture, size and libc filled in.
    fn control(&self, staging: &Path) -> anyhow::Result<String> {
        let template = self.packaging.join("debian/control");
        let text = std::fs::read_to_string(&template)
            .with_context(|| format!("reading {}", template.display()))?;
        let libc = match glibc_requirement(&self.binary) {
            Some(version) => format!("libc6 (>= {version})"),
            None => "libc6".to_owned(),
        };
        let text = text
            .replace("@VERSION@", &self.version)
            .replace("@ARCH@", &self.arch)
            .replace(
                "@INSTALLED_SIZE@",
                &installed_size_kib(staging)?.to_string(),
            )
            .replace("@LIBC@", &libc);
        if let Some(left) = placeholder(&text) {
            bail!("{} has an unknown placeholder @{left}@", template.display());
        }
        Ok(text)
    }
}

/// The first `@NAME@` left in a text.
fn placeholder(text: &str) -> Option<&str> {
    let segments: Vec<&str> = text.split('@').collect();
    // Only segments with an `@` on both sides.
    let inner = segments.get(1..segments.len().saturating_sub(1))?;
    inner
        .iter()
        .copied()
        .find(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
}

/// A Cargo version as a Debian one: a pre-release sorts before its release (`1.0.0-rc.1` →
/// `1.0.0~rc.1`), and no `-` is left to be read as a Debian revision.
pub fn debian_version(cargo: &str) -> String {
    cargo.replace('-', "~")
}

pub fn dpkg_architecture() -> anyhow::Result<String> {
    let output = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("running dpkg --print-architecture (is this Debian or Ubuntu?)")?;
    if !output.status.success() {
        bail!("dpkg --print-architecture failed ({})", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The newest `GLIBC_x.y` symbol version the binary needs, as `objdump -T` lists them; `None`
/// when objdump is missing (the package then depends on any libc6).
fn glibc_requirement(binary: &Path) -> Option<String> {
    let output = Command::new("objdump")
        .arg("-T")
        .arg(binary)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|version| {
            let parts: Vec<u32> = version
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            Some((parts, version.to_owned()))
        })
        .max()
        .map(|(_, version)| version)
}

/// `Installed-Size` as dpkg-gencontrol counts it: KiB per file, rounded up, and one per
/// directory, for everything but DEBIAN/.
fn installed_size_kib(staging: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let entries = walkdir::WalkDir::new(staging)
        .min_depth(1)
        .into_iter()
        .filter_entry(|entry| entry.file_name() != "DEBIAN");
    for entry in entries {
        let meta = entry?.metadata()?;
        if meta.is_dir() {
            total += 1;
        } else {
            total += meta.len().div_ceil(1024);
        }
    }
    Ok(total)
}

/// Creates `dir` and its parents up from `base`, each 0755 whatever the umask.
fn create_dirs(base: &Path, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut current = Some(dir);
    while let Some(path) = current.filter(|p| p.starts_with(base)) {
        set_mode(path, 0o755)?;
        current = path.parent();
    }
    Ok(())
}

/// Drops the debug info (line tables: 150 MiB of a 180 MiB release binary) but keeps the
/// symbols, so a backtrace still names functions. Debian ships binaries stripped too.
pub fn strip_debug(binary: &Path) -> anyhow::Result<()> {
    if Command::new("strip").arg("--version").output().is_err() {
        eprintln!(
            "xtask: strip (binutils) not found; {} keeps its debug info",
            binary.display()
        );
        return Ok(());
    }
    tools::run(Command::new("strip").arg("--strip-debug").arg(binary))
}

pub fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_versions_become_debian_versions() {
        assert_eq!(debian_version("0.1.0"), "0.1.0");
        assert_eq!(debian_version("1.0.0-rc.1"), "1.0.0~rc.1");
        assert_eq!(debian_version("1.0.0+build.5"), "1.0.0+build.5");
    }

    #[test]
    fn placeholders_left_are_found_and_addresses_are_not() {
        assert_eq!(placeholder("Version: @VERSION@\n"), Some("VERSION"));
        assert_eq!(placeholder("Maintainer: a <m@example.invalid>\n"), None);
        assert_eq!(placeholder("a@b and @ARCH@"), Some("ARCH"));
    }
}
