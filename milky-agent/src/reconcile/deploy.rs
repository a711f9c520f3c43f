//! One deploy: a release fetched and prepared (venv, hooks), brought up on the idle slot,
//! health-checked there, and only then switched to; the old slot stops after.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use milky_core::project::TlsMode;
use milky_core::python::PythonSpec;
use milky_core::{AppName, GroupName, HostName, Manifest, PackageEntry, Version};

use super::hook_log::HookLog;
use super::{Agent, Target, Wanted, conditional_writes, env_file};

use crate::once_hooks::{Once, OnceKind, OnceRunner};
use crate::python::Interpreters;
use crate::release_store::Releases;
use crate::state_dir::AgentState;
use crate::web::{
    AppSite, HookUser, MEDIA_DIR, ReleaseSetup, SiteTls, Slot, compile_bytecode, ensure_data_dir,
    prepare_release, run_hooks,
};

/// What one deploy brings up: a version's index entry, with the env generation the index names.
pub(super) struct Release<'a> {
    pub app: &'a AppName,
    pub version: &'a Version,
    pub entry: &'a PackageEntry,
    pub env_generation: u64,
}

/// How one deploy ended, when it did not fail.
pub(super) enum Deployed {
    Switched,
    Waiting(String),
}

impl Agent {
    /// Brings `version` up on the idle slot, checks it, points nginx at it, stops the old slot.
    pub(super) async fn deploy(
        &self,
        release: Release<'_>,
        target: &Target<'_>,
        state: &mut AgentState,
    ) -> anyhow::Result<Deployed> {
        let Release {
            app,
            version,
            entry,
            env_generation,
        } = release;
        // Refused before anything is downloaded: the index entry carries the package's
        // `[app] python`, and a server without such a Python keeps serving what it serves.
        if let Some(wanted) = python_spec(entry.python.as_deref())? {
            tokio::task::block_in_place(|| self.interpreters())
                .choose(app.as_str(), Some(&wanted))?;
        }
        let (release_dir, manifest, downloaded) = self
            .releases
            .fetch(&self.store, app, version, entry)
            .await?;
        if downloaded {
            tracing::info!(%app, %version, "unpacked into {}", release_dir.display());
        }
        // Decided once this release's manifest is on disk: before, an app with server names
        // could be taken for the default server.
        let default_server = default_app(&self.releases, target.versions).as_ref() == Some(app);
        let mut site = app_site(
            &manifest,
            &release_dir,
            default_server,
            &self.config.env,
            &self.host,
            &self.config.group,
        )?;
        // The app's data dir: made (never emptied) before anything of the release runs, so its
        // hooks (migrate into SQLite there, seed media) and its processes find it.
        let web = &self.config.web;
        let (uid, gid) = env_file::account_ids(&web.apache_user, &web.apache_group)?;
        let data_root = self.config.paths.data_root();
        let data_dir =
            tokio::task::block_in_place(|| ensure_data_dir(&data_root, app.as_str(), uid, gid))?;
        site.env.insert(
            "MILKY_DATA_DIR".into(),
            data_dir.to_string_lossy().into_owned(),
        );
        site.env.insert(
            "MILKY_MEDIA_DIR".into(),
            data_dir.join(MEDIA_DIR).to_string_lossy().into_owned(),
        );
        site.data_dir = Some(data_dir);
        site.media_url = manifest.app.media_url.clone();
        if let (Some(SiteTls::Https { .. }), Some(mode)) = (&site.tls, manifest.app.tls) {
            let synced = self
                .sync_certificate(app, &site.server_names, mode)
                .await
                .with_context(|| format!("the certificate of {app}"))?;
            // An ACME certificate another server of the group is ordering.
            if let Some(why) = synced.waiting {
                return Ok(Deployed::Waiting(why));
            }
        }
        let mut setup = ReleaseSetup::new(&release_dir);
        let wanted = python_spec(manifest.app.python.as_deref())?;
        let choice = tokio::task::block_in_place(|| self.interpreters())
            .choose(app.as_str(), wanted.as_ref())?;
        setup.uv = self.uv();
        if !choice.is_default {
            let uv = setup
                .uv
                .as_ref()
                .map(|(uv, cache)| (uv.as_path(), cache.as_path()));
            let module = tokio::task::block_in_place(|| {
                crate::python::module_for(&choice.interpreter, &self.mod_wsgi_dir(), uv)
            })?;
            setup.library_path = module.libpython.parent().map(Path::to_owned);
            site.python = Some(module);
        }
        tracing::info!(%app, %version, python = %choice.interpreter.describe(), "runs on");
        setup.python = choice.interpreter.path.clone();
        setup.requirements = manifest.app.requirements.clone().into();
        setup.hooks = manifest.hooks.server.clone();
        setup.env = site.env.clone();
        setup.user = Some(HookUser::lookup(self.config.hook_user())?);
        setup.home = Some(self.releases.app_dir(app).join("home"));
        setup.static_dir = manifest.app.static_dir.as_ref().map(Into::into);
        setup.pip_home = Some(self.state_dir.root.clone());
        setup.install_limit = self.config.limits.install;
        setup.hook_limit = self.config.limits.server_hooks;
        if env_generation > 0 {
            let (env, _) = milky_core::env::read(&self.store, &self.config.group, app)
                .await
                .with_context(|| format!("reading the env of {app}"))?;
            if env.generation < env_generation {
                bail!(
                    "the env of {app} is at generation {}, the index names {env_generation}; trying again next pass",
                    env.generation
                );
            }
            target.verifier.check_env(&self.config.group, app, &env)?;
            let web = &self.config.web;
            site.secret_env_file = Some(self.env_files().write(
                app,
                &env.vars,
                &web.apache_user,
                &web.apache_group,
            )?);
            setup.env.extend(env.vars);
        }
        let hook_log = HookLog {
            app,
            version,
            logs_dir: &self.config.paths.logs,
            max_bytes: self.config.logs.local_max_bytes,
        };
        let prepared = tokio::task::block_in_place(|| {
            let prepared = prepare_release(&setup);
            match &prepared {
                Ok(prepared) => hook_log.runs(&prepared.hooks),
                Err(err) => hook_log.failure(err),
            }
            prepared
        })
        .with_context(|| format!("preparing {app} {version}"))?;
        for hook in &prepared.hooks {
            tracing::info!(%app, %version, "hook `{}` ran in {:?}", hook.hook, hook.duration);
        }
        crate::crash::point("deploy:prepared");
        let (once, first) = (&manifest.hooks.once, &manifest.hooks.first);
        if !once.is_empty() || !first.is_empty() {
            conditional_writes::check(
                &self.store,
                &self.config.group,
                state,
                self.config.allow_unsafe_store,
            )
            .await?;
            let runner = OnceRunner {
                store: &self.store,
                group: &self.config.group,
                host: &self.host,
                ttl: self.config.releases.once_lease,
                wait: self.config.releases.once_wait,
                hook_limit: self.config.limits.once_hooks,
            };
            let run = |hooks: &[String]| {
                let runs = run_hooks(&setup, hooks, self.config.limits.once_hooks);
                match &runs {
                    Ok(runs) => hook_log.runs(runs),
                    Err(err) => hook_log.failure(err),
                }
                runs
            };
            // Migrations first: the first-deploy hooks (seed data) need the tables.
            if !once.is_empty()
                && let Once::Waiting(why) = runner
                    .ensure(OnceKind::PerVersion, app, version, once, || run(once))
                    .await?
            {
                return Ok(Deployed::Waiting(why));
            }
            if !first.is_empty()
                && let Once::Waiting(why) = runner
                    .ensure_first(app, version, first, || run(first))
                    .await?
            {
                return Ok(Deployed::Waiting(why));
            }
        }
        let live = self.web.live_slot(app.as_str())?;
        let live_running = live
            .map(|slot| self.web.is_running(app.as_str(), slot))
            .transpose()?
            .unwrap_or(false);
        let target = match live {
            Some(slot) if live_running => slot.other(),
            Some(slot) => slot,
            None => Slot::Blue,
        };
        tokio::task::block_in_place(|| -> anyhow::Result<()> {
            self.web.start_slot(&site, target)?;
            crate::crash::point("deploy:slot-started");
            let checked = self
                .web
                .health_check(
                    app.as_str(),
                    target,
                    &manifest.app.health,
                    Some(version.as_str()),
                )
                .and_then(|_| {
                    crate::crash::point("deploy:healthy");
                    self.web.switch_nginx(&site, target)
                });
            if let Err(err) = checked {
                // The old slot never stopped serving; take the failed one down again.
                if self.web.live_slot(app.as_str()).ok().flatten() != Some(target) {
                    let _ = self.web.stop_slot(app.as_str(), target);
                }
                return Err(err.into());
            }
            crate::crash::point("deploy:switched");
            self.releases.set_current(app, version)?;
            if let Some(old) = live
                && old != target
                && live_running
            {
                self.web.stop_slot(app.as_str(), old)?;
            }
            Ok(())
        })?;
        // Rollback steps only onto versions that served somewhere; a marker that cannot be
        // written now costs nothing but that (rollback then treats the version as never served).
        if let Err(err) =
            milky_core::served::mark(&self.store, &self.config.group, app, version, &self.host)
                .await
        {
            tracing::warn!(%app, %version, "recording that this version served: {err}");
        }
        if setup.uv.is_some() {
            // uv installed without compiling: done now that the release serves.
            match tokio::task::block_in_place(|| compile_bytecode(&setup)) {
                Ok(took) => tracing::info!(%app, %version, ?took, "compiled the venv's bytecode"),
                Err(err) => tracing::warn!(%app, %version, "compiling the venv's bytecode: {err}"),
            }
        }
        crate::crash::point("deploy:done");
        state.live_env.insert(app.clone(), env_generation);
        Ok(Deployed::Switched)
    }
}

impl Agent {
    /// Where the agent keeps what it knows of Pythons and the mod_wsgi modules it built.
    fn python_dir(&self) -> std::path::PathBuf {
        self.state_dir.root.join("python")
    }

    fn mod_wsgi_dir(&self) -> std::path::PathBuf {
        self.config
            .python
            .mod_wsgi_dir
            .clone()
            .unwrap_or_else(|| self.python_dir().join("mod_wsgi"))
    }

    /// This server's Pythons (probed once each, cached in the state dir).
    fn interpreters(&self) -> Interpreters {
        let settings = &self.config.python;
        Interpreters::find(
            &self.config.releases.python,
            &settings.interpreters,
            settings.discover,
            &self.python_dir().join("interpreters.json"),
        )
    }

    /// The uv that makes venvs and installs, with its cache; `None`: venv and pip.
    fn uv(&self) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        let settings = &self.config.python;
        let uv = settings
            .uv
            .clone()
            .unwrap_or_else(|| self.state_dir.root.join("tools/bin/uv"));
        if !uv.is_file() {
            if settings.uv.is_some() {
                tracing::warn!(uv = %uv.display(), "[python] uv names no file; installing with pip");
            }
            return None;
        }
        let cache = settings
            .cache
            .clone()
            .unwrap_or_else(|| self.state_dir.root.join("uv-cache"));
        Some((uv, cache))
    }
}

/// `[app] python`, parsed (a package or index entry that got past `package` parses).
fn python_spec(text: Option<&str>) -> anyhow::Result<Option<PythonSpec>> {
    text.map(PythonSpec::parse)
        .transpose()
        .map_err(anyhow::Error::msg)
}

/// The app nginx answers for unknown host names: the first wanted app (by name) without
/// server names. An app whose release is not on disk yet may be it; apps are deployed in
/// name order, so every app before the one being deployed is known.
fn default_app(releases: &Releases, wanted: &Wanted) -> Option<AppName> {
    wanted
        .iter()
        .find(|(app, (version, _))| {
            releases
                .manifest(app, version)
                .is_none_or(|m| m.app.server_names.is_empty())
        })
        .map(|(app, _)| app.clone())
}

/// What a release looks like to the web servers. Its processes' environment layers the
/// server's own `env` first, then the package's settings and MilkyWhite's variables, which win.
fn app_site(
    manifest: &Manifest,
    release_dir: &Path,
    default_server: bool,
    server_env: &BTreeMap<String, String>,
    host: &HostName,
    group: &GroupName,
) -> anyhow::Result<AppSite> {
    let app = &manifest.app;
    let (module, callable) = app
        .wsgi
        .split_once(':')
        .context("wsgi is module:callable")?;
    let server_name = app
        .server_names
        .first()
        .cloned()
        .unwrap_or_else(|| app.name.to_string());
    let mut site = AppSite::new(
        app.name.as_str(),
        server_name,
        release_dir,
        format!("{}.py", module.replace('.', "/")),
    );
    site.env.extend(server_env.clone());
    site.server_names = if app.server_names.is_empty() {
        // nginx needs a name; health checks ask as localhost, which Django accepts by default.
        site.health_host = Some("localhost".to_owned());
        vec![app.name.to_string()]
    } else {
        app.server_names.clone()
    };
    site.default_server = default_server;
    site.tls = app.tls.map(|mode| match mode {
        TlsMode::Proxy => SiteTls::Proxy,
        TlsMode::Acme | TlsMode::Provided => SiteTls::Https { hsts: app.hsts },
    });
    site.wsgi_callable = callable.to_owned();
    site.static_dir = app.static_dir.as_ref().map(Into::into);
    site.nginx_snippet = manifest.snippets.nginx.as_ref().map(Into::into);
    site.apache_snippet = manifest.snippets.apache.as_ref().map(Into::into);
    if let Some(settings) = &app.settings {
        site.env
            .insert("DJANGO_SETTINGS_MODULE".into(), settings.clone());
    }
    site.env.insert("MILKY_APP".into(), app.name.to_string());
    site.env
        .insert("MILKY_VERSION".into(), manifest.release.version.to_string());
    site.env.insert("MILKY_HOST".into(), host.to_string());
    site.env.insert("MILKY_GROUP".into(), group.to_string());
    Ok(site)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use milky_core::package::UnpackLimits;

    use super::super::test_support::entry;
    use super::*;

    /// A manifest as `cargo milky package` writes it; `app` holds the `[app]` lines after the name.
    fn manifest(name: &str, version: &str, app: &str, snippets: &str) -> Manifest {
        Manifest::parse(&format!(
            "format = 1\n\
             [app]\nname = \"{name}\"\n{app}\n\
             [hooks]\n\
             [snippets]\n{snippets}\n\
             [release]\nversion = \"{version}\"\nbuilt = \"2026-01-01T00:00:00Z\"\n\
             content_sha256 = \"{}\"\nentries = 3\nwheels = false\n",
            "ab".repeat(32)
        ))
        .unwrap()
    }

    #[test]
    fn a_django_site_gets_its_settings_and_milkywhite_s_variables_over_the_server_s() {
        let manifest = manifest(
            "shop",
            "v4",
            "wsgi = \"shop.conf.wsgi:application\"\nsettings = \"shop.settings\"\n\
             static_dir = \"collected\"\nserver_names = [\"shop.example\", \"www.shop.example\"]",
            "nginx = \"deploy/nginx.conf\"",
        );
        let server_env = BTreeMap::from([
            ("DATABASE_HOST".to_owned(), "db.internal".to_owned()),
            ("MILKY_APP".to_owned(), "not-this".to_owned()),
            ("DJANGO_SETTINGS_MODULE".to_owned(), "not.this".to_owned()),
        ]);
        let site = app_site(
            &manifest,
            Path::new("/srv/apps/shop/releases/v4"),
            false,
            &server_env,
            &"web-1".parse().unwrap(),
            &"prod".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(site.name, "shop");
        assert_eq!(site.server_names, ["shop.example", "www.shop.example"]);
        assert!(!site.default_server);
        assert_eq!(
            site.release_dir,
            PathBuf::from("/srv/apps/shop/releases/v4")
        );
        assert_eq!(site.wsgi_file, PathBuf::from("shop/conf/wsgi.py"));
        assert_eq!(site.wsgi_callable, "application");
        assert_eq!(site.static_dir, Some(PathBuf::from("collected")));
        assert_eq!(site.nginx_snippet, Some(PathBuf::from("deploy/nginx.conf")));
        assert_eq!(site.apache_snippet, None);
        let env: Vec<(&str, &str)> = site
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("DATABASE_HOST", "db.internal"),
                ("DJANGO_SETTINGS_MODULE", "shop.settings"),
                ("MILKY_APP", "shop"),
                ("MILKY_GROUP", "prod"),
                ("MILKY_HOST", "web-1"),
                ("MILKY_VERSION", "v4"),
            ]
        );
    }

    #[test]
    fn a_plain_wsgi_site_answers_to_its_app_name() {
        let manifest = manifest("api", "v1", "wsgi = \"app:make\"", "");
        let site = app_site(
            &manifest,
            Path::new("/srv/apps/api/releases/v1"),
            true,
            &BTreeMap::new(),
            &"web-1".parse().unwrap(),
            &"prod".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(site.server_names, ["api"]);
        assert!(site.default_server);
        assert_eq!(
            (site.wsgi_file, site.wsgi_callable.as_str()),
            (PathBuf::from("app.py"), "make")
        );
        assert_eq!(site.static_dir, None);
        assert!(!site.env.contains_key("DJANGO_SETTINGS_MODULE"));
    }

    #[test]
    fn the_default_app_is_the_first_without_server_names() {
        let dir = tempfile::tempdir().unwrap();
        let releases = Releases {
            apps: dir.path().join("apps"),
            downloads: dir.path().join("downloads"),
            limits: UnpackLimits {
                max_bytes: 1 << 20,
                max_entries: 100,
            },
        };
        let on_disk = |name: &str, version: &str, app: &str| {
            let m = manifest(name, version, app, "");
            let dir = releases.release_dir(&name.parse().unwrap(), &version.parse().unwrap());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(milky_core::project::FILE_NAME), m.to_toml()).unwrap();
        };
        on_disk(
            "api",
            "v1",
            "wsgi = \"app:app\"\nserver_names = [\"api.example\"]",
        );
        on_disk("blog", "v2", "wsgi = \"app:app\"");
        let wanted = |names: &[(&str, &str)]| -> Wanted {
            names
                .iter()
                .map(|(a, v)| (a.parse().unwrap(), (v.parse().unwrap(), entry())))
                .collect()
        };
        let name = |s: &str| Some(s.parse::<AppName>().unwrap());
        assert_eq!(
            default_app(&releases, &wanted(&[("api", "v1"), ("blog", "v2")])),
            name("blog")
        );
        // A release not on disk yet may be the default: its server names are not known.
        assert_eq!(
            default_app(&releases, &wanted(&[("api", "v9"), ("blog", "v2")])),
            name("api")
        );
        assert_eq!(
            default_app(&releases, &wanted(&[("api", "v1"), ("zoo", "v1")])),
            name("zoo")
        );
        assert_eq!(default_app(&releases, &wanted(&[("api", "v1")])), None);
    }
}
