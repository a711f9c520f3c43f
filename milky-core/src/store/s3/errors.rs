//! SDK errors worded in one line: what failed, why, and whether it is worth trying again.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::{S3Store, access};
use crate::store::StoreError;

impl S3Store {
    /// Turns an SDK error into one line that says what failed, why, and whether it is worth
    /// retrying; the SDK's full account goes to the debug log (`-v`).
    pub(super) fn error<E>(
        &self,
        op: &'static str,
        key: &str,
        err: SdkError<E, HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let service = err.as_service_error();
        let code = service.and_then(|e| e.code()).map(str::to_owned);
        let (store, key) = (self.url(), key.to_owned());
        tracing::debug!("{op} {key} in {store}: {}", DisplayErrorContext(&err));
        let found = self
            .credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let denied = |detail| StoreError::AccessDenied {
            store: store.clone(),
            key: key.clone(),
            detail,
        };
        if access::is_throttling(status, code.as_deref()) {
            let why = code
                .clone()
                .unwrap_or_else(|| format!("HTTP {}", status.unwrap_or(0)));
            return StoreError::Other {
                store,
                op,
                key,
                detail: format!("the store asks for fewer requests ({why}); try again later"),
            };
        }
        match (status, code.as_deref()) {
            (Some(404), _) | (_, Some("NoSuchKey" | "NotFound")) => {
                StoreError::NotFound { store, key }
            }
            (Some(412), _) | (_, Some("PreconditionFailed")) => {
                StoreError::PreconditionFailed { store, key }
            }
            (Some(403), _)
            | (
                _,
                Some(
                    "AccessDenied"
                    | "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken"
                    | "InvalidToken",
                ),
            ) => denied(access::refused(code.as_deref(), op, found.as_ref())),
            (Some(409), _) if op == "complete upload" => {
                StoreError::PreconditionFailed { store, key }
            }
            (_, Some("NoSuchBucket")) => StoreError::Other {
                store,
                op,
                key,
                detail: format!("the bucket {} does not exist", self.bucket),
            },
            (None, _)
                if matches!(
                    err,
                    SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
                ) =>
            {
                use aws_credential_types::provider::error::CredentialsError;
                match access::credentials_error(&err) {
                    // The chain looked everywhere and found nothing: nothing was sent.
                    Some(CredentialsError::CredentialsNotLoaded(_)) => {
                        denied(access::none_found(op))
                    }
                    Some(invalid @ CredentialsError::InvalidConfiguration(_)) => denied(format!(
                        "the AWS credentials settings are invalid: {}",
                        access::one_line(invalid)
                    )),
                    // Timed out, or the provider (instance metadata, SSO) failed: may pass.
                    Some(other) => StoreError::Unreachable {
                        store,
                        detail: format!(
                            "the credentials could not be fetched: {}",
                            access::one_line(other)
                        ),
                    },
                    None => StoreError::Unreachable {
                        store,
                        detail: access::one_line(&err),
                    },
                }
            }
            _ => StoreError::Other {
                store,
                op,
                key,
                detail: match (service.and_then(|e| e.message()), &code, status) {
                    (Some(message), Some(code), _) => format!("{code}: {message}"),
                    (None, Some(code), _) => code.clone(),
                    (_, None, Some(status)) => format!("HTTP {status}"),
                    _ => access::one_line(&err),
                },
            },
        }
    }
}
