//! Multipart uploads: parts read from the file and sent a few at a time, completed with the
//! write's condition so the create stays conditional, and aborted when anything fails.

use std::path::Path;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::writes::condition_headers;
use super::{S3Store, SHA256_METADATA};
use crate::store::{Condition, Progress, StoreError};

/// Files above this size go up in parts of this size.
pub(super) const PART_SIZE: u64 = 16 * 1024 * 1024;
/// Parts in flight at once.
const PART_CONCURRENCY: usize = 4;

impl S3Store {
    pub(super) async fn put_multipart(
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
}
