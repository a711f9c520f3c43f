//! Listings: every object under a prefix (key, size, ETag, time), or the names one level down.

use super::S3Store;
use crate::store::{Listed, StoreError};

impl S3Store {
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let entries = self.list_entries(prefix).await?;
        Ok(entries.into_iter().map(|entry| entry.key).collect())
    }

    pub async fn list_entries(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let mut entries = Vec::new();
        self.list_entries_by_page(prefix, |page| entries.extend(page))
            .await?;
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    /// As [`S3Store::list_entries`], handing each page (up to 1,000 objects, in key order) to
    /// `on_page` as soon as it arrives.
    pub async fn list_entries_by_page(
        &self,
        prefix: &str,
        mut on_page: impl FnMut(Vec<Listed>),
    ) -> Result<(), StoreError> {
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
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| self.error("list", prefix, err))?;
            on_page(
                page.contents()
                    .iter()
                    .filter_map(|o| {
                        let size = o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
                        let modified = o
                            .last_modified()
                            .and_then(|t| std::time::SystemTime::try_from(*t).ok());
                        Some(Listed {
                            key: o.key()?[strip..].to_owned(),
                            size,
                            tag: change_tag(o.e_tag(), modified, size),
                            modified,
                        })
                    })
                    .collect(),
            );
        }
        Ok(())
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

/// What tells a listed object changed: its ETag; from a store whose listings carry none (s3s-fs
/// lists none), its time and size, so a rewritten object still reads as changed.
fn change_tag(etag: Option<&str>, modified: Option<std::time::SystemTime>, size: u64) -> String {
    match etag {
        Some(etag) if !etag.is_empty() => etag.to_owned(),
        _ => {
            let since_epoch = modified
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .unwrap_or_default();
            format!(
                "{}.{:09}-{size}",
                since_epoch.as_secs(),
                since_epoch.subsec_nanos()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::change_tag;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn an_object_listed_without_an_etag_is_told_apart_by_its_time_and_size() {
        let at = |ms: u64| Some(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(change_tag(Some("\"e1\""), at(1), 3), "\"e1\"");
        assert_eq!(change_tag(Some("\"e1\""), at(2), 4), "\"e1\"");
        let tag = change_tag(None, at(1_000), 3);
        assert_eq!(tag, change_tag(Some(""), at(1_000), 3));
        assert_ne!(
            tag,
            change_tag(None, at(1_001), 3),
            "rewritten a moment later"
        );
        assert_ne!(
            tag,
            change_tag(None, at(1_000), 4),
            "rewritten with another size"
        );
    }
}
