//! Exit codes, so cron, systemd and CI scripts can tell a user's mistake from a failure.
//!
//! - 0: done (including "nothing to do")
//! - 1: failure: the store, the disk or a tool failed; retrying may help
//! - 2: user error: a bad name, an unknown version, a refused request; retrying will not help

use std::process::ExitCode;

use milky_core::IndexError;
use milky_core::NameError;
use milky_core::StoreError;
use milky_core::project::ProjectError;

/// An error that is the user's to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

pub fn user_error(message: impl Into<String>) -> anyhow::Error {
    UserError(message.into()).into()
}

fn is_user_error(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.is::<UserError>()
            || cause.is::<NameError>()
            || cause.is::<ProjectError>()
            || matches!(
                cause.downcast_ref::<StoreError>(),
                Some(StoreError::BadUrl { .. })
            )
            || matches!(
                cause.downcast_ref::<IndexError>(),
                Some(
                    IndexError::UnknownVersion { .. }
                        | IndexError::NotInGroup { .. }
                        | IndexError::VersionConflict { .. }
                        | IndexError::SizeMismatch { .. }
                )
            )
    })
}

/// Prints the error with its causes on stderr and picks the exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if is_user_error(err) {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}
