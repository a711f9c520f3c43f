//! The controller's settings, resolved once from flags, environment and the `[deploy]` table of
//! the project's milky.toml, in that order.

use std::path::{Path, PathBuf};

use anyhow::Context;
use milky_core::GroupName;
use milky_core::project::{DeploySettings, ProjectConfig};
use milky_core::signing::{KeyError, SecretKey};
use milky_core::store::{S3Options, Store, StoreUrl};

use crate::cli::GlobalArgs;
use crate::exit::user_error;

/// What every store command needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub store: StoreUrl,
    pub s3: S3Options,
    pub default_group: Option<GroupName>,
    /// `MILKY_SIGNING_KEY`, else `[deploy] signing_key` (relative to the settings file).
    pub signing_key: Option<PathBuf>,
    /// `--allow-unsafe-store`, else `MILKY_ALLOW_UNSAFE_STORE`, else `[deploy]
    /// allow_unsafe_store`: write to a store that fails the conditional-write probe.
    pub allow_unsafe_store: bool,
    /// `[deploy] state_expiry_days`: how long a signed group state stays valid.
    pub state_expiry_days: Option<u32>,
}

/// The `[deploy]` table of the settings file, if there is one and it has that table.
fn deploy_settings(config: &Path) -> anyhow::Result<DeploySettings> {
    if !config.exists() {
        return Ok(DeploySettings::default());
    }
    let text = fs_err::read_to_string(config)?;
    #[derive(serde::Deserialize)]
    struct DeployOnly {
        #[serde(default)]
        deploy: DeploySettings,
    }
    let parsed: DeployOnly = toml::from_str(&text)
        .with_context(|| format!("reading the [deploy] settings in {}", config.display()))?;
    Ok(parsed.deploy)
}

impl Settings {
    pub fn resolve(global: &GlobalArgs) -> anyhow::Result<Self> {
        let deploy = deploy_settings(&global.config)?;
        let env_store = std::env::var("MILKY_STORE").ok().filter(|s| !s.is_empty());
        let Some(url) = global.store.clone().or(env_store).or(deploy.store.clone()) else {
            return Err(user_error(format!(
                "no store given: pass --store s3://BUCKET/PREFIX (or file:///PATH), set MILKY_STORE, \
                 or add `store = \"…\"` under [deploy] in {}",
                global.config.display()
            )));
        };
        let allow_unsafe_store = match std::env::var("MILKY_ALLOW_UNSAFE_STORE") {
            _ if global.allow_unsafe_store => true,
            Ok(value) if !value.is_empty() => match value.as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" => false,
                other => {
                    return Err(user_error(format!(
                        "MILKY_ALLOW_UNSAFE_STORE={other:?}: expected 1 or 0"
                    )));
                }
            },
            _ => deploy.allow_unsafe_store,
        };
        Ok(Self {
            allow_unsafe_store,
            store: url.parse()?,
            s3: S3Options {
                endpoint_url: global.endpoint_url.clone().or(deploy.endpoint_url),
                region: None,
            },
            default_group: deploy.group,
            state_expiry_days: deploy.state_expiry_days,
            signing_key: std::env::var_os("MILKY_SIGNING_KEY")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    let dir = global.config.parent().unwrap_or(Path::new(""));
                    deploy.signing_key.map(|key| match key.strip_prefix("~") {
                        // `~/…` as people write it; the shell never saw this path.
                        Ok(rest) => std::env::var_os("HOME")
                            .map_or_else(|| key.clone(), |home| PathBuf::from(home).join(rest)),
                        Err(_) => dir.join(key),
                    })
                }),
        })
    }

    /// The secret key to sign with: `given` (--sign-key), else the environment's or the
    /// settings file's. None when no key is configured anywhere.
    pub fn signing_key(&self, given: Option<&Path>) -> anyhow::Result<Option<SigningKey>> {
        let Some(path) = given.or(self.signing_key.as_deref()) else {
            return Ok(None);
        };
        let key = SecretKey::read(path).map_err(|err| match err {
            KeyError::Io { .. } => anyhow::Error::from(err).context("reading the signing key"),
            other => user_error(other.to_string()),
        })?;
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs_err::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "the signing key {} can be read by other users (mode {:o}); `chmod 600` it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
        Ok(Some(SigningKey {
            path: path.to_owned(),
            key,
        }))
    }

    /// The store, for reading.
    pub async fn open_store(&self) -> anyhow::Result<Store> {
        Ok(Store::open(&self.store, &self.s3).await?)
    }

    /// The store, for a command that `writes` (false: a dry run): refused if it fails the
    /// conditional-write probe (remembered for a day), unless the unsafe store is allowed.
    pub async fn open_store_for(&self, writes: bool) -> anyhow::Result<Store> {
        let mut store = self.open_store().await?;
        if writes {
            crate::store_check::ensure_safe(&mut store, self.allow_unsafe_store).await?;
        }
        Ok(store)
    }

    /// The group given on the command line, else the `[deploy]` default.
    pub fn group(&self, given: Option<GroupName>) -> anyhow::Result<GroupName> {
        given.or_else(|| self.default_group.clone()).ok_or_else(|| {
            user_error("no group given: pass --group GROUP or set `group = \"…\"` under [deploy] in milky.toml")
        })
    }
}

/// A secret key and where it was read from.
#[derive(Debug)]
pub struct SigningKey {
    pub path: PathBuf,
    pub key: SecretKey,
}

/// Loads a project's milky.toml, for commands that pack.
pub fn load_project(dir: &Path) -> anyhow::Result<ProjectConfig> {
    Ok(ProjectConfig::load(dir)?)
}
