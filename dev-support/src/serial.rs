//! One request at a time in front of moto. moto 5.2.5 checks `If-None-Match`/`If-Match` and then
//! writes without a lock, so of 8 concurrent conditional creates of one key two can win (seen in
//! about half the runs); S3 applies them atomically, and the programs under test check that the
//! store does (`cargo milky doctor`). Passed one at a time, moto's conditions are atomic.
//!
//! A plain HTTP/1.1 forwarder on loopback: one request per connection (`Connection: close`),
//! bodies by `Content-Length`, the answer read whole from moto before the next request goes in.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Starts the forwarder in front of `upstream` (`127.0.0.1:PORT`) on a thread; returns its
/// `http://` endpoint. It lives as long as the process.
pub fn one_at_a_time(upstream: String) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let turn = Arc::new(Mutex::new(()));
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (upstream, turn) = (upstream.clone(), turn.clone());
            std::thread::spawn(move || {
                let _ = forward(client, &upstream, &turn);
            });
        }
    });
    Ok(endpoint)
}

fn forward(mut client: TcpStream, upstream: &str, turn: &Mutex<()>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request = Vec::new();
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
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            request.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        request.extend_from_slice(line.as_bytes());
    }
    let start = request.len();
    request.resize(start + length, 0);
    reader.read_exact(&mut request[start..])?;
    let answer = {
        let _turn = turn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut server = TcpStream::connect(upstream)?;
        server.write_all(&request)?;
        let mut answer = Vec::new();
        server.read_to_end(&mut answer)?;
        answer
    };
    client.write_all(&answer)
}
