//! Reading a group's reports from the store: concurrently, and on a second read only the ones
//! whose listing entry changed.

use std::collections::BTreeMap;

use super::HostStatus;
use crate::names::{GroupName, HostName};

/// Reports read at once: enough to hide the store's latency (10,000 servers in seconds), few
/// enough to stay far below S3's request rates. Each GET keeps the SDK's retries.
pub const READ_CONCURRENCY: usize = 64;

/// A server's report as read: the report, or why it could not be read.
pub type Report = (HostName, Result<HostStatus, String>);

/// Every server report of a group, read from the store (unreadable ones as errors), in host order.
pub async fn read_group(
    store: &crate::Store,
    group: &GroupName,
) -> Result<Vec<Report>, crate::StoreError> {
    ReportCache::default()
        .read(store, group, READ_CONCURRENCY)
        .await
}

/// A group's reports as last read, by key, with the change tag their listing gave. Reading
/// again lists the group (one request per 1,000 servers) and fetches only the reports whose
/// tag changed, so a `--wait` poll where nothing changed costs the listing alone.
#[derive(Debug, Default)]
pub struct ReportCache {
    reports: BTreeMap<String, (String, Report)>,
    /// How many reports the last read fetched (the rest came from the cache).
    pub fetched: usize,
}

impl ReportCache {
    /// The group's reports now, fetching at most `concurrency` at once (1: one after another).
    /// Each listing page's reports are fetched while the next page is listed: at 10,000 servers
    /// the ten pages cost about as much as the reads.
    pub async fn read(
        &mut self,
        store: &crate::Store,
        group: &GroupName,
        concurrency: usize,
    ) -> Result<Vec<Report>, crate::StoreError> {
        use futures_util::{StreamExt, TryStreamExt};

        let prefix = crate::layout::host_status_prefix(group);
        let (pages, mut listed_pages) = tokio::sync::mpsc::unbounded_channel();
        let list = async {
            // Moved in, so the channel closes when the listing ends, and with it the reads.
            let pages = pages;
            store
                .list_entries_by_page(&prefix, |page| {
                    // The receiver lives until the reads end; they end early only on an error,
                    // which the join below returns anyway.
                    let _ = pages.send(page);
                })
                .await
        };
        let mut listed = std::collections::BTreeSet::new();
        let cached = &self.reports;
        let fetch = futures_util::stream::poll_fn(|cx| listed_pages.poll_recv(cx))
            .flat_map(futures_util::stream::iter)
            .filter_map(|entry: crate::store::Listed| {
                let name = entry
                    .key
                    .strip_prefix(&prefix)
                    .and_then(|n| n.strip_suffix(".toml"));
                let host = name.and_then(|n| n.parse::<HostName>().ok());
                std::future::ready(host.map(|host| (host, entry)))
            })
            .filter(|(_, entry)| {
                listed.insert(entry.key.clone());
                let changed = cached
                    .get(&entry.key)
                    .is_none_or(|(tag, _)| *tag != entry.tag);
                std::future::ready(changed)
            })
            .map(|(host, entry)| async move {
                let object = store.get(&entry.key).await?;
                Ok::<_, crate::StoreError>((host, entry, object))
            })
            .buffer_unordered(concurrency.max(1))
            .try_collect::<Vec<_>>();
        let ((), fetched) = futures_util::future::try_join(list, fetch).await?;
        self.fetched = fetched.len();
        for (host, entry, object) in fetched {
            match object {
                Some(object) => {
                    let report = HostStatus::parse(&String::from_utf8_lossy(&object.bytes));
                    self.reports.insert(entry.key, (entry.tag, (host, report)));
                }
                // Deleted (`hosts forget`) since the listing.
                None => {
                    self.reports.remove(&entry.key);
                }
            }
        }
        self.reports.retain(|key, _| listed.contains(key));
        Ok(self
            .reports
            .values()
            .map(|(_, report)| report.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::test_support::report;

    #[tokio::test]
    async fn a_second_read_fetches_only_the_reports_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::Local(crate::store::LocalStore::open(dir.path()).unwrap());
        let group: GroupName = "g".parse().unwrap();
        let write = |host: &str, at: &str| {
            let (_, status) = report(host, at, &[]);
            let key = crate::layout::host_status(&group, &host.parse().unwrap());
            let text = toml::to_string(&status.unwrap()).unwrap();
            let store = store.clone();
            async move {
                store
                    .put(&key, text.into_bytes(), crate::Condition::None)
                    .await
            }
        };
        for host in ["a", "b", "c"] {
            write(host, "2026-11-25T11:00:00Z").await.unwrap();
        }
        let mut cache = ReportCache::default();
        let first = cache.read(&store, &group, 2).await.unwrap();
        assert_eq!(cache.fetched, 3);
        assert_eq!(first, read_group(&store, &group).await.unwrap());
        assert_eq!(cache.read(&store, &group, 2).await.unwrap(), first);
        assert_eq!(cache.fetched, 0, "nothing changed, nothing fetched");
        write("b", "2026-11-25T11:10:00Z").await.unwrap();
        store
            .delete(&crate::layout::host_status(&group, &"c".parse().unwrap()))
            .await
            .unwrap();
        let again = cache.read(&store, &group, 1).await.unwrap();
        assert_eq!(cache.fetched, 1);
        let hosts: Vec<&str> = again.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(hosts, ["a", "b"]);
        assert_eq!(
            again[1].1.as_ref().unwrap().last_pass,
            "2026-11-25T11:10:00Z"
        );
    }
}
