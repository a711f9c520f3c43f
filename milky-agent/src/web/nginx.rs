//! Switching an app's nginx front to a slot: by its live link alone when the app's file stays
//! the same, else with the changed file tested in the whole config before it replaces the live
//! one, then nginx reloaded; and the copies of snippets no file includes any more pruned.
//! Rendering is in `nginx_config.rs`, running nginx in `nginx_control.rs`.

use std::path::{Path, PathBuf};

use super::process::{read_dir_if_exists, remove_if_exists, replace_symlink, write_atomic};
use super::service_commands::combined;
use super::{AppSite, Slot, WebError, WebStack};

impl WebStack {
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
    pub(super) fn prepare_nginx_slot(
        &self,
        site: &AppSite,
        slot: Slot,
    ) -> Result<PathBuf, WebError> {
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
}

#[cfg(test)]
mod tests {
    use super::super::stack::test_stack;
    use super::*;

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
