//! Reads, taken only whole: a body that breaks off, is shorter than announced or does not match
//! a single-part ETag's MD5 is read again with backoff, and the store's own errors end the read.

use std::path::Path;
use std::sync::atomic::Ordering;

use aws_sdk_s3::error::DisplayErrorContext;
use md5::{Digest, Md5};
use tokio::io::AsyncWriteExt;

use super::{S3Store, SHA256_METADATA};
use crate::store::{Fetched, Object, ObjectInfo, Progress, StoreError, backoff};

/// Reads of one object before giving up on getting it whole.
const READ_ATTEMPTS: u32 = 5;

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
}
