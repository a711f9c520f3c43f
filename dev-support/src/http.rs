//! A plain HTTP/1.0 GET over loopback, with the Host header a test chooses: enough to ask nginx
//! which app and version answers, with nothing (pooling, redirects, retries) in between.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The status line and the headers, as received.
    pub headers: String,
    pub body: String,
}

impl Response {
    /// The value of header `name` (any case), if it was sent.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// GET `path` from 127.0.0.1:`port` with `Host: host`, on a connection of its own that the
/// server closes after the response.
pub fn http_get(port: u16, host: &str, path: &str) -> io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {head:?}")))?;
    Ok(Response {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
    })
}

/// Waits until something accepts connections on `addr`; false if nothing did within `timeout`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use super::*;
    use crate::forward::Request;

    /// A server on a free port that reads one request (whole: closing a socket with unread bytes
    /// would reset it) and sends `answer`; joined, it gives the request.
    fn one_answer(answer: &'static [u8]) -> (u16, JoinHandle<Request>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let request = Request::read(&conn).unwrap().expect("a whole request");
            conn.write_all(answer).unwrap();
            request
        });
        (port, server)
    }

    #[test]
    fn get_sends_the_host_and_reads_status_headers_and_body() {
        let (port, server) =
            one_answer(b"HTTP/1.1 404 Not Found\r\nX-Milky-Version: v2\r\n\r\nno such app");
        let response = http_get(port, "shop.test", "/health").unwrap();
        let request = server.join().unwrap();
        assert_eq!(request.line, "GET /health HTTP/1.0\r\n");
        assert_eq!(
            request.header("host").as_deref(),
            Some("shop.test"),
            "{request:?}"
        );
        assert_eq!(response.status, 404);
        assert_eq!(response.header("x-milky-version").as_deref(), Some("v2"));
        assert_eq!(response.header("Host"), None);
        assert_eq!(response.body, "no such app");
    }

    #[test]
    fn a_reply_that_is_not_http_is_an_error() {
        let (port, server) = one_answer(b"hello");
        let err = http_get(port, "x", "/").unwrap_err();
        server.join().unwrap();
        assert!(err.to_string().contains("not an HTTP response"), "{err}");
    }
}
