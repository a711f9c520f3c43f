//! The nginx front: rendering an app's file and the main config, switching an app to a slot (by
//! its live link alone when the app's file stays the same), testing a changed config before it
//! replaces the live one, reloading, and waiting for the old workers to drain.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::process::{
    POLL, children, is_alive, log_excerpt, read_dir_if_exists, read_pid, remove_if_exists,
    replace_symlink, wait_until, write_atomic,
};
use super::served::SiteHeader;
use super::service_commands::combined;
use super::site::SiteTls;
use super::templates::{NGINX_APP, NGINX_MAIN};
use super::{AppSite, Slot, WebError, WebStack};

/// What the main config needs to know of the apps it includes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MainServed {
    /// One app is the default server (no catch-all 404 server on plain HTTP).
    pub default_app: bool,
    /// One app answers HTTPS (nginx listens there).
    pub https: bool,
    /// The default app answers HTTPS (no catch-all server that refuses handshakes).
    pub https_default: bool,
}

impl WebStack {
    fn nginx_vars(&self, conf: &Path) -> [(&'static str, String); 3] {
        [
            ("prefix", self.nginx_prefix().display().to_string()),
            ("conf", conf.display().to_string()),
            ("error_log", self.nginx_error_log().display().to_string()),
        ]
    }

    /// The pid of the nginx master, if it runs.
    pub fn nginx_pid(&self) -> Result<Option<u32>, WebError> {
        Ok(read_pid(&self.nginx_pid_file())?.filter(|pid| is_alive(*pid)))
    }

    /// The nginx file of `site`, header line included. It names no slot or release (requests
    /// find the live slot through the live link), so a switch between releases that agree on
    /// server names, static URL and nginx snippet leaves it unchanged: then nginx does not reload.
    pub fn render_nginx_app(&self, site: &AppSite) -> Result<String, WebError> {
        site.validate()?;
        let snippet = self.nginx_snippet(site)?.map(|(path, _)| path);
        self.render_site(site, snippet.as_deref())
    }

    fn render_site(&self, site: &AppSite, snippet: Option<&Path>) -> Result<String, WebError> {
        let live = self.nginx_live_link(&site.name);
        let body = self.templates.render(
            NGINX_APP,
            json!({
                "app": site.name,
                "live_link": live,
                "listen": self.settings.front.to_string(),
                "default_server": site.default_server,
                "server_names": site.server_names,
                "static_dir": site.static_dir.as_ref().map(|_| live.join("static")),
                "static_url": site.static_url,
                "nginx_snippet": snippet,
                "media_url": site.media_url,
                "media_dir": site.media_url.as_ref().and(site.data_dir.as_ref()).map(|d| d.join(super::MEDIA_DIR)),
                "access_log": self.nginx_app_log(&site.name, "access"),
                "error_log": self.nginx_app_log(&site.name, "error"),
                "behind_proxy": site.tls == Some(SiteTls::Proxy),
                "https": self.https_vars(site),
                "challenge_dir": self.acme_challenge_dir(),
            }),
        )?;
        let header = SiteHeader {
            default_server: site.default_server,
            https: matches!(site.tls, Some(SiteTls::Https { .. })),
            legacy_slot: None,
        };
        Ok(format!("{}\n{body}", header.line()))
    }

    /// The package's nginx snippet and where the agent keeps its copy: named by its contents, so
    /// the app's file changes (and nginx reloads) exactly when the snippet does.
    fn nginx_snippet(&self, site: &AppSite) -> Result<Option<(PathBuf, Vec<u8>)>, WebError> {
        let Some(snippet) = &site.nginx_snippet else {
            return Ok(None);
        };
        let text = fs_err::read(site.in_release(snippet))?;
        let digest = hex::encode(&Sha256::digest(&text)[..8]);
        let path = self
            .nginx_snippets_dir()
            .join(format!("{}.{digest}.conf", site.name));
        Ok(Some((path, text)))
    }

    /// nginx's main config including `includes` (app files), none of them answering HTTPS;
    /// `default_app` says whether one of them is the default server.
    pub fn render_nginx_main(
        &self,
        includes: &[PathBuf],
        default_app: bool,
    ) -> Result<String, WebError> {
        let served = MainServed {
            default_app,
            ..MainServed::default()
        };
        self.render_nginx_main_for(includes, served)
    }

    /// nginx's main config including `includes` (app files); `served` says whether one of them
    /// is the default server (then there is no catch-all 404 server), and whether one answers
    /// HTTPS (then nginx listens there, and refuses names no app claims unless one is default).
    pub fn render_nginx_main_for(
        &self,
        includes: &[PathBuf],
        served: MainServed,
    ) -> Result<String, WebError> {
        self.templates.render(
            NGINX_MAIN,
            json!({
                "user": self.settings.nginx_user,
                "worker_processes": self.settings.nginx_worker_processes.max(1),
                "prefix": self.nginx_prefix(),
                "pid_file": self.nginx_pid_file(),
                "error_log": self.nginx_error_log(),
                "shutdown_timeout_secs": self.settings.timeouts.drain.as_secs().max(1),
                "mime_types": self.settings.mime_types,
                "listen": self.settings.front.to_string(),
                "app_is_default": served.default_app,
                "https_used": served.https,
                "https_app_is_default": served.https_default,
                "https_listen": self.settings.https.to_string(),
                "trusted_proxies": self.settings.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "challenge_dir": self.acme_challenge_dir(),
                "includes": includes,
            }),
        )
    }

    /// Points nginx at `slot` for `site`. The slot's nginx dir gets a `static` link to the
    /// release's static files. When the app's nginx file stays as it is (the usual case: the
    /// releases agree on server names, static URL and nginx snippet), replacing the live link is
    /// the whole switch: nginx follows it from the next request on, and no reload closes the
    /// clients' kept-alive connections. Otherwise the new file is tested with the whole config
    /// (on failure the previous file and link stay and other apps are untouched), link and file
    /// are put in place and nginx starts or reloads; then this returns once the old workers are
    /// gone. The slot must be running (and should have passed its health check).
    pub fn switch_nginx(&self, site: &AppSite, slot: Slot) -> Result<(), WebError> {
        site.validate()?;
        let app = site.name.as_str();
        if !self.is_running(app, slot)? {
            return Err(WebError::SlotNotRunning {
                app: app.to_owned(),
                slot,
            });
        }
        let snippet = self.nginx_snippet(site)?;
        let rendered = self.render_site(site, snippet.as_ref().map(|(path, _)| path.as_path()))?;
        let slot_dir = self.prepare_nginx_slot(site, slot)?;
        if let Some((path, text)) = &snippet
            && !path.exists()
        {
            write_atomic(path, text)?;
        }
        let unchanged = fs_err::read_to_string(self.nginx_app_file(app))
            .is_ok_and(|current| current == rendered);
        if unchanged && !self.reload_marker().exists() && self.nginx_pid()?.is_some() {
            tracing::info!(app, %slot, "switching nginx by its live link (config unchanged, no reload)");
            return self.point_live_link(app, &slot_dir);
        }
        tracing::info!(app, %slot, "switching nginx (config changed: test, then reload)");
        let result = self.apply_nginx(
            app,
            Some((rendered, site.default_server)),
            Some(&slot_dir),
            true,
        );
        self.prune_snippets(app)?;
        result
    }

    /// Makes the slot's nginx dir (named by its port) with a `static` link to the release's
    /// static files, replacing an older release's link. Only done for a slot that is not live or
    /// not running, so no request sees the change before the switch.
    fn prepare_nginx_slot(&self, site: &AppSite, slot: Slot) -> Result<PathBuf, WebError> {
        let port = self.slot_port(&site.name, slot)?;
        let dir = self.nginx_slot_dir(&site.name, slot, port);
        fs_err::create_dir_all(&dir)?;
        let link = dir.join("static");
        match &site.static_dir {
            Some(static_dir) => replace_symlink(&site.in_release(static_dir), &link)?,
            None => remove_if_exists(&link)?,
        }
        Ok(dir)
    }

    /// Points `app`'s live link at a slot's nginx dir (relative, so the root may move).
    pub(super) fn point_live_link(&self, app: &str, slot_dir: &Path) -> Result<(), WebError> {
        let name = slot_dir.file_name().unwrap_or_default();
        replace_symlink(
            &Path::new("../slots").join(name),
            &self.nginx_live_link(app),
        )?;
        crate::crash::point("nginx:live-link-replaced");
        Ok(())
    }

    /// Removes copies of `app`'s nginx snippet that its nginx file does not include (older ones,
    /// or one whose config test failed).
    pub(super) fn prune_snippets(&self, app: &str) -> Result<(), WebError> {
        let current = fs_err::read_to_string(self.nginx_app_file(app)).unwrap_or_default();
        for entry in read_dir_if_exists(&self.nginx_snippets_dir())? {
            let path = entry.path();
            let ours = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.strip_prefix(app).is_some_and(|r| r.starts_with('.')));
            if ours && !current.contains(&*path.to_string_lossy()) {
                remove_if_exists(&path)?;
            }
        }
        Ok(())
    }

    /// Makes nginx run the config on disk: starts it when it is down (e.g. after a reboot) and
    /// reloads it when an earlier run changed a file but was interrupted before the reload.
    pub fn ensure_nginx(&self) -> Result<(), WebError> {
        let running = self.nginx_pid()?.is_some();
        if running && !self.reload_marker().exists() {
            return Ok(());
        }
        if !self.nginx_conf().exists() {
            let apps = self.served_apps()?;
            self.write_main_conf(&apps, None)?;
        }
        self.reload_or_start(true)?;
        remove_if_exists(&self.reload_marker())
    }

    /// Changes `app`'s nginx file (`Some`: new contents; `None`: remove it), tests, applies; with
    /// `live`, the app's live link is pointed at that slot dir once the test passed.
    pub(super) fn apply_nginx(
        &self,
        app: &str,
        new: Option<(String, bool)>,
        live: Option<&Path>,
        start: bool,
    ) -> Result<(), WebError> {
        let final_file = self.nginx_app_file(app);
        let candidate_file = self.nginx_apps_dir().join(format!("{app}.conf.new"));
        let mut apps = self.served_apps()?;
        match &new {
            Some((text, default)) => {
                write_atomic(&candidate_file, text)?;
                apps.insert(app.to_owned(), *default);
            }
            None => {
                apps.remove(app);
            }
        }
        let defaults: Vec<&String> = apps.iter().filter(|(_, d)| **d).map(|(a, _)| a).collect();
        if let [first, second, ..] = defaults.as_slice() {
            remove_if_exists(&candidate_file)?;
            return Err(WebError::TwoDefaultServers {
                first: (*first).clone(),
                second: (*second).clone(),
            });
        }

        // Test the exact config nginx would load, with the candidate in place of the live file.
        let test_conf = self.nginx_prefix().join("nginx.test.conf");
        let candidate = new.as_ref().map(|_| (app, candidate_file.as_path()));
        self.write_main_conf_to(&test_conf, &apps, candidate)?;
        let vars = self.nginx_vars(&test_conf);
        let (command, output) = self.settings.commands.nginx_test.run(
            &format!("test the nginx config for app {app}"),
            &vars,
            self.settings.timeouts.command,
        )?;
        remove_if_exists(&test_conf)?;
        if !output.status.success() {
            remove_if_exists(&candidate_file)?;
            return Err(WebError::NginxConfigTest {
                app: app.to_owned(),
                command,
                output: combined(&output),
            });
        }

        // From here until the reload is done, the marker tells a later run to finish the job.
        write_atomic(&self.reload_marker(), app)?;
        if let Some(slot_dir) = live {
            self.point_live_link(app, slot_dir)?;
        }
        match new {
            Some(_) => fs_err::rename(&candidate_file, &final_file)?,
            None => remove_if_exists(&final_file)?,
        }
        self.write_main_conf(&apps, None)?;
        crate::crash::point("nginx:file-changed");
        if self.reload_or_start(start)? {
            remove_if_exists(&self.reload_marker())?;
        }
        Ok(())
    }

    /// Tests the config on disk as it is and reloads nginx if it runs (used when a file it
    /// reads changed but no app file did: an app's certificate).
    pub(super) fn test_and_reload_nginx(&self, app: &str) -> Result<(), WebError> {
        let vars = self.nginx_vars(&self.nginx_conf());
        let (command, output) = self.settings.commands.nginx_test.run(
            &format!("test the nginx config for app {app}'s certificate"),
            &vars,
            self.settings.timeouts.command,
        )?;
        if !output.status.success() {
            return Err(WebError::NginxConfigTest {
                app: app.to_owned(),
                command,
                output: combined(&output),
            });
        }
        self.reload_or_start(false).map(|_| ())
    }

    fn write_main_conf(
        &self,
        apps: &BTreeMap<String, bool>,
        candidate: Option<(&str, &Path)>,
    ) -> Result<(), WebError> {
        self.write_main_conf_to(&self.nginx_conf(), apps, candidate)
    }

    fn write_main_conf_to(
        &self,
        path: &Path,
        apps: &BTreeMap<String, bool>,
        candidate: Option<(&str, &Path)>,
    ) -> Result<(), WebError> {
        let includes: Vec<PathBuf> = apps
            .keys()
            .map(|a| match candidate {
                Some((c, file)) if c == a => file.to_owned(),
                _ => self.nginx_app_file(a),
            })
            .collect();
        let mut served = MainServed {
            default_app: apps.values().any(|d| *d),
            ..MainServed::default()
        };
        for file in &includes {
            if let Some(header) = self.read_site_header(file)?
                && header.https
            {
                served.https = true;
                served.https_default |= header.default_server;
            }
        }
        write_atomic(path, &self.render_nginx_main_for(&includes, served)?)
    }

    /// Reloads a running nginx and waits until its old workers have exited; starts it if it is
    /// down and `start` is set. Returns whether nginx now runs the config on disk.
    fn reload_or_start(&self, start: bool) -> Result<bool, WebError> {
        let vars = self.nginx_vars(&self.nginx_conf());
        let commands = &self.settings.commands;
        let timeouts = &self.settings.timeouts;
        match self.nginx_pid()? {
            Some(master) => {
                let old: BTreeSet<u32> = children(master).into_iter().map(|(p, _)| p).collect();
                commands
                    .nginx_reload
                    .run_ok("reload nginx", &vars, timeouts.command)?;
                // Old workers exit only once the master has loaded the new config and they have
                // finished their requests; a new worker shows the master took the reload.
                let done = wait_until(timeouts.drain + Duration::from_secs(5), POLL, || {
                    let now: BTreeSet<u32> = children(master).into_iter().map(|(p, _)| p).collect();
                    now.is_disjoint(&old) && !now.is_empty()
                });
                if !done {
                    return Err(WebError::Nginx {
                        what: "did not finish reloading (old workers still running or no new ones)",
                        timeout: timeouts.drain,
                        log: log_excerpt(&self.nginx_error_log()),
                    });
                }
                Ok(true)
            }
            None if start => {
                commands
                    .nginx_start
                    .run_ok("start nginx", &vars, timeouts.command)?;
                let front = self.settings.front;
                let up = wait_until(timeouts.start, POLL, || {
                    self.nginx_pid().ok().flatten().is_some()
                        && TcpStream::connect_timeout(&front, Duration::from_millis(200)).is_ok()
                });
                if !up {
                    return Err(WebError::Nginx {
                        what: "did not start",
                        timeout: timeouts.start,
                        log: log_excerpt(&self.nginx_error_log()),
                    });
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Waits until no nginx worker of an older generation is left (they may still be sending
    /// requests to a slot that is about to stop); finishes an interrupted reload first.
    pub(super) fn drain_nginx(&self) -> Result<(), WebError> {
        if self.reload_marker().exists() {
            self.ensure_nginx()?;
        }
        let Some(master) = self.nginx_pid()? else {
            return Ok(());
        };
        let timeout = self.settings.timeouts.drain + Duration::from_secs(5);
        let drained = wait_until(timeout, POLL, || {
            !children(master)
                .iter()
                .any(|(_, cmd)| cmd.contains("shutting down"))
        });
        if drained {
            Ok(())
        } else {
            Err(WebError::Nginx {
                what: "workers of an older config did not exit",
                timeout,
                log: log_excerpt(&self.nginx_error_log()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::stack::test_stack;
    use super::*;

    /// A site whose release (under `root`) has an nginx snippet with `snippet` in it.
    fn site_with_snippet(root: &Path, snippet: &str) -> AppSite {
        let release = root.join("releases/shop");
        fs_err::create_dir_all(release.join("deploy")).unwrap();
        fs_err::write(release.join("deploy/nginx.conf"), snippet).unwrap();
        let mut site = AppSite::new("shop", "shop.example", &release, "mysite/wsgi.py");
        site.nginx_snippet = Some(PathBuf::from("deploy/nginx.conf"));
        site
    }

    #[test]
    fn an_app_file_names_the_live_link_and_no_slot() {
        let (dir, stack) = test_stack();
        let mut site = AppSite::new("shop", "shop.example", dir.path(), "mysite/wsgi.py");
        site.default_server = true;
        let text = stack.render_nginx_app(&site).unwrap();
        assert_eq!(
            text.lines().next(),
            Some(
                SiteHeader {
                    default_server: true,
                    https: false,
                    legacy_slot: None
                }
                .line()
                .as_str()
            )
        );
        let live = stack.nginx_live_link("shop");
        assert!(
            text.contains(&format!("root {};", live.display())),
            "{text}"
        );
        assert!(
            text.contains(&format!("alias {}/static/;", live.display())),
            "{text}"
        );
        assert!(
            text.contains("listen 127.0.0.1:9 default_server;"),
            "{text}"
        );
        // Both slots render the same file, so a switch between them needs no reload.
        assert!(!text.contains("blue") && !text.contains("green"), "{text}");
    }

    #[test]
    fn the_snippet_copy_is_named_by_its_contents() {
        let (dir, stack) = test_stack();
        let first = stack
            .render_nginx_app(&site_with_snippet(dir.path(), "add_header X-A 1;\n"))
            .unwrap();
        let again = stack
            .render_nginx_app(&site_with_snippet(dir.path(), "add_header X-A 1;\n"))
            .unwrap();
        let changed = stack
            .render_nginx_app(&site_with_snippet(dir.path(), "add_header X-A 2;\n"))
            .unwrap();
        assert_eq!(first, again);
        assert_ne!(first, changed, "a changed snippet changes the app's file");
        let include = format!("include {}/shop.", stack.nginx_snippets_dir().display());
        assert!(first.contains(&include), "{first}");
        // Rendering writes nothing: the copy is made by the switch.
        assert_eq!(
            read_dir_if_exists(&stack.nginx_snippets_dir())
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn the_main_config_has_a_catch_all_only_without_a_default_app() {
        let (_dir, stack) = test_stack();
        let includes = [stack.nginx_app_file("blog"), stack.nginx_app_file("shop")];
        let without = stack.render_nginx_main(&includes, false).unwrap();
        let with = stack.render_nginx_main(&includes, true).unwrap();
        assert!(without.contains("return 404;"), "{without}");
        assert!(!with.contains("return 404;"), "{with}");
        let blog = without
            .find(&format!("include {};", includes[0].display()))
            .unwrap();
        let shop = without
            .find(&format!("include {};", includes[1].display()))
            .unwrap();
        assert!(blog < shop);
        let pid = format!("pid {};", stack.nginx_pid_file().display());
        assert!(with.contains(&pid), "{with}");
    }

    #[test]
    fn a_second_default_server_is_refused_before_any_file_changes() {
        let (dir, stack) = test_stack();
        fs_err::write(stack.nginx_app_file("shop"), "# milky-site: default=true\n").unwrap();
        let mut blog = AppSite::new("blog", "blog.example", dir.path(), "mysite/wsgi.py");
        blog.default_server = true;
        let text = stack.render_nginx_app(&blog).unwrap();
        let err = stack
            .apply_nginx("blog", Some((text, true)), None, false)
            .unwrap_err();
        assert!(
            matches!(&err, WebError::TwoDefaultServers { first, second } if first == "blog" && second == "shop"),
            "{err}"
        );
        let files: Vec<_> = read_dir_if_exists(&stack.nginx_apps_dir())
            .unwrap()
            .iter()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(files, ["shop.conf"]);
        assert!(!stack.nginx_conf().exists());
        assert!(!stack.reload_marker().exists());
    }

    #[test]
    fn a_slots_nginx_dir_links_to_its_releases_static_files() {
        let (dir, stack) = test_stack();
        let mut site = AppSite::new("shop", "shop.example", dir.path(), "mysite/wsgi.py");
        let slot_dir = stack.prepare_nginx_slot(&site, Slot::Blue).unwrap();
        let port = stack.slot_port("shop", Slot::Blue).unwrap();
        assert_eq!(slot_dir, stack.nginx_slot_dir("shop", Slot::Blue, port));
        assert_eq!(
            fs_err::read_link(slot_dir.join("static")).unwrap(),
            dir.path().join("static_collected")
        );
        site.static_dir = None;
        stack.prepare_nginx_slot(&site, Slot::Blue).unwrap();
        assert!(fs_err::symlink_metadata(slot_dir.join("static")).is_err());
    }

    #[test]
    fn only_snippet_copies_of_the_app_that_its_file_does_not_include_are_pruned() {
        let (_dir, stack) = test_stack();
        let snippets = stack.nginx_snippets_dir();
        let kept = snippets.join("shop.aaaa.conf");
        fs_err::write(
            stack.nginx_app_file("shop"),
            format!("# milky-site: default=false\ninclude {};\n", kept.display()),
        )
        .unwrap();
        for name in [
            "shop.aaaa.conf",
            "shop.bbbb.conf",
            "shopping.cccc.conf",
            "blog.dddd.conf",
        ] {
            fs_err::write(snippets.join(name), "").unwrap();
        }
        stack.prune_snippets("shop").unwrap();
        let mut left: Vec<_> = read_dir_if_exists(&snippets)
            .unwrap()
            .iter()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["blog.dddd.conf", "shop.aaaa.conf", "shopping.cccc.conf"]
        );
    }
}
