//! Exit codes, so cron, systemd and CI scripts can tell a user's mistake from a failure.
//!
//! - 0: done (including "nothing to do")
//! - 1: failure: the store, the disk or a tool failed; retrying may help
//! - 2: user error: a bad name, an unknown version, a refused request, credentials the store
//!   refuses (or none found); retrying will not help

use std::convert::Infallible;
use std::error::Error;
use std::process::ExitCode;

use milky_core::IndexError;
use milky_core::NameError;
use milky_core::StoreError;
use milky_core::env::EnvError;
use milky_core::project::ProjectError;
use milky_core::store::EditError;

/// An error that is the user's to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

pub fn user_error(message: impl Into<String>) -> anyhow::Error {
    UserError(message.into()).into()
}

fn is_user_error(err: &anyhow::Error) -> bool {
    err.chain().any(is_user_cause)
}

fn is_user_cause(cause: &(dyn Error + 'static)) -> bool {
    if let Some(inner) = edit_inner(cause) {
        return is_user_cause(inner);
    }
    cause.is::<UserError>()
        || cause.is::<NameError>()
        || cause.is::<ProjectError>()
        || matches!(
            cause.downcast_ref::<StoreError>(),
            // A store's throttling is not access denied (`StoreError::Other`): that may pass.
            Some(StoreError::BadUrl { .. } | StoreError::AccessDenied { .. })
        )
        || matches!(
            cause.downcast_ref::<IndexError>(),
            Some(
                IndexError::UnknownVersion { .. }
                    | IndexError::NotInGroup { .. }
                    | IndexError::NoHistory { .. }
                    | IndexError::VersionConflict { .. }
                    | IndexError::SizeMismatch { .. }
            )
        )
        || matches!(
            cause.downcast_ref::<EnvError>(),
            Some(EnvError::BadName(_) | EnvError::BadLine(_) | EnvError::NothingToSign { .. })
        )
}

/// The error inside an [`EditError`]. Its `Edit` and `Store` variants are transparent: they
/// print as the error they hold, but `chain()` goes from the `EditError` straight to that
/// error's *source*, so the held error itself is never seen by a downcast. Every error type an
/// edit of the store runs with is listed here.
fn edit_inner<'a>(cause: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    fn inner<'a, E: Error + 'static>(
        cause: &'a (dyn Error + 'static),
    ) -> Option<&'a (dyn Error + 'static)> {
        Some(match cause.downcast_ref::<EditError<E>>()? {
            EditError::Edit(err) => err,
            EditError::Store(err) => err,
            EditError::Index { source, .. } => source,
        })
    }
    inner::<IndexError>(cause)
        .or_else(|| inner::<EnvError>(cause))
        .or_else(|| inner::<Infallible>(cause))
}

/// Prints the error with its causes on stderr and picks the exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    ExitCode::from(code(err))
}

fn code(err: &anyhow::Error) -> u8 {
    if is_user_error(err) { 2 } else { 1 }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    fn group() -> milky_core::GroupName {
        "stable".parse().unwrap()
    }
    fn app() -> milky_core::AppName {
        "shop".parse().unwrap()
    }

    /// As the commands return them: an edit's error under the command's context.
    fn from_edit<E>(err: EditError<E>) -> anyhow::Error
    where
        E: Error + Send + Sync + 'static,
    {
        Err::<(), _>(err)
            .context("updating version.info")
            .unwrap_err()
    }

    #[test]
    fn user_errors_raised_inside_an_edit_exit_2() {
        let version: milky_core::Version = "v9".parse().unwrap();
        for err in [
            IndexError::NoHistory {
                group: group(),
                app: app(),
                never_served: Vec::new(),
            },
            IndexError::NotInGroup {
                group: group(),
                app: app(),
            },
            IndexError::UnknownVersion {
                app: app(),
                version: version.clone(),
                known: "none".into(),
            },
            IndexError::VersionConflict {
                app: app(),
                version,
                existing: "a".into(),
                new: "b".into(),
            },
        ] {
            let message = err.to_string();
            let err = from_edit(EditError::Edit(err));
            assert_eq!(code(&err), 2, "{message}");
        }
        let err = from_edit(EditError::Edit(EnvError::NothingToSign {
            group: group(),
            app: app(),
        }));
        assert_eq!(code(&err), 2);
    }

    #[test]
    fn failures_of_the_store_or_a_broken_index_exit_1() {
        let err = from_edit(EditError::<IndexError>::Store(StoreError::Unreachable {
            store: "s3://b".into(),
            detail: "connection refused".into(),
        }));
        assert_eq!(code(&err), 1);
        let err = from_edit(EditError::<IndexError>::Index {
            store: "s3://b".into(),
            source: IndexError::Malformed("line 2".into()),
        });
        assert_eq!(code(&err), 1);
        // A bad URL is the user's, also from inside an edit.
        let err = from_edit(EditError::<Infallible>::Store(StoreError::BadUrl {
            url: "x".into(),
            why: "no scheme".into(),
        }));
        assert_eq!(code(&err), 2);
        assert_eq!(code(&user_error("no group given")), 2);
        assert_eq!(code(&anyhow::anyhow!("disk full")), 1);
    }

    #[test]
    fn access_denied_exits_2_throttling_1() {
        let denied = StoreError::AccessDenied {
            store: "s3://b".into(),
            key: "version.info".into(),
            detail: "get refused".into(),
        };
        assert_eq!(code(&anyhow::Error::new(denied).context("reading")), 2);
        let denied = from_edit(EditError::<IndexError>::Store(StoreError::AccessDenied {
            store: "s3://b".into(),
            key: "version.info".into(),
            detail: "put refused".into(),
        }));
        assert_eq!(code(&denied), 2);
        let throttled = StoreError::Other {
            store: "s3://b".into(),
            op: "get",
            key: "version.info".into(),
            detail: "the store asks for fewer requests (SlowDown); try again later".into(),
        };
        assert_eq!(code(&anyhow::Error::new(throttled)), 1);
    }
}
