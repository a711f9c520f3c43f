//! Credentials and access errors in one line each: which credentials the AWS chain found (and
//! where), what the store refused and what fixes it. The SDK's own account of an error (its
//! debug dump, ~1 KB) is logged at debug level only: `-v` shows it.

use std::error::Error;
use std::sync::{Arc, Mutex};

use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};

/// The credentials a store's requests are signed with, as the chain found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Found {
    pub key_id: String,
    /// "the environment (AWS_ACCESS_KEY_ID)", "profile default (~/.aws)", ….
    pub source: String,
}

/// The AWS credential chain, remembering what it found last.
#[derive(Debug, Clone)]
pub(super) struct Recording {
    inner: SharedCredentialsProvider,
    found: Arc<Mutex<Option<Found>>>,
}

impl Recording {
    pub fn new(inner: SharedCredentialsProvider) -> Self {
        Recording {
            inner,
            found: Arc::default(),
        }
    }

    /// A handle on what the chain found, read when a request fails.
    pub fn found(&self) -> Arc<Mutex<Option<Found>>> {
        self.found.clone()
    }
}

impl ProvideCredentials for Recording {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let credentials = self.inner.provide_credentials().await?;
            let features = credentials
                .get_property::<Vec<AwsCredentialFeature>>()
                .map(Vec::as_slice)
                .unwrap_or_default();
            *self.found.lock().unwrap_or_else(|e| e.into_inner()) = Some(Found {
                key_id: credentials.access_key_id().to_owned(),
                source: source(features),
            });
            Ok(credentials)
        })
    }
}

/// Where credentials came from, by the features the chain's providers mark them with.
fn source(features: &[AwsCredentialFeature]) -> String {
    use AwsCredentialFeature as F;
    let profile = || {
        let var = |name, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
        format!(
            "profile {} ({}, {})",
            var("AWS_PROFILE", "default"),
            var("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
            var("AWS_CONFIG_FILE", "~/.aws/config")
        )
    };
    // The last feature is the provider that handed them over; earlier ones fed it.
    match features.last() {
        Some(F::CredentialsEnvVars) => "the environment (AWS_ACCESS_KEY_ID)".into(),
        Some(F::CredentialsImds) => "the instance role (EC2 instance metadata)".into(),
        Some(F::CredentialsHttp) => "the container's credentials endpoint".into(),
        Some(F::CredentialsEnvVarsStsWebIdToken | F::CredentialsStsAssumeRoleWebId) => {
            "a web identity token (AWS_WEB_IDENTITY_TOKEN_FILE)".into()
        }
        Some(F::CredentialsProcess | F::CredentialsProfileProcess) => {
            format!("the credential_process of {}", profile())
        }
        Some(F::CredentialsSso | F::CredentialsProfileSso) => {
            format!("the SSO session of {}", profile())
        }
        Some(F::CredentialsCode) => "the program's settings".into(),
        Some(_)
            if features
                .iter()
                .any(|f| format!("{f:?}").contains("Profile")) =>
        {
            profile()
        }
        _ => "the AWS credential chain".into(),
    }
}

/// What the chain failed with, if that is why a request was never sent.
pub(super) fn credentials_error<'a>(
    err: &'a (dyn Error + 'static),
) -> Option<&'a CredentialsError> {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(found) = err.downcast_ref::<CredentialsError>() {
            return Some(found);
        }
        cause = err.source();
    }
    None
}

/// No credentials anywhere: nothing was sent. Retrying will not help.
pub(super) fn none_found(op: &str) -> String {
    format!(
        "no credentials to {op} with: none in the environment (AWS_ACCESS_KEY_ID), in a profile \
         (~/.aws/credentials, ~/.aws/config), a web identity token or an instance role; \
         set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or give this machine a role"
    )
}

/// Why the store refused the credentials it was given (its error `code`), with the fix.
pub(super) fn refused(code: Option<&str>, op: &str, found: Option<&Found>) -> String {
    let who = match found {
        Some(found) => format!("access key {} from {}", found.key_id, found.source),
        None => "these credentials".to_owned(),
    };
    match code {
        Some("InvalidAccessKeyId") => {
            format!("{op} refused: the store knows no {who}; set the id and secret of a key it has")
        }
        Some("SignatureDoesNotMatch") => format!(
            "{op} refused: the secret of {who} is wrong (the store's signature does not match); set the key's right secret"
        ),
        Some("ExpiredToken" | "TokenRefreshRequired" | "InvalidToken") => {
            format!(
                "{op} refused: the session token of {who} is expired or invalid; get new credentials"
            )
        }
        Some("RequestTimeTooSkewed") => {
            format!(
                "{op} refused: this machine's clock is too far from the store's; set it right (NTP)"
            )
        }
        _ => format!(
            "{op} refused to {who}; allow {} on it in that key's policy, or use other credentials",
            permission(op)
        ),
    }
}

/// The S3 permission an operation of ours needs.
fn permission(op: &str) -> &'static str {
    match op {
        "get" | "head" | "read" => "s3:GetObject",
        "list" => "s3:ListBucket",
        "delete" => "s3:DeleteObject",
        _ => "s3:PutObject",
    }
}

/// Error codes of a store that asks its clients to slow down: worth retrying later, whatever
/// the status says.
pub(super) fn is_throttling(status: Option<u16>, code: Option<&str>) -> bool {
    matches!(status, Some(429 | 503))
        || matches!(
            code,
            Some(
                "SlowDown"
                    | "Throttling"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "TooManyRequests"
                    | "RequestThrottled"
            )
        )
}

/// An error and its causes on one line, without the SDK's debug dump: "dispatch failure: io
/// error: …: Connection refused (os error 111)".
pub(super) fn one_line(err: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = Some(err);
    while let Some(err) = cause {
        let text = err.to_string().replace('\n', "; ");
        // Wrappers often repeat their source's text: keep each once.
        if !text.is_empty() && !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        cause = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_named_by_where_they_came_from() {
        use AwsCredentialFeature as F;
        assert_eq!(
            source(&[F::CredentialsEnvVars]),
            "the environment (AWS_ACCESS_KEY_ID)"
        );
        assert_eq!(
            source(&[F::CredentialsImds]),
            "the instance role (EC2 instance metadata)"
        );
        assert!(source(&[F::CredentialsProfile]).starts_with("profile "));
        assert_eq!(source(&[]), "the AWS credential chain");
    }

    #[test]
    fn refusals_say_whose_key_and_the_fix() {
        let found = Found {
            key_id: "AKIA1".into(),
            source: "the environment (AWS_ACCESS_KEY_ID)".into(),
        };
        assert_eq!(
            refused(Some("AccessDenied"), "put", Some(&found)),
            "put refused to access key AKIA1 from the environment (AWS_ACCESS_KEY_ID); allow s3:PutObject on it in that key's policy, or use other credentials"
        );
        assert!(
            refused(Some("SignatureDoesNotMatch"), "get", Some(&found))
                .starts_with("get refused: the secret of access key AKIA1 from the environment")
        );
        assert!(refused(Some("InvalidAccessKeyId"), "get", None).contains("these credentials"));
        assert!(is_throttling(Some(403), Some("SlowDown")));
        assert!(is_throttling(Some(503), None));
        assert!(!is_throttling(Some(403), Some("AccessDenied")));
    }
}
