//! The store on S3 or any S3-compatible server, through aws-sdk-s3.
//!
//! Here the client and its settings; `errors.rs` words the SDK's errors, `reads.rs` takes bodies
//! only whole, `writes.rs` and `multipart.rs` write (conditionally), `listing.rs` lists, and
//! `access.rs` words credentials and access errors.

mod access;
mod errors;
mod listing;
mod multipart;
mod reads;
mod writes;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;

const SHA256_METADATA: &str = "sha256";

/// Settings on top of the standard AWS chain (environment, profiles, instance roles).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// An S3-compatible endpoint, e.g. `http://127.0.0.1:9000`; `AWS_ENDPOINT_URL` works too.
    /// Set, it also switches to path-style addressing.
    pub endpoint_url: Option<String>,
    /// The region when the chain names none.
    pub region: Option<String>,
}

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    /// The credentials the chain found, named in access errors.
    credentials: Arc<Mutex<Option<access::Found>>>,
    /// The endpoint, or "aws" for AWS's own.
    endpoint: String,
    /// Used although it failed the write probe (see `Store::allow_unsafe_writes`).
    pub(super) unsafe_writes: bool,
    /// Set once two whole reads agreed on a body whose MD5 is not its ETag (encrypted objects on
    /// AWS): from then on the ETag is not used to check bodies.
    etags_not_md5: Arc<AtomicBool>,
}

impl S3Store {
    pub async fn new(bucket: String, prefix: String, options: &S3Options) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .read_timeout(Duration::from_secs(60))
                    .build(),
            )
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(4));
        if let Some(endpoint) = &options.endpoint_url {
            loader = loader.endpoint_url(endpoint);
            if endpoint.starts_with("http://") {
                loader = loader.http_client(aws_smithy_http_client::Builder::new().build_http());
            }
        }
        let shared = loader.load().await;
        let custom_endpoint = options.endpoint_url.is_some() || shared.endpoint_url().is_some();
        // Bodies are checked here, against the announced length and the ETag's MD5, and read
        // again when they do not match. The SDK's own check of stored checksums is off: a store
        // whose writers raced can keep one writer's checksum beside another's bytes (s3s-fs
        // does), and every read would then fail.
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(custom_endpoint)
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            );
        // A plain-http endpoint (MinIO on a private network, a local test server) needs no TLS:
        // an HTTP-only client spares every pass loading the system's ~150 CA certificates.
        let endpoint = options
            .endpoint_url
            .as_deref()
            .or(shared.endpoint_url())
            .unwrap_or_default();
        if endpoint.starts_with("http://") {
            config = config.http_client(aws_smithy_http_client::Builder::new().build_http());
        }
        let mut credentials = Arc::default();
        if let Some(chain) = shared.credentials_provider() {
            let recording = access::Recording::new(chain);
            credentials = recording.found();
            config = config.credentials_provider(recording);
        }
        if shared.region().is_none() {
            let region = options.region.clone().unwrap_or_else(|| "us-east-1".into());
            config = config.region(aws_sdk_s3::config::Region::new(region));
        }
        Self {
            client: Client::from_conf(config.build()),
            bucket,
            prefix,
            credentials,
            endpoint: if endpoint.is_empty() {
                "aws".into()
            } else {
                endpoint.to_owned()
            },
            unsafe_writes: false,
            etags_not_md5: Arc::default(),
        }
    }

    /// The endpoint and the bucket, which what a probe found holds for.
    pub fn endpoint_id(&self) -> String {
        format!("{} {}", self.endpoint, self.bucket)
    }

    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }
}
