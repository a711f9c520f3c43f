//! The group's ACME lease: which server orders certificates. The once-hooks design
//! (`milky_core::once_hooks`): created with `If-None-Match: *`, taken over with `If-Match` when
//! it expired or was released, renewed while the order runs, read back after each write.

use std::time::{Duration, Instant, SystemTime};

use milky_core::once_hooks::Lease;
use milky_core::store::{Condition, StoreError};
use milky_core::{HostName, Store};
use tokio::sync::{oneshot, watch};

/// A lease this server holds, renewed in the background until [`Held::release`] (or until it
/// is dropped).
pub struct Held {
    store: Store,
    key: String,
    host: HostName,
    etag: watch::Receiver<Option<String>>,
    stop: oneshot::Sender<()>,
    renewer: tokio::task::JoinHandle<()>,
}

/// What taking the lease found.
pub enum Taken {
    Held(Held),
    /// Another server holds it (its name).
    Busy(String),
}

fn lease(host: &HostName, ttl: Duration, finished: bool) -> Vec<u8> {
    let now = milky_core::tls::now();
    Lease {
        holder: host.clone(),
        expires: if finished {
            now
        } else {
            now + ttl.as_secs().max(1)
        },
        taken: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        finished,
    }
    .to_toml()
    .into_bytes()
}

/// Takes the lease at `key` unless a live one of another server is there.
pub async fn take(
    store: &Store,
    key: &str,
    host: &HostName,
    ttl: Duration,
) -> anyhow::Result<Taken> {
    let condition = match store.get(key).await? {
        None => Condition::IfAbsent,
        Some(object) => {
            let current = Lease::parse(&String::from_utf8_lossy(&object.bytes))
                .map_err(|e| anyhow::anyhow!("{key} is unreadable: {e}"))?;
            let free = current.finished || current.expires <= milky_core::tls::now();
            if current.holder != *host && !free {
                return Ok(Taken::Busy(current.holder.to_string()));
            }
            Condition::IfMatch(object.etag)
        }
    };
    let bytes = lease(host, ttl, false);
    let started = Instant::now();
    let etag = match store.put(key, bytes.clone(), condition).await {
        Ok(etag) => etag,
        Err(StoreError::PreconditionFailed { .. }) => {
            return Ok(Taken::Busy("another server".into()));
        }
        Err(other) => return Err(other.into()),
    };
    // A store that let two conditional writes through says yes to both: only a read-back tells.
    store.settle(started.elapsed()).await;
    if store.get(key).await?.is_none_or(|o| o.bytes != bytes) {
        return Ok(Taken::Busy("another server".into()));
    }
    let (send, receive) = watch::channel(Some(etag));
    let (stop, mut stopped) = oneshot::channel::<()>();
    let renewer = {
        let (store, key, host) = (store.clone(), key.to_owned(), host.clone());
        tokio::spawn(async move {
            let every = (ttl / 3).max(Duration::from_millis(200));
            loop {
                // Stopped only between renewals: a renewal cut off after the store took it
                // would leave `release` with an ETag that is no longer the lease's.
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = &mut stopped => return,
                }
                let Some(current) = send.borrow().clone() else {
                    return;
                };
                match store
                    .put(&key, lease(&host, ttl, false), Condition::IfMatch(current))
                    .await
                {
                    Ok(new) => {
                        let _ = send.send(Some(new));
                    }
                    Err(StoreError::PreconditionFailed { .. }) => {
                        tracing::warn!("lost the ACME lease {key}: another server took it over");
                        let _ = send.send(None);
                        return;
                    }
                    Err(err) => tracing::warn!("renewing the ACME lease: {err}"),
                }
            }
        })
    };
    Ok(Taken::Held(Held {
        store: store.clone(),
        key: key.to_owned(),
        host: host.clone(),
        etag: receive,
        stop,
        renewer,
    }))
}

impl Held {
    /// Whether this server still holds it (the renewer did not lose it).
    pub fn still_held(&self) -> bool {
        self.etag.borrow().is_some()
    }

    /// Stops renewing and marks it finished, so any server may take it at once.
    pub async fn release(self) {
        let _ = self.stop.send(());
        let _ = self.renewer.await;
        let Some(etag) = self.etag.borrow().clone() else {
            return;
        };
        if let Err(err) = self
            .store
            .put(
                &self.key,
                lease(&self.host, Duration::ZERO, true),
                Condition::IfMatch(etag),
            )
            .await
        {
            tracing::warn!("releasing the ACME lease: {err}");
        }
    }
}
