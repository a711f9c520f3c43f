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
                Ok(resp) => format!("HTTP {}", resp.status()),
                Err(ureq::Error::Status(code, resp)) => {
                    let body = resp.into_string().unwrap_or_default();
                    let excerpt: String = body.chars().take(300).collect();
                    format!("HTTP {code}: {}", excerpt.trim())
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
