//! The S3-compatible server of the bench: moto on loopback, with its request log kept, so S3
//! requests are counted at the server (every request is one log line: method, path, status).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use anyhow::bail;

pub struct Moto {
    pub endpoint: String,
    log: PathBuf,
    _server: milky_dev_support::Moto,
}

/// One request as moto logged it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The bucket and key, e.g. `/bench/fleet/version.info`.
    pub path: String,
    pub status: u16,
}

impl Moto {
    pub fn start(moto: &Path, work: &Path) -> anyhow::Result<Self> {
        let log = work.join("moto.log");
        let server = milky_dev_support::Moto::builder(moto).log(&log).start()?;
        Ok(Self {
            endpoint: server.endpoint.clone(),
            log,
            _server: server,
        })
    }

    /// moto itself, without the forwarder that passes it one request at a time (which makes its
    /// conditional writes atomic): for reads that measure a client's concurrency.
    pub fn direct_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self._server.port())
    }

    /// moto's pid (its CPU time is read from `/proc`).
    pub fn pid(&self) -> u32 {
        self._server.pid()
    }

    /// Creates a bucket (moto checks no signature on it).
    pub fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr)?;
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        if !reply.starts_with("HTTP/1.1 200") {
            bail!(
                "creating bucket {bucket}: {}",
                reply.lines().next().unwrap_or_default()
            );
        }
        Ok(())
    }

    /// A mark in the request log: requests after it are `since(mark)`.
    pub fn mark(&self) -> usize {
        self.requests().len()
    }

    pub fn since(&self, mark: usize) -> Vec<Request> {
        self.requests().into_iter().skip(mark).collect()
    }

    fn requests(&self) -> Vec<Request> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter_map(parse_line).collect()
    }
}

/// `127.0.0.1 - - [date] "GET /b/k HTTP/1.1" 304 -`, possibly with colour codes.
fn parse_line(line: &str) -> Option<Request> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let (_, rest) = plain.split_once("] \"")?;
    let (request, tail) = rest.split_once('"')?;
    let mut parts = request.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let status = tail.split_whitespace().next()?.parse().ok()?;
    Some(Request {
        method,
        path,
        status,
    })
}

/// "3 × GET 304, 1 × PUT 200".
pub fn summary(requests: &[Request]) -> String {
    let mut counts: std::collections::BTreeMap<(String, u16), usize> = Default::default();
    for r in requests {
        *counts.entry((r.method.clone(), r.status)).or_default() += 1;
    }
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|((method, status), n)| {
            let mut paths: Vec<&str> = requests
                .iter()
                .filter(|r| &r.method == method && r.status == *status)
                .map(|r| r.path.as_str())
                .collect();
            paths.dedup();
            match paths.as_slice() {
                [one] => format!("{n} × {method} {one} → {status}"),
                _ => format!("{n} × {method} → {status}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_werkzeug_lines() {
        let r = super::parse_line(
            "127.0.0.1 - - [25/Nov/2026 05:42:08] \"\u{1b}[33mGET /bkt/x HTTP/1.1\u{1b}[0m\" 404 -",
        )
        .unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.status),
            ("GET", "/bkt/x", 404)
        );
    }
}
