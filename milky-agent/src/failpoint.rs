//! Crash points for tests: with `MILKY_FAILPOINT=<name>` in its environment, the agent aborts
//! (as a kill -9 would end it) when it reaches the point of that name. Tests use it to stop the
//! agent exactly between two steps that must survive a crash, which no timing can do reliably.

/// Aborts the process if `MILKY_FAILPOINT` names this point.
pub fn hit(name: &str) {
    if std::env::var_os("MILKY_FAILPOINT").is_some_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
