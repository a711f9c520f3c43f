//! Health checks of a slot, straight to its port (not through nginx), so a release is checked
//! before any client can reach it.

use std::time::{Duration, Instant};

use super::process::log_excerpt;
use super::{Slot, WebError, WebStack, validate};

/// What a passing health check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub url: String,
    pub status: u16,
    pub version: Option<String>,
    pub attempts: u32,
    pub elapsed: Duration,
}

impl WebStack {
    /// GETs `path` directly from the slot (not through nginx), with the app's first server name as
    /// `Host`, retrying until `Timeouts::health`. Passes on a 2xx whose `X-Milky-Version` header
    /// equals `expected_version` (when given): a version check, so an answer from some other
    /// release can never pass for the new one.
    pub fn health_check(
        &self,
        app: &str,
        slot: Slot,
        path: &str,
        expected_version: Option<&str>,
    ) -> Result<HealthReport, WebError> {
        validate::url_path("health check path", path)?;
        let info = self
            .slot_info(app, slot)?
            .ok_or_else(|| WebError::SlotNotRunning {
                app: app.to_owned(),
                slot,
            })?;
        let url = format!("http://127.0.0.1:{}{path}", info.port);
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .redirects(0)
            .build();
        let started = Instant::now();
        let mut attempts = 0;
        let last = loop {
            if !self.is_running(app, slot)? {
                break "Apache is not running".to_owned();
            }
            attempts += 1;
            let failure = match agent.get(&url).set("Host", &info.server_name).call() {
                Ok(resp) if (200..300).contains(&resp.status()) => {
                    let version = resp.header("X-Milky-Version").map(str::to_owned);
                    match expected_version {
                        Some(want) if version.as_deref() != Some(want) => {
                            format!("answered version {version:?}, expected {want:?}")
                        }
                        _ => {
                            return Ok(HealthReport {
                                url,
                                status: resp.status(),
                                version,
                                attempts,
                                elapsed: started.elapsed(),
                            });
                        }
                    }
                }
                Ok(resp) => {
                    let location = resp.header("Location").map(str::to_owned);
                    let code = resp.status();
                    with_hint(
                        format!("HTTP {code}"),
                        explain(code, location.as_deref(), &info.server_name, path),
                    )
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let location = resp.header("Location").map(str::to_owned);
                    let body = resp.into_string().unwrap_or_default();
                    let excerpt: String = body.chars().take(300).collect();
                    with_hint(
                        format!("HTTP {code}: {}", excerpt.trim()),
                        explain(code, location.as_deref(), &info.server_name, path),
                    )
                }
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= self.settings.timeouts.health {
                break failure;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        Err(WebError::Unhealthy {
            app: app.to_owned(),
            slot,
            url,
            attempts,
            elapsed: started.elapsed(),
            last,
            log: log_excerpt(&self.slot_error_log(app, slot)),
        })
    }
}

fn with_hint(failure: String, hint: String) -> String {
    if hint.is_empty() {
        failure
    } else {
        format!("{failure}\n  {hint}")
    }
}

/// What a failing answer most likely means for a Django app, and what to change, so a first
/// deploy that fails says how to fix it. Empty when there is nothing useful to add.
fn explain(status: u16, location: Option<&str>, host: &str, path: &str) -> String {
    match status {
        300..=399 => {
            let hint = match location {
                Some(l) if l.starts_with("https://") => {
                    "the app redirects to HTTPS (Django's SECURE_SSL_REDIRECT), and the health check asks over plain HTTP on loopback, as nginx forwards plain HTTP. Turn SECURE_SSL_REDIRECT off until the app is served over HTTPS, or exempt the health path (SECURE_REDIRECT_EXEMPT = [r\"^health/$\"]); behind a TLS proxy also set SECURE_PROXY_SSL_HEADER = (\"HTTP_X_FORWARDED_PROTO\", \"https\")".to_owned()
                }
                Some(l) if !path.ends_with('/') && l.ends_with(&format!("{path}/")) => {
                    format!("Django adds a slash (APPEND_SLASH): set health = \"{path}/\" under [app] in milky.toml")
                }
                Some(l) if l.contains("login") => "the health path needs a login: point health under [app] in milky.toml at a page anyone may read".to_owned(),
                Some(l) if l.contains("://www.") => "Django adds www. (PREPEND_WWW): list that name in server_names under [app] in milky.toml".to_owned(),
                _ => format!("point health under [app] in milky.toml at a URL that answers 200 (it is {path})"),
            };
            format!(
                "redirect to {}: {hint}",
                location.unwrap_or("nowhere (no Location header)")
            )
        }
        400 => format!(
            "Django answers 400 to a Host it does not allow (DisallowedHost): the health check sent Host: {host}. Add it to ALLOWED_HOSTS, or list the names the app answers to in server_names under [app] in milky.toml (the first is the health check's Host)"
        ),
        404 => format!(
            "no page at {path}: set health under [app] in milky.toml to a URL that answers 200"
        ),
        500..=599 => "the app failed while answering: its error log is below".to_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::sync::mpsc;

    use super::super::{SlotInfo, WebSettings};
    use super::*;

    /// A stack whose `shop` blue slot "runs" (its pid file names this test process) on the
    /// port of a small HTTP server that answers every request with `status` and `version`. The
    /// server sends the `Host` of each request it gets down the channel.
    fn stack_with_slot(
        root: &std::path::Path,
        status: &'static str,
        version: &'static str,
    ) -> (WebStack, mpsc::Receiver<String>) {
        let mut settings = WebSettings::new(root, "127.0.0.1:9".parse().unwrap());
        // One attempt: these tests are about what an answer means, not about retrying.
        settings.timeouts.health = Duration::ZERO;
        let stack = WebStack::new(settings).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (hosts, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut host = String::new();
                for line in BufReader::new(&stream).lines() {
                    let line = line.unwrap();
                    if let Some(h) = line.strip_prefix("Host: ") {
                        host = h.to_owned();
                    }
                    if line.is_empty() {
                        break;
                    }
                }
                let _ = hosts.send(host);
                let answer = format!(
                    "HTTP/1.1 {status}\r\nX-Milky-Version: {version}\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody"
                );
                stream.write_all(answer.as_bytes()).unwrap();
            }
        });
        let info = SlotInfo {
            app: "shop".to_owned(),
            slot: Slot::Blue,
            port,
            release_dir: PathBuf::from("/srv/shop/1.0"),
            server_name: "shop.example".to_owned(),
        };
        fs_err::create_dir_all(stack.slot_dir("shop", Slot::Blue).join("run")).unwrap();
        fs_err::write(
            stack.slot_info_file("shop", Slot::Blue),
            toml::to_string(&info).unwrap(),
        )
        .unwrap();
        fs_err::write(
            stack.slot_pid_file("shop", Slot::Blue),
            std::process::id().to_string(),
        )
        .unwrap();
        (stack, seen)
    }

    #[test]
    fn the_expected_version_passes_and_is_asked_for_by_server_name() {
        let dir = tempfile::tempdir().unwrap();
        let (stack, hosts) = stack_with_slot(dir.path(), "200 OK", "1.0");
        let report = stack
            .health_check("shop", Slot::Blue, "/health/", Some("1.0"))
            .unwrap();
        assert_eq!(report.status, 200);
        assert_eq!(report.version.as_deref(), Some("1.0"));
        assert_eq!(report.attempts, 1);
        assert!(report.url.ends_with("/health/"), "{}", report.url);
        assert_eq!(hosts.recv().unwrap(), "shop.example");
    }

    #[test]
    fn another_version_or_an_error_status_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (stack, _hosts) = stack_with_slot(dir.path(), "200 OK", "0.9");
        let err = stack
            .health_check("shop", Slot::Blue, "/", Some("1.0"))
            .unwrap_err();
        assert!(
            matches!(&err, WebError::Unhealthy { last, .. } if last.contains("\"0.9\"")),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let (stack, _hosts) = stack_with_slot(dir.path(), "500 Internal Server Error", "1.0");
        let err = stack
            .health_check("shop", Slot::Blue, "/", None)
            .unwrap_err();
        assert!(
            matches!(&err, WebError::Unhealthy { last, .. } if last.starts_with("HTTP 500") && last.contains("body")),
            "{err}"
        );
    }

    #[test]
    fn failing_answers_say_what_to_change() {
        let https = explain(301, Some("https://shop.example/"), "shop.example", "/");
        assert!(https.contains("https://shop.example/"), "{https}");
        assert!(https.contains("SECURE_SSL_REDIRECT"), "{https}");
        let slash = explain(301, Some("/health/"), "shop.example", "/health");
        assert!(
            slash.contains("APPEND_SLASH") && slash.contains("\"/health/\""),
            "{slash}"
        );
        let login = explain(302, Some("/accounts/login/?next=/"), "h", "/");
        assert!(login.contains("login"), "{login}");
        let host = explain(400, None, "proj", "/");
        assert!(
            host.contains("ALLOWED_HOSTS") && host.contains("Host: proj"),
            "{host}"
        );
        assert!(explain(404, None, "h", "/up").contains("/up"));
        assert!(explain(503, None, "h", "/").contains("error log"));
        assert_eq!(explain(200, None, "h", "/"), "");
    }

    #[test]
    fn a_redirect_fails_and_names_where_it_pointed() {
        let dir = tempfile::tempdir().unwrap();
        let (stack, _hosts) = stack_with_slot(dir.path(), "301 Moved Permanently", "1.0");
        let err = stack
            .health_check("shop", Slot::Blue, "/", Some("1.0"))
            .unwrap_err();
        assert!(
            matches!(&err, WebError::Unhealthy { last, .. } if last.starts_with("HTTP 301") && last.contains("redirect to")),
            "{err}"
        );
    }

    #[test]
    fn a_slot_that_does_not_run_is_not_asked() {
        let dir = tempfile::tempdir().unwrap();
        let (stack, hosts) = stack_with_slot(dir.path(), "200 OK", "1.0");
        fs_err::remove_file(stack.slot_pid_file("shop", Slot::Blue)).unwrap();
        let err = stack
            .health_check("shop", Slot::Blue, "/", None)
            .unwrap_err();
        assert!(
            matches!(&err, WebError::Unhealthy { attempts: 0, last, .. } if last == "Apache is not running"),
            "{err}"
        );
        assert!(hosts.try_recv().is_err(), "no request was made");
        assert!(matches!(
            stack.health_check("shop", Slot::Green, "/", None),
            Err(WebError::SlotNotRunning { .. })
        ));
        assert!(matches!(
            stack.health_check("shop", Slot::Blue, "no-slash", None),
            Err(WebError::Invalid { .. })
        ));
    }
}
