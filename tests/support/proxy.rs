//! An S3-compatible store that ignores conditional writes, as some do: a loopback proxy in front
//! of the real test server that drops `If-Match` and `If-None-Match` from every request. Only a
//! header filter stands between the binaries and the real server; nothing is answered here.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

/// Starts the proxy in front of `upstream` (`http://127.0.0.1:PORT`); returns its endpoint. It
/// lives as long as the test process (threads only, no child process).
pub fn without_conditional_writes(upstream: &str) -> String {
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let _ = forward(client, &upstream);
            });
        }
    });
    endpoint
}

/// One request per connection: headers filtered, `Connection: close` forced, the body copied by
/// its Content-Length, and the answer piped back until the server closes.
fn forward(client: TcpStream, upstream: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("if-match:")
            || lower.starts_with("if-none-match:")
            || lower.starts_with("connection:")
        {
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&head)?;
    server.write_all(&body)?;
    let mut client = client;
    std::io::copy(&mut server, &mut client)?;
    Ok(())
}
