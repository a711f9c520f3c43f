//! A plain HTTP/1.1 forwarder on loopback, for stand-ins in front of a real test server (moto):
//! one request per connection, read whole (headers, then the body by its `Content-Length`), and
//! handed to the caller's function on a thread of its own, which decides what goes upstream and
//! what the client gets back. Threads only, no child process; it lives as long as the process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// Listens on a free loopback port and passes each connection's request, with the connection
/// to answer on, to `serve`; returns the `http://` endpoint. Connections that close before a
/// whole request head are dropped.
pub fn forwarder<F>(serve: F) -> std::io::Result<String>
where
    F: Fn(Request, TcpStream) -> std::io::Result<()> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let serve = serve.clone();
            std::thread::spawn(move || {
                if let Ok(Some(request)) = Request::read(&client) {
                    let _ = serve(request, client);
                }
            });
        }
    });
    Ok(endpoint)
}

/// Sends `request` to `upstream` (`127.0.0.1:PORT`) and reads the answer until the server
/// closes (the requests [`Request::bytes`] makes say `Connection: close`).
pub fn exchange(upstream: &str, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(request)?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    Ok(answer)
}

/// One request as the client sent it: the request line, the other header lines (each with its
/// `\r\n`), the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub line: String,
    pub headers: Vec<String>,
    pub body: Vec<u8>,
}

impl Request {
    /// Reads one request; `None` when the client closed before the end of its head.
    pub fn read(client: &TcpStream) -> std::io::Result<Option<Self>> {
        let mut reader = BufReader::new(client.try_clone()?);
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(None);
            }
            if header == "\r\n" {
                break;
            }
            if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
            headers.push(header);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        Ok(Some(Self {
            line,
            headers,
            body,
        }))
    }

    pub fn method(&self) -> &str {
        self.line.split(' ').next().unwrap_or_default()
    }

    /// The request target, query included.
    pub fn path(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or_default()
    }

    /// The value of the first header called `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find_map(|h| {
            let (key, value) = h.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    /// The request as sent upstream: without the headers named in `drop` (any case), and with
    /// `Connection: close` in place of the client's, so the server ends the answer by closing.
    pub fn bytes(&self, drop: &[&str]) -> Vec<u8> {
        let mut out = self.line.clone().into_bytes();
        for header in &self.headers {
            let name = header.split(':').next().unwrap_or_default();
            if drop.iter().any(|d| name.eq_ignore_ascii_case(d))
                || name.eq_ignore_ascii_case("connection")
            {
                continue;
            }
            out.extend_from_slice(header.as_bytes());
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers once with what it was sent, as the body.
    fn echo_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let request = Request::read(&conn).unwrap().unwrap();
                let sent = request.bytes(&[]);
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", sent.len());
                conn.write_all(head.as_bytes()).unwrap();
                conn.write_all(&sent).unwrap();
            }
        });
        addr
    }

    #[test]
    fn a_request_goes_upstream_with_the_named_headers_dropped_and_its_body_whole() {
        let upstream = echo_server();
        let endpoint = forwarder(move |request, mut client| {
            let answer = exchange(&upstream, &request.bytes(&["if-none-match"]))?;
            client.write_all(&answer)
        })
        .unwrap();
        let mut conn = TcpStream::connect(endpoint.trim_start_matches("http://")).unwrap();
        conn.write_all(
            b"PUT /b/k HTTP/1.1\r\nHost: x\r\nIf-None-Match: *\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
        )
        .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        let echoed = answer.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(
            echoed,
            "PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        );
    }

    #[test]
    fn header_names_match_in_any_case() {
        let request = Request {
            line: "GET /b/k?x=1 HTTP/1.1\r\n".into(),
            headers: vec!["ETag: \"abc\"\r\n".into()],
            body: Vec::new(),
        };
        assert_eq!(request.header("etag").as_deref(), Some("\"abc\""));
        assert_eq!((request.method(), request.path()), ("GET", "/b/k?x=1"));
    }
}
