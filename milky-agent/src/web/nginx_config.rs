//! The nginx config as text: an app's file (which names no slot, so a switch by live link needs
//! no reload), the copy of a package's nginx snippet named by its contents, and the main config
//! with its includes, written to where nginx reads it or to a candidate for the config test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::process::write_atomic;
use super::served::SiteHeader;
use super::site::SiteTls;
use super::templates::{NGINX_APP, NGINX_MAIN};
use super::{AppSite, WebError, WebStack};

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
    /// The nginx file of `site`, header line included. It names no slot or release (requests
    /// find the live slot through the live link), so a switch between releases that agree on
    /// server names, static URL and nginx snippet leaves it unchanged: then nginx does not reload.
    pub fn render_nginx_app(&self, site: &AppSite) -> Result<String, WebError> {
        site.validate()?;
        let snippet = self.nginx_snippet(site)?.map(|(path, _)| path);
        self.render_site(site, snippet.as_deref())
    }

    pub(super) fn render_site(
        &self,
        site: &AppSite,
        snippet: Option<&Path>,
    ) -> Result<String, WebError> {
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
    pub(super) fn nginx_snippet(
        &self,
        site: &AppSite,
    ) -> Result<Option<(PathBuf, Vec<u8>)>, WebError> {
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

    pub(super) fn write_main_conf(
        &self,
        apps: &BTreeMap<String, bool>,
        candidate: Option<(&str, &Path)>,
    ) -> Result<(), WebError> {
        self.write_main_conf_to(&self.nginx_conf(), apps, candidate)
    }

    pub(super) fn write_main_conf_to(
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
}

#[cfg(test)]
mod tests {
    use super::super::process::read_dir_if_exists;
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
}
