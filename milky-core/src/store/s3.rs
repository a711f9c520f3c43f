//! The store on S3 or any S3-compatible server, through aws-sdk-s3.

mod access;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{Condition, Fetched, Listed, Object, ObjectInfo, Progress, StoreError, backoff};

/// Files above this size go up in parts of this size.
const PART_SIZE: u64 = 16 * 1024 * 1024;
/// Parts in flight at once.
const PART_CONCURRENCY: usize = 4;
const SHA256_METADATA: &str = "sha256";
/// Reads of one object before giving up on getting it whole.
const READ_ATTEMPTS: u32 = 5;

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

/// Why one read of an object is not taken as it is.
enum ReadFault {
    /// The store's own error: not a matter of reading again.
    Store(StoreError),
    /// The body broke off or was not what the store announced.
    Torn(String),
    /// A whole body whose MD5 is not the ETag: torn, or an ETag that is no MD5.
    Mismatch { digest: String, detail: String },
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

    /// Turns an SDK error into one line that says what failed, why, and whether it is worth
    /// retrying; the SDK's full account goes to the debug log (`-v`).
    fn error<E>(&self, op: &'static str, key: &str, err: SdkError<E, HttpResponse>) -> StoreError
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

    pub async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        match self.get_if_changed(key, None).await? {
            Fetched::Changed(object) => Ok(Some(object)),
            Fetched::Missing => Ok(None),
            Fetched::NotModified => unreachable!("an unconditional GET is never 304"),
        }
    }

    /// A body is taken only whole: as long as announced and, where the ETag is an MD5 (a
    /// single-part upload), with that MD5. Anything else, and a body that breaks off, is read
    /// again with backoff.
    pub async fn get_if_changed(
        &self,
        key: &str,
        etag: Option<&str>,
    ) -> Result<Fetched, StoreError> {
        self.until_whole("read", key, || self.get_once(key, etag))
            .await
    }

    /// Runs `once` (one read of `key`) until a read comes back whole, with backoff between
    /// tries; the store's own errors end it at once.
    async fn until_whole<T, Read>(
        &self,
        op: &'static str,
        key: &str,
        mut once: impl FnMut() -> Read,
    ) -> Result<T, StoreError>
    where
        Read: Future<Output = Result<T, ReadFault>>,
    {
        let mut previous = None;
        let mut last = String::new();
        for attempt in 1..=READ_ATTEMPTS {
            match once().await {
                Ok(value) => return Ok(value),
                Err(ReadFault::Store(err)) => return Err(err),
                Err(ReadFault::Torn(detail)) => last = detail,
                Err(ReadFault::Mismatch { digest, detail }) => {
                    if previous.as_ref() == Some(&digest) {
                        // Two whole reads agree: the ETag is just not an MD5. Read once more
                        // without checking it.
                        self.etags_not_md5.store(true, Ordering::Relaxed);
                    }
                    previous = Some(digest);
                    last = detail;
                }
            }
            tracing::debug!(attempt, key, "{op} again: {last}");
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(self.unreadable(op, key, last))
    }

    fn unreadable(&self, op: &'static str, key: &str, detail: String) -> StoreError {
        StoreError::Unreadable {
            store: self.url(),
            op,
            key: key.into(),
            attempts: READ_ATTEMPTS,
            detail,
        }
    }

    async fn get_once(&self, key: &str, etag: Option<&str>) -> Result<Fetched, ReadFault> {
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .set_if_none_match(etag.map(str::to_owned))
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(err)
                if err
                    .raw_response()
                    .is_some_and(|r| r.status().as_u16() == 304) =>
            {
                return Ok(Fetched::NotModified);
            }
            Err(err) => {
                return match self.error("get", key, err) {
                    StoreError::NotFound { .. } => Ok(Fetched::Missing),
                    other => Err(ReadFault::Store(other)),
                };
            }
        };
        let new_etag = output.e_tag().unwrap_or_default().to_owned();
        // Servers that ignore If-None-Match answer 200 with the same ETag: treat it as unchanged.
        if etag.is_some_and(|old| old == new_etag) {
            return Ok(Fetched::NotModified);
        }
        let announced = output.content_length();
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|e| ReadFault::Torn(DisplayErrorContext(&e).to_string()))?
            .into_bytes()
            .to_vec();
        let mut md5 = Md5::new();
        md5.update(&bytes);
        self.check_whole(&new_etag, announced, bytes.len() as u64, md5)?;
        Ok(Fetched::Changed(Object {
            bytes,
            etag: new_etag,
        }))
    }

    /// Whether a body of `got` bytes with this MD5 is what the store announced.
    fn check_whole(
        &self,
        etag: &str,
        announced: Option<i64>,
        got: u64,
        md5: Md5,
    ) -> Result<(), ReadFault> {
        if let Some(announced) = announced
            && announced != got as i64
        {
            return Err(ReadFault::Torn(format!(
                "the store announced {announced} bytes and sent {got}"
            )));
        }
        let digest = hex::encode(md5.finalize());
        let expected = etag.trim_matches('"');
        let is_md5 = expected.len() == 32 && expected.bytes().all(|b| b.is_ascii_hexdigit());
        if is_md5
            && !self.etags_not_md5.load(Ordering::Relaxed)
            && !expected.eq_ignore_ascii_case(&digest)
        {
            return Err(ReadFault::Mismatch {
                detail: format!("the body's MD5 is {digest}, its ETag {etag}"),
                digest,
            });
        }
        Ok(())
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
        {
            Ok(output) => Ok(Some(ObjectInfo {
                size: output
                    .content_length()
                    .unwrap_or_default()
                    .try_into()
                    .unwrap_or_default(),
                etag: output.e_tag().unwrap_or_default().to_owned(),
                sha256: output
                    .metadata()
                    .and_then(|m| m.get(SHA256_METADATA))
                    .cloned(),
            })),
            Err(err) => match self.error("head", key, err) {
                StoreError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    pub async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        condition: &Condition,
    ) -> Result<String, StoreError> {
        let (if_match, if_none_match) = condition_headers(condition);
        let output = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .body(ByteStream::from(bytes))
            .set_if_match(if_match)
            .set_if_none_match(if_none_match)
            .send()
            .await
            .map_err(|err| self.put_error(key, err))?;
        Ok(output.e_tag().unwrap_or_default().to_owned())
    }

    /// S3 answers a conditional write that collides with one in flight with 409
    /// (ConditionalRequestConflict): the same as losing the race.
    fn put_error<E>(&self, key: &str, err: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        if err
            .raw_response()
            .is_some_and(|r| r.status().as_u16() == 409)
        {
            return StoreError::PreconditionFailed {
                store: self.url(),
                key: key.to_owned(),
            };
        }
        self.error("put", key, err)
    }

    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        sha256: &str,
        condition: &Condition,
        progress: Progress<'_>,
    ) -> Result<String, StoreError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| StoreError::io(path, e))?
            .len();
        if size <= PART_SIZE {
            let body = ByteStream::from_path(path)
                .await
                .map_err(|e| StoreError::Other {
                    store: self.url(),
                    op: "read",
                    key: key.into(),
                    detail: format!("{}: {e}", path.display()),
                })?;
            let (if_match, if_none_match) = condition_headers(condition);
            let output = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(self.key(key))
                .metadata(SHA256_METADATA, sha256)
                .body(body)
                .set_if_match(if_match)
                .set_if_none_match(if_none_match)
                .send()
                .await
                .map_err(|err| self.put_error(key, err))?;
            progress(size);
            return Ok(output.e_tag().unwrap_or_default().to_owned());
        }
        self.put_multipart(key, path, size, sha256, condition, progress)
            .await
    }

    async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        sha256: &str,
        condition: &Condition,
        progress: Progress<'_>,
    ) -> Result<String, StoreError> {
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.key(key))
            .metadata(SHA256_METADATA, sha256)
            .send()
            .await
            .map_err(|err| self.error("start upload", key, err))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_owned();
        let result = self
            .upload_parts(key, path, size, &upload_id, condition, progress)
            .await;
        if result.is_err() {
            // Leave no half upload behind to be billed for; the original error is what matters.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(self.key(key))
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
        condition: &Condition,
        progress: Progress<'_>,
    ) -> Result<String, StoreError> {
        let part_count = size.div_ceil(PART_SIZE);
        let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(PART_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        let mut parts = Vec::with_capacity(part_count as usize);
        let mut done = 0u64;
        for number in 1..=part_count {
            let permit = semaphore
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore stays open");
            let offset = (number - 1) * PART_SIZE;
            let len = PART_SIZE.min(size - offset);
            let mut buf = vec![0; len as usize];
            let mut file = tokio::fs::File::open(path)
                .await
                .map_err(|e| StoreError::io(path, e))?;
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(|e| StoreError::io(path, e))?;
            file.read_exact(&mut buf)
                .await
                .map_err(|e| StoreError::io(path, e))?;
            let request = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(self.key(key))
                .upload_id(upload_id)
                .part_number(number as i32)
                .body(ByteStream::from(buf));
            tasks.spawn(async move {
                let result = request.send().await;
                drop(permit);
                (number, len, result)
            });
            // Collect finished parts as we go, so progress moves while later parts are read.
            while let Some(joined) = tasks.try_join_next() {
                done += self.finish_part(key, joined, &mut parts)?;
                progress(done);
            }
        }
        while let Some(joined) = tasks.join_next().await {
            done += self.finish_part(key, joined, &mut parts)?;
            progress(done);
        }
        parts.sort_by_key(|p: &CompletedPart| p.part_number());
        let (if_match, if_none_match) = condition_headers(condition);
        let output = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(self.key(key))
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .set_if_match(if_match)
            .set_if_none_match(if_none_match)
            .send()
            .await
            .map_err(|err| self.error("complete upload", key, err))?;
        Ok(output.e_tag().unwrap_or_default().to_owned())
    }

    #[allow(clippy::type_complexity)]
    fn finish_part(
        &self,
        key: &str,
        joined: Result<
            (
                u64,
                u64,
                Result<
                    aws_sdk_s3::operation::upload_part::UploadPartOutput,
                    SdkError<aws_sdk_s3::operation::upload_part::UploadPartError, HttpResponse>,
                >,
            ),
            tokio::task::JoinError,
        >,
        parts: &mut Vec<CompletedPart>,
    ) -> Result<u64, StoreError> {
        let (number, len, result) = joined.map_err(|e| StoreError::Other {
            store: self.url(),
            op: "upload part",
            key: key.into(),
            detail: e.to_string(),
        })?;
        let output = result.map_err(|err| self.error("upload part", key, err))?;
        parts.push(
            CompletedPart::builder()
                .part_number(number as i32)
                .set_e_tag(output.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(len)
    }

    /// Streams an object into `dest`, whole or not at all: a body that breaks off or is not what
    /// the store announced is read again from the start, as [`Self::get_if_changed`] does.
    pub async fn download(
        &self,
        key: &str,
        dest: &Path,
        progress: Progress<'_>,
    ) -> Result<u64, StoreError> {
        self.until_whole("download", key, || self.download_once(key, dest, progress))
            .await
    }

    async fn download_once(
        &self,
        key: &str,
        dest: &Path,
        progress: Progress<'_>,
    ) -> Result<u64, ReadFault> {
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
            .map_err(|err| ReadFault::Store(self.error("get", key, err)))?;
        let io = |e| ReadFault::Store(StoreError::io(dest, e));
        let (etag, announced) = (
            output.e_tag().unwrap_or_default().to_owned(),
            output.content_length(),
        );
        let mut body = output.body;
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut written = 0u64;
        let mut md5 = Md5::new();
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| ReadFault::Torn(DisplayErrorContext(&e).to_string()))?
        {
            md5.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
            written += chunk.len() as u64;
            progress(written);
        }
        file.flush().await.map_err(io)?;
        self.check_whole(&etag, announced, written, md5)?;
        Ok(written)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
            .map_err(|err| self.error("delete", key, err))?;
        Ok(())
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let entries = self.list_entries(prefix).await?;
        Ok(entries.into_iter().map(|entry| entry.key).collect())
    }

    pub async fn list_entries(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let full_prefix = self.key(prefix);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        let mut entries = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| self.error("list", prefix, err))?;
            entries.extend(page.contents().iter().filter_map(|o| {
                Some(Listed {
                    key: o.key()?[strip..].to_owned(),
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    tag: o.e_tag().unwrap_or_default().to_owned(),
                    modified: o
                        .last_modified()
                        .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                })
            }));
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let full_prefix = self.key(prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| self.error("list", prefix, err))?;
            names.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix())
                    .filter_map(|p| p.strip_prefix(full_prefix.as_str()))
                    .map(|p| p.trim_end_matches('/').to_owned()),
            );
        }
        names.sort();
        Ok(names)
    }
}

fn condition_headers(condition: &Condition) -> (Option<String>, Option<String>) {
    match condition {
        Condition::None => (None, None),
        Condition::IfAbsent => (None, Some("*".into())),
        Condition::IfMatch(etag) => (Some(etag.clone()), None),
    }
}
