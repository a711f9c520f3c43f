//! The loopback ports of the Apache slots: fixed in the settings, or handed out once per app
//! from the settings' range and recorded in `ROOT/ports.toml`, so they stay stable across agent
//! runs (the slot dirs nginx follows are named by them).

use std::collections::{BTreeMap, BTreeSet};

use super::process::{listening, write_atomic};
use super::{Slot, WebError, WebStack, validate};

impl WebStack {
    /// The loopback port of a slot: fixed in the settings, or handed out once from the range and
    /// recorded in `ROOT/ports.toml`.
    pub fn slot_port(&self, app: &str, slot: Slot) -> Result<u16, WebError> {
        validate::app_name(app)?;
        let ports = &self.settings.slot_ports;
        if let Some(pair) = ports.fixed.get(app) {
            return Ok(pair[slot.index()]);
        }
        let mut given = self.read_ports()?;
        if let Some(pair) = given.get(app) {
            return Ok(pair[slot.index()]);
        }
        let used: BTreeSet<u16> = given
            .values()
            .chain(ports.fixed.values())
            .flatten()
            .copied()
            .collect();
        let pair = (ports.first..ports.last)
            .step_by(2)
            .map(|p| [p, p + 1])
            .find(|pair| pair.iter().all(|p| !used.contains(p) && !listening(*p)))
            .ok_or_else(|| WebError::NoSlotPorts {
                app: app.to_owned(),
                first: ports.first,
                last: ports.last,
            })?;
        given.insert(app.to_owned(), pair);
        self.write_ports(&given)?;
        Ok(pair[slot.index()])
    }

    /// Gives `app`'s pair back to the range (a removed app).
    pub(super) fn free_slot_ports(&self, app: &str) -> Result<(), WebError> {
        let mut ports = self.read_ports()?;
        if ports.remove(app).is_some() {
            self.write_ports(&ports)?;
        }
        Ok(())
    }

    fn read_ports(&self) -> Result<BTreeMap<String, [u16; 2]>, WebError> {
        let path = self.ports_file();
        match fs_err::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| WebError::State {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e.into()),
        }
    }

    fn write_ports(&self, ports: &BTreeMap<String, [u16; 2]>) -> Result<(), WebError> {
        let text = toml::to_string(ports).map_err(|e| WebError::State {
            path: self.ports_file(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.ports_file(), &text)
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::path::Path;

    use super::super::{SlotPorts, WebSettings};
    use super::*;

    /// A stack on `root` handing out ports from `first..=last`, with `fixed` pairs.
    fn stack(root: &Path, first: u16, last: u16, fixed: &[(&str, [u16; 2])]) -> WebStack {
        let mut settings = WebSettings::new(root, "127.0.0.1:9".parse().unwrap());
        settings.slot_ports = SlotPorts {
            fixed: fixed.iter().map(|(a, p)| ((*a).to_owned(), *p)).collect(),
            first,
            last,
        };
        WebStack::new(settings).unwrap()
    }

    /// A port the kernel just handed out, so most likely nothing listens there or next to it.
    fn quiet_port() -> u16 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        port.min(60_000)
    }

    #[test]
    fn a_pair_is_handed_out_once_recorded_and_freed() {
        let dir = tempfile::tempdir().unwrap();
        let first = quiet_port();
        let stack = stack(dir.path(), first, first + 99, &[]);
        let blue = stack.slot_port("shop", Slot::Blue).unwrap();
        let green = stack.slot_port("shop", Slot::Green).unwrap();
        assert_eq!(green, blue + 1);
        assert!((first..=first + 99).contains(&blue) && (blue - first).is_multiple_of(2));
        let blog = stack.slot_port("blog", Slot::Blue).unwrap();
        assert!(blog != blue && blog != green, "apps share no port");

        // Recorded: another agent run on the same root reads the same pairs.
        let again = WebStack::new(stack.settings().clone()).unwrap();
        assert_eq!(again.slot_port("shop", Slot::Green).unwrap(), green);
        let recorded: BTreeMap<String, [u16; 2]> =
            toml::from_str(&fs_err::read_to_string(dir.path().join("ports.toml")).unwrap())
                .unwrap();
        assert_eq!(recorded.get("shop"), Some(&[blue, green]));
        assert_eq!(recorded.len(), 2);

        again.free_slot_ports("shop").unwrap();
        let recorded: BTreeMap<String, [u16; 2]> =
            toml::from_str(&fs_err::read_to_string(dir.path().join("ports.toml")).unwrap())
                .unwrap();
        assert_eq!(recorded.keys().collect::<Vec<_>>(), ["blog"]);
        // Freeing an app that has none is a no-op.
        again.free_slot_ports("shop").unwrap();
    }

    #[test]
    fn fixed_pairs_win_and_are_never_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let first = quiet_port();
        let stack = stack(dir.path(), first, first + 3, &[("api", [first, first + 1])]);
        assert_eq!(stack.slot_port("api", Slot::Green).unwrap(), first + 1);
        assert_eq!(stack.slot_port("shop", Slot::Blue).unwrap(), first + 2);
        // The fixed app is not recorded: the settings are its record.
        let text = fs_err::read_to_string(dir.path().join("ports.toml")).unwrap();
        assert!(!text.contains("api"), "{text}");
    }

    #[test]
    fn a_port_something_listens_on_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let first = taken.local_addr().unwrap().port();
        let stack = stack(dir.path(), first, first.saturating_add(41), &[]);
        let blue = stack.slot_port("shop", Slot::Blue).unwrap();
        assert!(
            blue != first && blue + 1 != first,
            "{blue} vs taken {first}"
        );
    }

    #[test]
    fn an_exhausted_range_is_an_error_naming_the_app() {
        let dir = tempfile::tempdir().unwrap();
        let stack = stack(dir.path(), 8100, 8101, &[("api", [8100, 8101])]);
        let err = stack.slot_port("shop", Slot::Blue).unwrap_err();
        assert!(
            matches!(&err, WebError::NoSlotPorts { app, first: 8100, last: 8101 } if app == "shop"),
            "{err}"
        );
    }

    #[test]
    fn a_broken_ports_file_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let stack = stack(dir.path(), 8100, 8999, &[]);
        let path = dir.path().join("ports.toml");
        fs_err::write(&path, "shop = not a pair").unwrap();
        let err = stack.slot_port("blog", Slot::Blue).unwrap_err();
        assert!(
            matches!(&err, WebError::State { path: p, .. } if *p == path),
            "{err}"
        );
        assert_eq!(fs_err::read_to_string(&path).unwrap(), "shop = not a pair");
    }

    #[test]
    fn app_names_are_checked_before_any_file_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let stack = stack(dir.path(), 8100, 8999, &[]);
        assert!(matches!(
            stack.slot_port("../etc", Slot::Blue),
            Err(WebError::Invalid { .. })
        ));
        assert!(!dir.path().join("ports.toml").exists());
    }
}
