//! Which versions of an app served in a group: the first server that switches to a version
//! creates a small marker object for it (`If-None-Match: *`, so once per version, not per pass).
//! Rollback steps only onto versions that have one, so it never lands on a release that failed
//! its health check everywhere.

use std::collections::BTreeSet;

use crate::layout;
use crate::names::{AppName, GroupName, HostName, Version};
use crate::store::{Condition, Store, StoreError};

/// Records that `host` served `version` of `app` in `group`; a marker already there (another
/// server was first) is the same fact.
pub async fn mark(
    store: &Store,
    group: &GroupName,
    app: &AppName,
    version: &Version,
    host: &HostName,
) -> Result<(), StoreError> {
    let key = layout::served(group, app, version);
    let body = format!("host = {:?}\n", host.as_str()).into_bytes();
    match store.put(&key, body, Condition::IfAbsent).await {
        Ok(_) | Err(StoreError::PreconditionFailed { .. }) => Ok(()),
        Err(other) => Err(other),
    }
}

/// The versions of `app` that served in `group`, by their markers (one listing).
pub async fn versions(
    store: &Store,
    group: &GroupName,
    app: &AppName,
) -> Result<BTreeSet<Version>, StoreError> {
    let prefix = layout::served_prefix(group, app);
    Ok(store
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|key| key.strip_prefix(&prefix))
        .filter_map(|name| Version::new(name).ok())
        .collect())
}
