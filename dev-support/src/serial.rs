//! One request at a time in front of moto. moto 5.2.5 checks `If-None-Match`/`If-Match` and then
//! writes without a lock, so of 8 concurrent conditional creates of one key two can win (seen in
//! about half the runs); S3 applies them atomically, and the programs under test check that the
//! store does (`cargo milky doctor`). Passed one at a time, moto's conditions are atomic.
//!
//! A [`forwarder`](crate::forwarder) whose requests take turns: each answer is read whole from
//! moto before the next request goes in.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::forward::{exchange, forwarder};

/// Starts the forwarder in front of `upstream` (`127.0.0.1:PORT`) on a thread; returns its
/// `http://` endpoint. It lives as long as the process.
pub fn one_at_a_time(upstream: String) -> std::io::Result<String> {
    let turn = Arc::new(Mutex::new(()));
    forwarder(move |request, mut client| {
        let answer = {
            let _turn = turn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            exchange(&upstream, &request.bytes(&[]))?
        };
        client.write_all(&answer)
    })
}
