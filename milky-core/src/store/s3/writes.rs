//! Writes: whole objects, conditional on the object's absence or its ETag, and deletes. Files
//! above [`PART_SIZE`] go up in parts (`multipart.rs`).

use std::path::Path;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;

use super::multipart::PART_SIZE;
use super::{S3Store, SHA256_METADATA};
use crate::store::{Condition, Progress, StoreError};

impl S3Store {
    pub async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        condition: &Condition,
    ) -> Result<String, StoreError> {
        self.put_object(key, ByteStream::from(bytes), None, condition)
            .await
    }

    /// One PUT of `body` under `condition`, with the content's sha256 as metadata when given;
    /// the new object's ETag.
    async fn put_object(
        &self,
        key: &str,
        body: ByteStream,
        sha256: Option<&str>,
        condition: &Condition,
    ) -> Result<String, StoreError> {
        let (if_match, if_none_match) = condition_headers(condition);
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(key));
        if let Some(sha256) = sha256 {
            request = request.metadata(SHA256_METADATA, sha256);
        }
        let output = request
            .body(body)
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
            let etag = self.put_object(key, body, Some(sha256), condition).await?;
            progress(size);
            return Ok(etag);
        }
        self.put_multipart(key, path, size, sha256, condition, progress)
            .await
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
}

pub(super) fn condition_headers(condition: &Condition) -> (Option<String>, Option<String>) {
    match condition {
        Condition::None => (None, None),
        Condition::IfAbsent => (None, Some("*".into())),
        Condition::IfMatch(etag) => (Some(etag.clone()), None),
    }
}
