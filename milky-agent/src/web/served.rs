//! What this server serves, read back from the web stack's own files every time: the apps with
//! an nginx file (whose first line says whether the app is the default server), the live slot of
//! each (the link nginx itself follows), and the apps with an Apache dir. There is no separate
//! record that could disagree with what nginx does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{Slot, WebError, WebStack, validate};

/// The header line the agent (not the template) puts first in every app's nginx file.
const SITE_HEADER: &str = "# milky-site:";
/// The header of files written before slots were switched by link, which named the live slot
/// (`# milky-live: slot=blue port=8101 default=false`); read back until the next switch.
const LEGACY_HEADER: &str = "# milky-live:";

impl WebStack {
    /// The slot nginx sends `app`'s requests to, read from the app's live link; `None` when the
    /// app is not served (it has no nginx file).
    pub fn live_slot(&self, app: &str) -> Result<Option<Slot>, WebError> {
        validate::app_name(app)?;
        let Some(header) = self.read_site_header(&self.nginx_app_file(app))? else {
            return Ok(None);
        };
        // A file from an older agent routes to the slot its header names; the next switch
        // replaces it.
        if header.legacy_slot.is_some() {
            return Ok(header.legacy_slot);
        }
        let link = self.nginx_live_link(app);
        let target = match fs_err::read_link(&link) {
            Ok(target) => target,
            // Lost (nginx fails the app's requests meanwhile): the next deploy makes a new one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        target
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.split('.').nth(1))
            .and_then(|slot| slot.parse().ok())
            .map(Some)
            .ok_or_else(|| WebError::State {
                path: link,
                reason: format!(
                    "points at {}, not at a slot dir named APP.SLOT.PORT",
                    target.display()
                ),
            })
    }

    /// Apps this stack knows of: served by nginx or with an Apache slot dir. A reconcile loop
    /// removes those the index no longer lists.
    pub fn known_apps(&self) -> Result<BTreeSet<String>, WebError> {
        let mut apps: BTreeSet<String> = self.served_apps()?.into_keys().collect();
        for entry in fs_err::read_dir(self.apache_dir())? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str()
                && validate::app_name(name).is_ok()
            {
                apps.insert(name.to_owned());
            }
        }
        Ok(apps)
    }

    /// Apps with an nginx file, and whether each is the default server.
    pub(super) fn served_apps(&self) -> Result<BTreeMap<String, bool>, WebError> {
        let mut apps = BTreeMap::new();
        for entry in fs_err::read_dir(self.nginx_apps_dir())? {
            let path = entry?.path();
            let Some(app) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".conf"))
            else {
                continue;
            };
            if validate::app_name(app).is_err() {
                continue;
            }
            let default = self
                .read_site_header(&path)?
                .is_some_and(|h| h.default_server);
            apps.insert(app.to_owned(), default);
        }
        Ok(apps)
    }

    pub(super) fn read_site_header(&self, path: &Path) -> Result<Option<SiteHeader>, WebError> {
        let text = match fs_err::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        SiteHeader::parse(&text)
            .map(Some)
            .ok_or_else(|| WebError::State {
                path: path.to_owned(),
                reason: format!("first line is not a `{SITE_HEADER} default=…` header"),
            })
    }
}

/// The first line of an app's nginx file: `# milky-site: default=false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SiteHeader {
    pub(super) default_server: bool,
    /// The app answers HTTPS (`tls = "acme"` or `"provided"`).
    pub(super) https: bool,
    /// The live slot, named only by the header of an older agent's file (`# milky-live: slot=…`).
    pub(super) legacy_slot: Option<Slot>,
}

impl SiteHeader {
    pub(super) fn line(&self) -> String {
        format!(
            "{SITE_HEADER} default={} https={}",
            self.default_server, self.https
        )
    }

    fn parse(text: &str) -> Option<SiteHeader> {
        let first = text.lines().next()?;
        let (rest, legacy) = match first.strip_prefix(SITE_HEADER) {
            Some(rest) => (rest, false),
            None => (first.strip_prefix(LEGACY_HEADER)?, true),
        };
        let mut header = SiteHeader {
            default_server: false,
            https: false,
            legacy_slot: None,
        };
        for pair in rest.split_whitespace() {
            match pair.split_once('=')? {
                ("slot", v) if legacy => header.legacy_slot = Some(v.parse().ok()?),
                ("default", v) => header.default_server = v == "true",
                ("https", v) => header.https = v == "true",
                _ => {}
            }
        }
        (!legacy || header.legacy_slot.is_some()).then_some(header)
    }
}

#[cfg(test)]
mod tests {
    use super::super::stack::test_stack;
    use super::*;

    fn write_site_file(stack: &WebStack, app: &str, first_line: &str) {
        fs_err::write(
            stack.nginx_app_file(app),
            format!("{first_line}\nserver {{}}\n"),
        )
        .unwrap();
    }

    #[test]
    fn the_live_slot_is_where_the_link_nginx_follows_leads() {
        let (_dir, stack) = test_stack();
        assert_eq!(stack.live_slot("shop").unwrap(), None, "not served");
        write_site_file(&stack, "shop", "# milky-site: default=false");
        assert_eq!(stack.live_slot("shop").unwrap(), None, "no link yet");
        let slot_dir = stack.nginx_slot_dir("shop", Slot::Green, 8102);
        stack.point_live_link("shop", &slot_dir).unwrap();
        assert_eq!(stack.live_slot("shop").unwrap(), Some(Slot::Green));
        // Relative, so the root may move.
        assert_eq!(
            fs_err::read_link(stack.nginx_live_link("shop")).unwrap(),
            Path::new("../slots/shop.green.8102")
        );
        stack
            .point_live_link("shop", &stack.nginx_slot_dir("shop", Slot::Blue, 8101))
            .unwrap();
        assert_eq!(stack.live_slot("shop").unwrap(), Some(Slot::Blue));
    }

    #[test]
    fn an_older_agents_file_names_the_live_slot_itself() {
        let (_dir, stack) = test_stack();
        write_site_file(
            &stack,
            "shop",
            "# milky-live: slot=green port=8102 default=false",
        );
        assert_eq!(stack.live_slot("shop").unwrap(), Some(Slot::Green));
    }

    #[test]
    fn a_link_or_file_the_agent_did_not_write_is_an_error_naming_it() {
        let (_dir, stack) = test_stack();
        write_site_file(&stack, "shop", "# milky-site: default=false");
        let link = stack.nginx_live_link("shop");
        std::os::unix::fs::symlink("/var/www", &link).unwrap();
        assert!(matches!(
            stack.live_slot("shop"),
            Err(WebError::State { path, .. }) if path == link
        ));
        write_site_file(&stack, "blog", "server {}");
        let file = stack.nginx_app_file("blog");
        assert!(matches!(
            stack.live_slot("blog"),
            Err(WebError::State { path, .. }) if path == file
        ));
    }

    #[test]
    fn served_and_known_apps_are_read_from_the_dirs() {
        let (_dir, stack) = test_stack();
        write_site_file(&stack, "shop", "# milky-site: default=true");
        write_site_file(&stack, "blog", "# milky-site: default=false");
        // Not app files: a candidate left by a failed test, a bad name, another suffix.
        for name in ["api.conf.new", "Bad.conf", "notes.txt"] {
            fs_err::write(stack.nginx_apps_dir().join(name), "").unwrap();
        }
        fs_err::create_dir_all(stack.app_dir("api")).unwrap();
        fs_err::create_dir_all(stack.apache_dir().join("Not an app")).unwrap();
        assert_eq!(
            stack.served_apps().unwrap(),
            BTreeMap::from([("blog".to_owned(), false), ("shop".to_owned(), true)])
        );
        assert_eq!(
            stack.known_apps().unwrap(),
            BTreeSet::from(["api", "blog", "shop"].map(str::to_owned))
        );
    }

    #[test]
    fn site_header_round_trips_and_reads_the_legacy_one() {
        let h = SiteHeader {
            default_server: true,
            https: true,
            legacy_slot: None,
        };
        assert_eq!(
            SiteHeader::parse(&format!("{}\nserver …", h.line())),
            Some(h)
        );
        assert_eq!(SiteHeader::parse("upstream x {}"), None);
        assert_eq!(
            SiteHeader::parse("# milky-live: slot=green port=8102 default=false\n"),
            Some(SiteHeader {
                default_server: false,
                https: false,
                legacy_slot: Some(Slot::Green),
            })
        );
        assert_eq!(
            SiteHeader::parse("# milky-live: port=8102 default=false"),
            None
        );
    }
}
