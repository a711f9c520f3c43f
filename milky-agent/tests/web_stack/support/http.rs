//! Requests to the front: one-off GETs, a request on a kept-alive connection, and what nginx's
//! workers are (a reload replaces them).

use std::io::Write;

use milky_agent::web::WebStack;
use milky_dev_support::{alive, http_get};

/// What a test reads of a response: the status, the release's `X-Milky-Version`, the body.
pub struct Response {
    pub status: u16,
    pub version: Option<String>,
    pub body: String,
}

/// GET `path` with `Host: host`, through dev-support's plain HTTP client.
pub fn get(port: u16, host: &str, path: &str) -> Response {
    let resp = http_get(port, host, path)
        .unwrap_or_else(|e| panic!("GET {path} (Host {host}) on port {port}: {e}"));
    Response {
        status: resp.status,
        version: resp.header("X-Milky-Version"),
        body: resp.body,
    }
}

/// One HTTP/1.1 request on a kept-alive connection; returns status line and body (framed by
/// Content-Length or chunked, so the connection stays usable for the next request).
pub fn keep_alive_get(conn: &mut std::net::TcpStream, host: &str) -> (String, String) {
    use std::io::{BufRead, BufReader, Read};
    write!(conn, "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(conn);
    let line = |reader: &mut BufReader<_>| {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        line.trim().to_owned()
    };
    let status = line(&mut reader);
    let (mut length, mut chunked) = (None, false);
    loop {
        let header = line(&mut reader);
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((&header, ""));
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse::<usize>().ok();
        }
        chunked |= name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked");
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let size = usize::from_str_radix(&line(&mut reader), 16).unwrap();
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk).unwrap();
            line(&mut reader);
            if size == 0 {
                break;
            }
            body.extend(chunk);
        }
    } else {
        let length = length.unwrap_or_else(|| panic!("no body length after {status}"));
        body.resize(length, 0);
        reader.read_exact(&mut body).unwrap();
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The pids of nginx's workers: a reload replaces them all.
pub fn nginx_workers(stack: &WebStack) -> Vec<u32> {
    let master = stack.nginx_pid().unwrap().expect("nginx runs");
    let mut workers: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_owned();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(master)
        })
        .filter(|pid| alive(*pid))
        .collect();
    workers.sort();
    workers
}

pub fn assert_serves(port: u16, host: &str, version: &str) {
    let r = get(port, host, "/");
    assert_eq!(r.status, 200, "{host}: {}", r.body);
    assert!(
        r.body.starts_with(&format!("mysite {version} ")),
        "{host}: {}",
        r.body
    );
    assert_eq!(r.version.as_deref(), Some(version));
}
