//! Certificates from an ACME CA (`tls = "acme"`) for a group of two servers: ordered once for
//! the group by the server holding the lease, its HTTP-01 answers served by the other server
//! too (the CA validates there), installed by both; renewed on request under a request loop
//! without a failed request; and when the CA is down, the current certificate serves on and
//! status says why. Real Pebble (Let's Encrypt's test CA) with its DNS server, real store,
//! nginx, Apache mod_wsgi, Django; agents as services (`run`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use milky_dev_support::{Pebble, Ports};
use milky_tests::agent::{Agent, Services};
use milky_tests::django::fixture_project;
use milky_tests::*;

mod renewal;

const APP: &str = "shop";
const NAME: &str = "app.milky.test";
const CERT: &str = "web/nginx/tls/shop.crt";

/// Waits up to `limit` for `done`, failing with `what` and `context()`.
fn wait_until(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "{what}, never happened:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One HTTPS GET of `NAME` at `127.0.0.1:port`, trusting only `root`: the status code.
fn https_get(port: u16, root: &Path) -> Option<u16> {
    let out = Command::new("curl")
        .args(["--silent", "--max-time", "10", "--output", "/dev/null"])
        .args(["--write-out", "%{http_code}", "--cacert"])
        .arg(root)
        .args(["--resolve", &format!("{NAME}:{port}:127.0.0.1")])
        .arg(format!("https://{NAME}:{port}/"))
        .output()
        .expect("run curl (apt install curl)");
    out.status
        .success()
        .then(|| stdout(&out).trim().parse().ok())
        .flatten()
}

fn installed(agent: &Agent) -> Option<String> {
    std::fs::read_to_string(agent.root.join(CERT)).ok()
}

fn service_logs(agents: &[&Agent]) -> String {
    agents
        .iter()
        .map(|a| {
            let log = std::fs::read_to_string(a.root.join("service.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            format!(
                "--- {}:\n{}",
                a.host,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A key and self-signed certificate for Pebble's own HTTPS listener at 127.0.0.1.
fn pebble_listener_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.join("pebble-cert.pem"), dir.join("pebble-key.pem"));
    write(&cert_file, &cert.pem());
    write(&key_file, &key.serialize_pem());
    (cert_file, key_file)
}

/// Adds HTTPS on `port` and an `[acme]` section for `pebble` (plus `extra` settings) to
/// `agent`'s config.
fn configure(agent: &Agent, port: u16, pebble: &Pebble, listener_cert: &Path, extra: &str) {
    let text = std::fs::read_to_string(&agent.config).unwrap().replacen(
        "[web]\n",
        &format!("[web]\nhttps_listen = \"127.0.0.1:{port}\"\n"),
        1,
    );
    let acme = format!(
        "\n[acme]\ndirectory = \"{}\"\nca_roots = \"{}\"\ncontact = [\"mailto:ops@milky.test\"]\n{extra}",
        pebble.directory,
        listener_cert.display()
    );
    write(&agent.config, &format!("{text}{acme}"));
}

/// Uploads `APP` v1 with `tls = "acme"` for `NAME` to `stable`.
fn upload_acme_app(ctx: &TestContext) {
    let project = fixture_project(ctx.dir.path(), APP, "v1");
    assert_success(
        &ctx.milky_in(&project, &["init", "--yes", "--name", APP]),
        "init",
    );
    let manifest = project.join("milky.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replacen(
        "[app]\n",
        &format!("[app]\nserver_names = [\"{NAME}\"]\ntls = \"acme\"\n"),
        1,
    );
    write(&manifest, &text);
    ctx.upload(&project, "stable", "v1");
}

/// Pebble's root, which its certificates chain to, written to `dir/pebble-root.pem`.
fn pebble_root(pebble: &Pebble, listener_cert: &Path, dir: &Path) -> PathBuf {
    let root_file = dir.join("pebble-root.pem");
    let root = Command::new("curl")
        .args(["--silent", "--show-error", "--cacert"])
        .arg(listener_cert)
        .arg(format!("https://{}/roots/0", pebble.management))
        .output()
        .unwrap();
    assert_success(&root, "Pebble's root");
    write(&root_file, &stdout(&root));
    root_file
}

/// The group of every ordering test: `stable` with web-1 and web-2, each with HTTPS on a port
/// of its own and an `[acme]` section for one Pebble, which validates at web-2's nginx. web-2
/// has reported once (live, nothing to serve yet) and `APP` v1 is uploaded with
/// `tls = "acme"`; no agent runs yet.
struct Group {
    // Fields drop in this order: the servers stop before the context removes their directory.
    web1: Agent,
    web2: Agent,
    pebble: Pebble,
    /// Pebble's root, which its certificates chain to.
    root: PathBuf,
    /// web-1's and web-2's HTTPS ports.
    ports: [u16; 2],
    _https: Ports,
    ctx: TestContext,
}

impl Group {
    /// Sets the group up, `acme` (TOML lines) added to each server's `[acme]` section, with a
    /// Pebble issuing certificates valid for `pebble_validity` (`None`: Pebble's default).
    fn start(acme: &str, pebble_validity: Option<Duration>) -> Self {
        let ctx = TestContext::new();
        let dir = ctx.dir.path();
        let (web1, web2) = (
            Agent::new(&ctx, "stable", "web-1"),
            Agent::new(&ctx, "stable", "web-2"),
        );
        let (listener_cert, listener_key) = pebble_listener_cert(dir);
        let pebble = Pebble::start_with_validity(
            dir,
            &listener_cert,
            &listener_key,
            web2.front,
            pebble_validity,
        )
        .unwrap();
        let https = Ports::reserve(2).expect("ports for HTTPS");
        let ports = [https.first(), https.last()];
        for (agent, port) in [(&web1, ports[0]), (&web2, ports[1])] {
            configure(agent, port, &pebble, &listener_cert, acme);
        }
        let _ = web2.sync();
        upload_acme_app(&ctx);
        let root = pebble_root(&pebble, &listener_cert, dir);
        Self {
            web1,
            web2,
            pebble,
            root,
            ports,
            _https: https,
            ctx,
        }
    }

    /// Each server with its HTTPS port.
    fn servers(&self) -> [(&Agent, u16); 2] {
        [(&self.web1, self.ports[0]), (&self.web2, self.ports[1])]
    }

    /// The group's ACME orders (`orders.toml`), empty before the first.
    fn orders(&self) -> String {
        String::from_utf8(
            self.ctx
                .object("groups/stable/acme/orders.toml")
                .unwrap_or_default(),
        )
        .unwrap()
    }

    /// The chain of the group's stored certificate, empty before the first.
    fn stored(&self) -> String {
        self.ctx
            .object("groups/stable/tls/shop.toml")
            .map(|bytes| {
                milky_core::tls::StoredCertificate::parse(&String::from_utf8_lossy(&bytes))
                    .unwrap()
                    .chain
            })
            .unwrap_or_default()
    }

    /// What a failed wait shows: the orders, both services' logs, Pebble's output.
    fn logs(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.orders(),
            service_logs(&[&self.web1, &self.web2]),
            self.pebble.output()
        )
    }

    /// Waits until both servers serve HTTPS with a certificate that chains to Pebble's root.
    fn serve_both(&self) {
        for (agent, port) in self.servers() {
            wait_until(
                Duration::from_secs(300),
                &format!("{} serves HTTPS with the CA's certificate", agent.host),
                || https_get(port, &self.root) == Some(200),
                || self.logs(),
            );
        }
    }
}

/// The HTTP-01 answers in `agent`'s challenge dir (token file names).
fn answered_tokens(agent: &Agent) -> Vec<String> {
    let mut tokens: Vec<String> = std::fs::read_dir(agent.root.join("web/nginx/acme-challenge"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    tokens.sort();
    tokens
}

/// HTTPS GETs on `ports` in a loop until dropped; counts the requests and the failed ones.
struct HttpsLoad {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpsLoad {
    fn start(ports: [u16; 2], root: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let thread = {
            let (stop, sent, failed, root) =
                (stop.clone(), sent.clone(), failed.clone(), root.to_owned());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    for port in ports {
                        sent.fetch_add(1, Ordering::SeqCst);
                        if https_get(port, &root) != Some(200) {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        };
        Self {
            stop,
            sent,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops the loop; (sent, failed).
    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        (
            self.sent.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

impl Drop for HttpsLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn acme_certificates_are_ordered_once_per_group_renewed_and_kept_when_the_ca_is_down() {
    // Pebble validates at web-2's nginx: web-1 orders, so the answers must have spread.
    let mut group = Group::start("challenge_wait = \"120s\"\n", None);
    let (ctx, web1, web2) = (&group.ctx, &group.web1, &group.web2);

    // web-1 alone starts.
    let mut services = Services::run(&[]);
    services.start(web1);
    wait_until(
        Duration::from_secs(240),
        "web-1 publishes the challenge answers",
        || group.orders().contains("[apps.shop.challenges]"),
        || group.logs(),
    );
    // web-1 waits for web-2's acknowledgement before the CA validates at web-2.
    services.start(web2);
    group.serve_both();
    assert_eq!(
        group.pebble.issued(),
        1,
        "one order for the group:\n{}",
        group.pebble.output()
    );
    let first = installed(web1).unwrap();
    assert_eq!(
        installed(web2).as_deref(),
        Some(first.as_str()),
        "the same certificate"
    );
    assert!(
        group.orders().contains("issued_by = \"web-1\""),
        "{}",
        group.orders()
    );
    assert!(
        !group.orders().contains("challenges"),
        "answers removed: {}",
        group.orders()
    );
    let account = ctx.object("groups/stable/acme/account.toml").unwrap();
    assert!(String::from_utf8_lossy(&account).contains(&group.pebble.directory));
    let key_mode = std::fs::metadata(web2.root.join("web/nginx/tls/shop.key"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
        0o600
    );

    // HTTP goes to HTTPS, except the challenges.
    for (agent, port) in group.servers() {
        let redirect = agent.get(NAME, "/?a=1");
        assert_eq!(redirect.status, 301, "{}", redirect.headers);
        assert_eq!(
            redirect.header("Location").as_deref(),
            Some(format!("https://{NAME}:{port}/?a=1").as_str())
        );
        write(
            &agent.root.join("web/nginx/acme-challenge/tok-1"),
            "tok-1.thumbprint",
        );
        let answer = agent.get(NAME, "/.well-known/acme-challenge/tok-1");
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "tok-1.thumbprint")
        );
    }

    // Renewal on request, under a request loop on both servers: no request fails.
    let load = HttpsLoad::start(group.ports, &group.root);
    assert_success(&ctx.milky(&["tls", "renew", "stable", APP]), "tls renew");
    wait_until(
        Duration::from_secs(300),
        "both servers install the renewed certificate",
        || {
            [web1, web2]
                .iter()
                .all(|a| installed(a).is_some_and(|c| c != first))
        },
        || group.logs(),
    );
    let (sent, failed) = load.finish();
    assert_eq!(group.pebble.issued(), 2, "{}", group.pebble.output());
    assert!(sent > 4, "the loop ran");
    assert_eq!(failed, 0, "no request failed during the renewal");
    let renewed = installed(web1).unwrap();
    assert!(
        !group.orders().contains("renew_requested"),
        "{}",
        group.orders()
    );

    // The CA is down: the order fails, the current certificate serves on, status says why.
    group.pebble.pause();
    assert_success(&ctx.milky(&["tls", "renew", "stable", APP]), "tls renew");
    let status_json = || {
        let out = ctx.milky(&["status", "stable", "--json"]);
        serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap_or_default()
    };
    wait_until(
        Duration::from_secs(240),
        "both servers report the failed renewal",
        || {
            let status = status_json();
            let hosts = status["stable"]["apps"][APP]["tls"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            hosts.len() == 2
                && hosts.iter().all(|h| {
                    h["renewal_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("next attempt"))
                })
        },
        || format!("{:#}\n{}", status_json(), group.orders()),
    );
    for (agent, port) in group.servers() {
        assert_eq!(
            https_get(port, &group.root),
            Some(200),
            "{} serves on",
            agent.host
        );
        assert_eq!(installed(agent).as_deref(), Some(renewed.as_str()));
    }
    let status = status_json();
    let web1_tls = &status["stable"]["apps"][APP]["tls"][0];
    assert_eq!(web1_tls["mode"], "acme", "{status:#}");
    assert_eq!(web1_tls["names"], serde_json::json!([NAME]), "{status:#}");
    assert!(web1_tls["expires"].is_string(), "{status:#}");
    let text = stdout(&ctx.milky(&["status", "stable"]));
    assert!(text.contains("tls renewal failed"), "{text}");
    assert!(
        text.contains(&format!("tls acme on web-1: {NAME} until")),
        "{text}"
    );
    assert!(
        group.orders().contains("failures = 1"),
        "{}",
        group.orders()
    );
    drop(services);
}
