//! Stopping the old slot: a request held open on it bounds the stop by `[web] stop_timeout`,
//! then the slot is killed.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use milky_agent::web::{AppSite, Slot, WebStack};
use milky_dev_support::{alive, group_alive};

use crate::support::{TestStack, get, overlay_release, shared_release};

/// Log lines of the code run under [`capture_log`].
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with its log (tracing) captured; returns its result and the log.
fn capture_log<T>(f: impl FnOnce() -> T) -> (T, String) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    (result, log)
}

/// A WSGI app whose `/slow` answers after ten minutes: a request held open on the old slot, as a
/// long download, a stream or a long poll would.
const HOLDING_APP: &str = r#"import time

def application(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        time.sleep(600)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"#;

/// (h) A request still running on the old slot holds its stop no longer than `stop_timeout`:
/// then the slot is killed, Apache and mod_wsgi's daemons, and a warning says what was open.
#[test]
fn a_request_held_open_on_the_old_slot_bounds_its_stop() {
    let t = TestStack::new(&["hold"]);
    let mut settings = t.stack.settings().clone();
    settings.timeouts.drain = Duration::from_secs(2);
    settings.timeouts.stop = Duration::from_secs(4);
    let stack = WebStack::new(settings).unwrap_or_else(|e| panic!("{e}"));
    let shared = shared_release("v1");
    let holding_site = |name: &str| {
        let release = overlay_release(
            t.root.path(),
            name,
            &shared,
            &[("hold_wsgi.py", HOLDING_APP)],
        );
        let mut site = AppSite::new("hold", "hold.test", &release, "hold_wsgi.py");
        site.venv_dir = shared.join("venv");
        site
    };
    let deploy = |site: &AppSite, slot: Slot| {
        stack
            .start_slot(site, slot)
            .unwrap_or_else(|e| panic!("{e}"));
        stack
            .health_check("hold", slot, "/", None)
            .unwrap_or_else(|e| panic!("{e}"));
        stack
            .switch_nginx(site, slot)
            .unwrap_or_else(|e| panic!("{e}"));
    };
    deploy(&holding_site("one"), Slot::Blue);
    let blue = stack
        .slot_pid("hold", Slot::Blue)
        .unwrap()
        .expect("blue runs");
    let blue_port = stack.slot_port("hold", Slot::Blue).unwrap();

    // A request through nginx that the old slot is still answering when the switch comes.
    let mut held = std::net::TcpStream::connect(("127.0.0.1", t.front())).unwrap();
    write!(held, "GET /slow HTTP/1.1\r\nHost: hold.test\r\n\r\n").unwrap();
    let reached = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        open_connections(blue_port) > 0
    });
    assert!(reached, "the held request never reached the blue slot");

    deploy(&holding_site("two"), Slot::Green);
    let (stopped, log) = capture_log(|| stack.stop_slot("hold", Slot::Blue));
    eprintln!("{log}");
    stopped.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        log.contains("the old slot did not stop within 4s ([web] stop_timeout): 1 connection(s) to it still open"),
        "no warning of the bound in:\n{log}"
    );
    assert!(!alive(blue), "blue's Apache {blue} still runs");
    assert!(
        !group_alive(blue),
        "processes of blue's group {blue} (Apache's workers, mod_wsgi's daemons) still run"
    );
    assert!(!stack.is_running("hold", Slot::Blue).unwrap());
    assert_eq!(open_connections(blue_port), 0);
    // Green serves.
    let r = get(t.front(), "hold.test", "/");
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
}

/// Established TCP connections to local `port` (from /proc/net/tcp and tcp6).
fn open_connections(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local = fields
                        .get(1)
                        .and_then(|l| l.rsplit_once(':'))
                        .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
                    local == Some(port) && fields.get(3) == Some(&"01")
                })
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .count()
}
