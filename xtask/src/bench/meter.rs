//! A byte-counting TCP forwarder on loopback that also acknowledges answers at once.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A TCP forwarder on loopback that counts the bytes going back to the client. It acknowledges
/// what the server sends at once and sends on without delay, so a server that writes an answer
/// in two pieces without TCP_NODELAY is not held up by the delayed ACK of the first.
pub struct Meter {
    pub endpoint: String,
    received: Arc<AtomicU64>,
}

impl Meter {
    /// Lives as long as the bench process (threads only).
    pub fn start(upstream: &str) -> anyhow::Result<Self> {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, counter) = (upstream.clone(), counter.clone());
                std::thread::spawn(move || {
                    let _ = forward(client, &upstream, &counter);
                });
            }
        });
        Ok(Self { endpoint, received })
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

fn forward(client: TcpStream, upstream: &str, received: &AtomicU64) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    server.set_nodelay(true)?;
    client.set_nodelay(true)?;
    let (mut to_server, mut from_client) = (server.try_clone()?, client.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    let mut buf = [0u8; 64 * 1024];
    loop {
        // Linux leaves quick-ACK mode on its own: set again before every read.
        rustix::net::sockopt::set_tcp_quickack(&from_server, true)?;
        let n = from_server.read(&mut buf)?;
        if n == 0 {
            break;
        }
        to_client.write_all(&buf[..n])?;
        received.fetch_add(n as u64, Ordering::SeqCst);
    }
    let _ = to_client.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers in two writes, as s3s-fs does: the client gets both, the meter counts
    /// both.
    #[test]
    fn the_meter_forwards_and_counts_an_answer_written_in_two_pieces() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = [0u8; 5];
            socket.read_exact(&mut request).unwrap();
            assert_eq!(&request, b"hello");
            socket.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
            socket.write_all(b"body").unwrap();
        });
        let meter = Meter::start(&upstream).unwrap();
        let mut client = TcpStream::connect(meter.endpoint.trim_start_matches("http://")).unwrap();
        client.write_all(b"hello").unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        server.join().unwrap();
        assert_eq!(answer, "HTTP/1.1 200 OK\r\n\r\nbody");
        assert_eq!(meter.received(), answer.len() as u64);
    }
}
