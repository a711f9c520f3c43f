//! A web stack on its own temp root and ports that cleans up after itself.

use std::time::Duration;

use milky_agent::web::{AppSite, Slot, SlotPorts, Timeouts, WebSettings, WebStack};
use milky_dev_support::Ports;

use super::{require_tools, temp_root};

/// A [`WebStack`] on its own temp root and ports. On drop it ends the nginx and Apache processes
/// whose pid files are under its root, and nothing else.
pub struct TestStack {
    pub stack: WebStack,
    pub root: tempfile::TempDir,
    /// The front port and the apps' slot ports, held while nginx and Apache may bind them.
    _ports: Ports,
}

impl TestStack {
    pub fn new(apps: &[&str]) -> Self {
        require_tools();
        let root = temp_root("milky-web-");
        // One block: the front, then two slot ports per app.
        let count = u16::try_from(1 + 2 * apps.len()).expect("a few apps");
        let ports = Ports::reserve(count).expect("reserve ports");
        let front = std::net::SocketAddr::from(([127, 0, 0, 1], ports.first()));
        let mut settings = WebSettings::new(root.path().join("web"), front);
        settings.slot_ports = SlotPorts {
            fixed: (1..)
                .step_by(2)
                .zip(apps)
                .map(|(i, a)| (a.to_string(), [ports.get(i), ports.get(i + 1)]))
                .collect(),
            ..SlotPorts::default()
        };
        settings.nginx_worker_processes = 2;
        settings.timeouts = Timeouts {
            start: Duration::from_secs(20),
            health: Duration::from_secs(20),
            drain: Duration::from_secs(10),
            stop: Duration::from_secs(10),
            command: Duration::from_secs(60),
        };
        let stack = WebStack::new(settings).unwrap_or_else(|e| panic!("{e}"));
        TestStack {
            stack,
            root,
            _ports: ports,
        }
    }

    pub fn front(&self) -> u16 {
        self.stack.settings().front.port()
    }

    /// Start, health-check, switch: what the agent does for a new release.
    pub fn deploy(&self, site: &AppSite, slot: Slot, version: &str) {
        self.stack
            .start_slot(site, slot)
            .unwrap_or_else(|e| panic!("{e}"));
        self.stack
            .health_check(&site.name, slot, "/health", Some(version))
            .unwrap_or_else(|e| panic!("{e}"));
        self.stack
            .switch_nginx(site, slot)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn pids(&self) -> Vec<u32> {
        let mut files = vec![self.stack.nginx_prefix().join("nginx.pid")];
        if let Ok(apps) = std::fs::read_dir(self.root.path().join("web/apache")) {
            for app in apps.flatten() {
                for slot in ["blue", "green"] {
                    files.push(app.path().join(slot).join("run/httpd.pid"));
                }
            }
        }
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        milky_dev_support::stop(&self.pids(), Duration::from_secs(10));
    }
}
