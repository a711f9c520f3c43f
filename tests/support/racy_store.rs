//! S3-compatible stores that are worse than they say, made from the real test server: a loopback
//! proxy in front of it that either checks write conditions itself and then writes without a
//! lock (as some servers do), drops the conditions, or tears the bodies of some of its answers.
//! moto does not check request signatures, so headers can be dropped on the way. The
//! forwarding itself is `milky_dev_support::forwarder`; here is only what each fault does.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use milky_dev_support::{Request, exchange, forwarder};

/// What the proxy does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Checks `If-None-Match`/`If-Match` against a HEAD of the object, waits, then writes with
    /// no condition and no lock: writers that race all pass the check.
    RacyConditions,
    /// Drops `If-None-Match`/`If-Match`: every write goes through.
    NoConditions,
    /// Every third object read comes back torn: alternately cut short (the connection closes
    /// before the announced length) or with a byte changed (the length right, the MD5 wrong).
    TornBodies,
}

/// How long a racy write waits between its check and its write.
const RACE_WINDOW: Duration = Duration::from_millis(50);

/// A running proxy.
pub struct Proxy {
    pub endpoint: String,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    reads: AtomicUsize,
    torn: AtomicUsize,
}

impl Proxy {
    /// How many answers it tore.
    pub fn torn(&self) -> usize {
        self.counts.torn.load(Ordering::Relaxed)
    }
}

/// Starts a proxy with `fault` in front of `upstream` (`http://127.0.0.1:PORT`). It lives as long
/// as the test process (threads only, no child process).
pub fn start(upstream: &str, fault: Fault) -> Proxy {
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let counts = Arc::new(Counts::default());
    let shared = counts.clone();
    let endpoint =
        forwarder(move |request, client| serve(request, client, &upstream, fault, &shared))
            .expect("start the proxy");
    Proxy { endpoint, counts }
}

const CONDITIONS: [&str; 2] = ["if-match", "if-none-match"];

fn serve(
    request: Request,
    mut client: TcpStream,
    upstream: &str,
    fault: Fault,
    counts: &Counts,
) -> std::io::Result<()> {
    let is_write = matches!(request.method(), "PUT" | "POST");
    let answer = match fault {
        Fault::NoConditions => exchange(upstream, &request.bytes(&CONDITIONS))?,
        Fault::RacyConditions if is_write => {
            if let Some(refusal) = check_conditions(upstream, &request)? {
                client.write_all(refusal.as_bytes())?;
                return Ok(());
            }
            std::thread::sleep(RACE_WINDOW);
            exchange(upstream, &request.bytes(&CONDITIONS))?
        }
        Fault::RacyConditions => exchange(upstream, &request.bytes(&[]))?,
        Fault::TornBodies => {
            let answer = exchange(upstream, &request.bytes(&[]))?;
            // `/bucket/key…`, not a listing of the bucket.
            let object = request.path().split('?').next().unwrap_or_default();
            let object_read =
                request.method() == "GET" && object.trim_start_matches('/').contains('/');
            if object_read && answer.starts_with(b"HTTP/1.1 200") {
                let n = counts.reads.fetch_add(1, Ordering::Relaxed);
                if n % 3 == 2 {
                    counts.torn.fetch_add(1, Ordering::Relaxed);
                    return tear(client, answer, n.is_multiple_of(2));
                }
            }
            answer
        }
    };
    client.write_all(&answer)
}

/// The answer a store that checks conditions gives before it writes: None to go ahead.
fn check_conditions(upstream: &str, request: &Request) -> std::io::Result<Option<String>> {
    let (if_match, if_none_match) = (request.header("if-match"), request.header("if-none-match"));
    if if_match.is_none() && if_none_match.is_none() {
        return Ok(None);
    }
    // The same request's identity (host, credentials), as a HEAD of the object.
    let path = request.path().split('?').next().unwrap_or_default();
    let mut head = format!("HEAD {path} HTTP/1.1\r\n");
    for header in &request.headers {
        let name = header
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "host" | "authorization" | "x-amz-date" | "user-agent"
        ) {
            head.push_str(header);
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let answer = String::from_utf8_lossy(&exchange(upstream, head.as_bytes())?).into_owned();
    let exists = answer.starts_with("HTTP/1.1 200");
    let etag = answer.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case("etag")
            .then(|| value.trim().to_owned())
    });
    let refused = match (if_none_match, if_match) {
        (Some(_), _) if exists => true,
        (_, Some(wanted)) => etag.as_deref() != Some(wanted.as_str()),
        _ => false,
    };
    Ok(refused.then(|| {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>PreconditionFailed</Code><Message>At least one of the preconditions you specified did not hold</Message></Error>";
        format!(
            "HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }))
}

/// Sends `answer` torn: cut short, or with one byte of its body changed.
fn tear(mut client: TcpStream, mut answer: Vec<u8>, cut: bool) -> std::io::Result<()> {
    let Some(body_at) = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
    else {
        return client.write_all(&answer);
    };
    let body_len = answer.len() - body_at;
    if body_len == 0 {
        return client.write_all(&answer);
    }
    if cut {
        answer.truncate(body_at + body_len / 2);
    } else {
        answer[body_at + body_len / 2] ^= 0x20;
    }
    client.write_all(&answer)?;
    client.shutdown(std::net::Shutdown::Both)
}
