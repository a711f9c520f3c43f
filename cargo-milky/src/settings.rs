//! The controller's settings, resolved once from flags, environment and the `[deploy]` table of
//! the project's milky.toml, in that order.

use std::path::Path;

use anyhow::Context;
use milky_core::GroupName;
use milky_core::project::{DeploySettings, ProjectConfig};
use milky_core::store::{S3Options, Store, StoreUrl};

use crate::cli::GlobalArgs;
use crate::exit::user_error;

/// What every store command needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub store: StoreUrl,
    pub s3: S3Options,
    pub default_group: Option<GroupName>,
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
        Ok(Self {
            store: url.parse()?,
            s3: S3Options {
                endpoint_url: global.endpoint_url.clone().or(deploy.endpoint_url),
                region: None,
            },
            default_group: deploy.group,
        })
    }

    pub async fn open_store(&self) -> anyhow::Result<Store> {
        Ok(Store::open(&self.store, &self.s3).await?)
    }

    /// The group given on the command line, else the `[deploy]` default.
    pub fn group(&self, given: Option<GroupName>) -> anyhow::Result<GroupName> {
        given.or_else(|| self.default_group.clone()).ok_or_else(|| {
            user_error("no group given: pass --group GROUP or set `group = \"…\"` under [deploy] in milky.toml")
        })
    }
}

/// Loads a project's milky.toml, for commands that pack.
pub fn load_project(dir: &Path) -> anyhow::Result<ProjectConfig> {
    Ok(ProjectConfig::load(dir)?)
}
