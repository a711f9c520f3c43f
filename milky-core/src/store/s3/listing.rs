//! Listings: every object under a prefix (key, size, ETag, time), or the names one level down.

use super::S3Store;
use crate::store::{Listed, StoreError};

impl S3Store {
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
