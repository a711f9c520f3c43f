//! Pebble, Let's Encrypt's ACME test CA (Debian's `pebble` package), on loopback: with
//! `pebble-challtestsrv` as its DNS server, answering every A query with 127.0.0.1, so any test
//! name resolves to this machine and Pebble validates HTTP-01 at `127.0.0.1:http_port`.
//! Both are stopped by pid when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{Ports, wait_for_port};

/// A running Pebble (and its DNS server).
#[derive(Debug)]
pub struct Pebble {
    /// The ACME directory URL, `https://127.0.0.1:PORT/dir`.
    pub directory: String,
    /// Pebble's management address (`/roots/0` is the root its certificates chain to).
    pub management: SocketAddr,
    /// Pebble's output, where it logs each issued certificate.
    pub log: PathBuf,
    config: PathBuf,
    pebble: Option<Child>,
    dns: Child,
    _ports: Ports,
}

/// `pebble` on PATH, else an error naming the package.
fn program(name: &str) -> anyhow::Result<PathBuf> {
    crate::which(name).with_context(|| {
        format!("{name} is not installed (apt install pebble; `cargo xtask test` installs it)")
    })
}

impl Pebble {
    /// Starts Pebble in `dir` with `cert` and `key` (PEM) for its own HTTPS listener (they must
    /// name 127.0.0.1), validating HTTP-01 at `127.0.0.1:http_port`.
    pub fn start(dir: &Path, cert: &Path, key: &Path, http_port: u16) -> anyhow::Result<Self> {
        Self::start_with_validity(dir, cert, key, http_port, None)
    }

    /// [`Pebble::start`], issuing certificates valid for `validity` (whole seconds) instead of
    /// Pebble's default of 5 years (`certificateValidityPeriod` in its config, which Pebble
    /// 2.4, Debian's, reads): short enough that a test sees the renewal at a third of the
    /// lifetime.
    pub fn start_with_validity(
        dir: &Path,
        cert: &Path,
        key: &Path,
        http_port: u16,
        validity: Option<Duration>,
    ) -> anyhow::Result<Self> {
        program("pebble")?;
        let challtestsrv = program("pebble-challtestsrv")?;
        let ports = Ports::reserve(4)?;
        let dns = format!("127.0.0.1:{}", ports.get(2));
        let dns_child = Command::new(challtestsrv)
            .args([
                "-dns01",
                &dns,
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-management", &format!("127.0.0.1:{}", ports.get(3))])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting pebble-challtestsrv")?;
        let config = dir.join("pebble-config.json");
        let text = format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{acme}", "managementListenAddress": "127.0.0.1:{mgmt}",
  "certificate": "{cert}", "privateKey": "{key}", "httpPort": {http_port}, "tlsPort": 1,
  "ocspResponderURL": "", "externalAccountBindingRequired": false,
  "certificateValidityPeriod": {validity}}}}}"#,
            acme = ports.first(),
            mgmt = ports.get(1),
            cert = cert.display(),
            key = key.display(),
            // 0: Pebble's default.
            validity = validity.map_or(0, |v| v.as_secs().max(1)),
        );
        fs_err::write(&config, text)?;
        let mut started = Self {
            directory: format!("https://127.0.0.1:{}/dir", ports.first()),
            management: ([127, 0, 0, 1], ports.get(1)).into(),
            log: dir.join("pebble.log"),
            config,
            pebble: None,
            dns: dns_child,
            _ports: ports,
        };
        started.resume()?;
        Ok(started)
    }

    /// Starts Pebble again after [`Pebble::pause`] (a new CA: new roots, no old orders).
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let log = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let dns = format!("127.0.0.1:{}", self._ports.get(2));
        let child = Command::new(program("pebble")?)
            .arg("-config")
            .arg(&self.config)
            .args(["-dnsserver", &dns])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone()?.into_file())
            .stderr(log.into_file())
            .spawn()
            .context("starting pebble")?;
        self.pebble = Some(child);
        let acme: SocketAddr = ([127, 0, 0, 1], self._ports.first()).into();
        if !wait_for_port(acme, Duration::from_secs(30)) {
            bail!("pebble did not listen on {acme}: {}", self.output());
        }
        Ok(())
    }

    /// Stops Pebble (its DNS server stays): the CA is unreachable.
    pub fn pause(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How many certificates Pebble issued, from its log.
    pub fn issued(&self) -> usize {
        self.output().matches("Issued certificate serial").count()
    }

    pub fn output(&self) -> String {
        fs_err::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.pause();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}
