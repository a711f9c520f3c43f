//! Data on stdout, through one function that knows what a closed pipe means.
//!
//! `cargo milky info | head -1`: once `head` has its line it closes the pipe, and the next write
//! fails with EPIPE (Rust ignores SIGPIPE, so a write returns the error instead of the signal
//! ending the process). `println!` panics on that error; every line of data goes through
//! [`outln!`] instead, which ends the command quietly with exit 0, as `head` expects of what it
//! reads from.
//!
//! Why not put SIGPIPE back to its default, as C tools have it? The signal would also end the
//! process on a write to any other closed pipe or socket: a connection to the store that the
//! server closed (which the HTTP client otherwise notices and retries) would kill an upload
//! halfway, silently and with no error message. Handling the error where stdout is written
//! keeps the signal's reach to stdout alone.

use std::io::Write;

/// `println!` for data: a closed stdout ends the command quietly (exit 0); any other error
/// writing it (a full disk under a redirect) ends it with exit 1 and says so.
macro_rules! outln {
    () => {
        $crate::stdout::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::stdout::line(format_args!($($arg)*))
    };
}

pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(err) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        drop(out);
        closed(&err);
    }
}

/// Ends the process after a failed write to stdout.
pub fn closed(err: &std::io::Error) -> ! {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: writing to stdout: {err}");
    std::process::exit(1);
}
