//! `cargo milky keygen`: make the ed25519 key pair that signs packages.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use milky_core::signing::SecretKey;
use serde::Serialize;

use crate::exit::user_error;
use crate::progress::Printer;

/// Make an ed25519 key pair for signing packages.
///
/// Writes the secret key (mode 0600) and its public key, and prints the public key line. Sign
/// uploads with the secret key (`upload --sign-key`, MILKY_SIGNING_KEY or `signing_key` under
/// [deploy]); put the public key line under [signing] trusted_keys in each server's agent.toml,
/// and the servers install only packages it signed. Existing files are never overwritten
/// without --force.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo milky keygen\n  cargo milky keygen --out /secure/milky\n  cargo milky keygen --secret ci.key --public ci.pub"
)]
pub struct KeygenArgs {
    /// Write signing.key and signing.pub into this directory [default: $XDG_CONFIG_HOME/milky, else ~/.config/milky]
    #[arg(long, value_name = "DIR", conflicts_with_all = ["secret", "public"])]
    pub out: Option<PathBuf>,
    /// Where to write the secret key (with --public)
    #[arg(long, value_name = "PATH", requires = "public")]
    pub secret: Option<PathBuf>,
    /// Where to write the public key (with --secret)
    #[arg(long, value_name = "PATH", requires = "secret")]
    pub public: Option<PathBuf>,
    /// Replace key files that exist
    #[arg(long)]
    pub force: bool,
    /// Print the key id, public key line and paths as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Outcome {
    key_id: String,
    public_key: String,
    secret_path: PathBuf,
    public_path: PathBuf,
}

pub fn run(args: KeygenArgs, printer: Printer) -> anyhow::Result<()> {
    let (secret_path, public_path) = match (args.secret, args.public) {
        (Some(secret), Some(public)) => (secret, public),
        _ => {
            let dir = match args.out {
                Some(dir) => dir,
                None => default_dir()?,
            };
            (dir.join("signing.key"), dir.join("signing.pub"))
        }
    };
    if secret_path == public_path {
        return Err(user_error("--secret and --public name the same file"));
    }
    if !args.force {
        for path in [&secret_path, &public_path] {
            if path.exists() {
                return Err(user_error(format!(
                    "{} exists; pass --force to replace it (servers trusting the old key then refuse what the new one signs)",
                    path.display()
                )));
            }
        }
    }
    let key = SecretKey::generate()?;
    let public = key.public();
    write_key(&secret_path, &key.to_file_text(), 0o600, args.force)?;
    write_key(&public_path, &format!("{public}\n"), 0o644, args.force)?;
    printer.status(format!(
        "wrote the secret key to {} (mode 0600: keep it secret, e.g. in your CI's secret store)\n\
         wrote the public key to {}\n\n\
         sign uploads:  cargo milky upload --sign-key {} … (or MILKY_SIGNING_KEY, or signing_key under [deploy])\n\
         make servers require it, in /etc/milky/agent.toml:\n  \
           [signing]\n  \
           trusted_keys = [\"{public}\"]",
        secret_path.display(),
        public_path.display(),
        secret_path.display(),
    ));
    if args.json {
        super::print_json(&Outcome {
            key_id: public.id().to_string(),
            public_key: public.to_string(),
            secret_path,
            public_path,
        })
    } else {
        outln!("{public}");
        Ok(())
    }
}

fn default_dir() -> anyhow::Result<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| user_error("neither XDG_CONFIG_HOME nor HOME is set: pass --out DIR"))?;
    Ok(config.join("milky"))
}

/// Writes a key file whole or not at all (temp file + rename), with its mode set before its
/// content is written; without `force` an existing file is never replaced.
fn write_key(path: &Path, text: &str, mode: u32, force: bool) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.exists() {
        fs_err::create_dir_all(dir)?;
        fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing into {}", dir.display()))?;
    fs_err::set_permissions(temp.path(), std::fs::Permissions::from_mode(mode))?;
    temp.write_all(text.as_bytes())?;
    temp.as_file().sync_all()?;
    let persisted = if force {
        temp.persist(path).map(|_| ())
    } else {
        temp.persist_noclobber(path).map(|_| ())
    };
    persisted.map_err(|err| {
        if err.error.kind() == std::io::ErrorKind::AlreadyExists {
            user_error(format!(
                "{} exists; pass --force to replace it",
                path.display()
            ))
        } else {
            anyhow::Error::from(err.error).context(format!("writing {}", path.display()))
        }
    })
}
