//! Certificates from an ACME CA for apps with `tls = "acme"` (see `milky_core::acme` for what
//! the servers of a group share in the store).
//!
//! Every pass of a server with such an app: [`GroupAcme::sync_challenges`] reads the group's
//! orders (a conditional GET), writes each pending HTTP-01 answer into the challenge dir nginx
//! serves (removing stale ones) and acknowledges the tokens it serves. Then, per app,
//! [`GroupAcme::ensure`] decides whether the group's certificate needs an order (none yet,
//! names changed, a third of its lifetime left, renewal requested) and, if this server wins
//! the group's lease, orders it (`order.rs`): the answers go into the orders object, the CA is
//! asked to validate once every other live server acknowledged them (or `challenge_wait`
//! passed), and the certificate and key are stored where `cargo milky tls set` puts them. A
//! failed order keeps the current certificate, is recorded with a backoff, and reported.

mod lease;
mod order;

use std::path::PathBuf;

use anyhow::Context;
use milky_core::acme::{Ack, Need, Orders};
use milky_core::store::{Condition, Fetched};
use milky_core::tls::{CertificateInfo, StoredCertificate};
use milky_core::{AppName, GroupName, HostName, Store, layout};

use crate::config::Acme as AcmeSettings;
use crate::web::WebStack;

/// A server's view of its group's ACME orders.
pub struct GroupAcme<'a> {
    pub store: &'a Store,
    pub group: &'a GroupName,
    pub host: &'a HostName,
    pub web: &'a WebStack,
    pub settings: &'a AcmeSettings,
    /// `STATE/acme`: the orders as last read (and their ETag), and the tokens last acknowledged.
    pub state_dir: PathBuf,
}

/// What [`GroupAcme::ensure`] found or did.
#[derive(Debug, Default)]
pub struct Ensured {
    /// No certificate yet, and another server orders it (or the last order failed).
    pub waiting: Option<String>,
    /// The group's last order failed: why, and when it is tried again.
    pub renewal_error: Option<String>,
    /// This server stored a new certificate.
    pub issued: bool,
}

impl GroupAcme<'_> {
    /// Answers the group's pending challenges on this server and acknowledges them; returns the
    /// group's orders.
    pub async fn sync_challenges(&self) -> anyhow::Result<Orders> {
        let key = layout::acme_orders(self.group);
        let (cache, etag_file) = (
            self.state_dir.join("orders.toml"),
            self.state_dir.join("orders.etag"),
        );
        let cached = fs_err::read_to_string(&cache).ok();
        let etag = cached
            .as_ref()
            .and_then(|_| fs_err::read_to_string(&etag_file).ok());
        let text = match self.store.get_if_changed(&key, etag.as_deref()).await? {
            Fetched::NotModified => cached.unwrap_or_default(),
            Fetched::Changed(object) => {
                let text = String::from_utf8_lossy(&object.bytes).into_owned();
                fs_err::create_dir_all(&self.state_dir)?;
                fs_err::write(&cache, &text)?;
                fs_err::write(&etag_file, &object.etag)?;
                text
            }
            Fetched::Missing => {
                let _ = fs_err::remove_file(&cache);
                String::new()
            }
        };
        let orders = Orders::parse(&text).map_err(|e| anyhow::anyhow!("{key} is broken: {e}"))?;
        let challenges = orders.challenges();
        tokio::task::block_in_place(|| {
            for (token, answer) in &challenges {
                self.web.write_challenge(token, answer)?;
            }
            let keep: Vec<String> = challenges.keys().map(|t| t.to_string()).collect();
            self.web.retain_challenges(&keep)
        })?;
        let tokens: Vec<String> = challenges.keys().map(|t| t.to_string()).collect();
        self.acknowledge(&tokens).await?;
        Ok(orders)
    }

    /// Tells the orderer which tokens this server answers, when that changed.
    async fn acknowledge(&self, tokens: &[String]) -> anyhow::Result<()> {
        let acked_file = self.state_dir.join("acked");
        let line = tokens.join(" ");
        if fs_err::read_to_string(&acked_file).ok().as_deref() == Some(line.as_str()) {
            return Ok(());
        }
        let ack = Ack {
            tokens: tokens.to_vec(),
            written: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        self.store
            .put(
                &layout::acme_ack(self.group, self.host),
                ack.to_toml().into_bytes(),
                Condition::None,
            )
            .await
            .context("acknowledging the ACME challenges")?;
        fs_err::create_dir_all(&self.state_dir)?;
        fs_err::write(&acked_file, line)?;
        Ok(())
    }

    /// Makes sure the group holds a current certificate for `app`'s `server_names`, ordering
    /// one here when one is needed and this server gets the group's ACME lease. `stored` is
    /// what the store holds now.
    pub async fn ensure(
        &self,
        app: &AppName,
        server_names: &[String],
        orders: &Orders,
        stored: Option<&CertificateInfo>,
    ) -> Ensured {
        let now = milky_core::tls::now();
        let order = orders.apps.get(app);
        let mut ensured = Ensured {
            renewal_error: order.and_then(|o| o.describe_error()),
            ..Ensured::default()
        };
        match milky_core::acme::decide(stored, server_names, order, now) {
            Need::Current => {}
            Need::Later { why, .. } => {
                if stored.is_none() {
                    ensured.waiting = Some(format!(
                        "no certificate yet ({why}); the last order failed: {}",
                        ensured.renewal_error.clone().unwrap_or_default()
                    ));
                }
            }
            Need::Order(why) => match self.order(app, server_names, &why).await {
                Ok(Ordered::Issued) => {
                    ensured.renewal_error = None;
                    ensured.issued = true;
                }
                Ok(Ordered::NotNeeded) => ensured.issued = true,
                Ok(Ordered::Elsewhere(holder)) => {
                    if stored.is_none() {
                        ensured.waiting =
                            Some(format!("waiting for {holder} to get the certificate"));
                    }
                }
                Err(err) => {
                    let err = format!("{err:#}");
                    tracing::error!(%app, "ordering the certificate failed, the current one (if any) keeps serving: {err}");
                    ensured.renewal_error = Some(err);
                }
            },
        }
        ensured
    }
}

/// What an attempt to order found.
enum Ordered {
    Issued,
    /// Another server finished it just before this one got the lease.
    NotNeeded,
    /// Another server holds the lease.
    Elsewhere(String),
}

impl GroupAcme<'_> {
    async fn order(
        &self,
        app: &AppName,
        server_names: &[String],
        why: &str,
    ) -> anyhow::Result<Ordered> {
        let key = layout::acme_lease(self.group);
        let held = match lease::take(self.store, &key, self.host, self.settings.lease).await? {
            lease::Taken::Busy(holder) => return Ok(Ordered::Elsewhere(holder)),
            lease::Taken::Held(held) => held,
        };
        let result = self.order_held(app, server_names, why, &held).await;
        held.release().await;
        result
    }

    async fn order_held(
        &self,
        app: &AppName,
        server_names: &[String],
        why: &str,
        held: &lease::Held,
    ) -> anyhow::Result<Ordered> {
        // Decided again under the lease: another server may have just finished.
        let (orders, _) = milky_core::acme::read(self.store, self.group).await?;
        let stored = read_stored(self.store, self.group, app).await?;
        let info = stored
            .as_ref()
            .and_then(|s| milky_core::tls::certificate_info(&s.chain).ok());
        let order = orders.apps.get(app);
        if !matches!(
            milky_core::acme::decide(info.as_ref(), server_names, order, milky_core::tls::now()),
            Need::Order(_)
        ) {
            return Ok(Ordered::NotNeeded);
        }
        let request_seen = order.and_then(|o| o.renew_requested.clone());
        tracing::info!(%app, "ordering a certificate for {} ({why})", server_names.join(", "));
        let ordered = tokio::time::timeout(
            self.settings.order_timeout,
            order::run(self, app, server_names, held),
        )
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "the order took longer than [acme] order_timeout ({})",
                humantime::format_duration(self.settings.order_timeout)
            ))
        });
        let host = self.host.to_string();
        let now = milky_core::tls::now();
        match ordered {
            Ok(certificate) => {
                milky_core::tls::write(self.store, self.group, app, &certificate)
                    .await
                    .context("storing the certificate")?;
                crate::crash::point("acme:certificate-stored");
                milky_core::acme::edit(self.store, self.group, |orders| {
                    orders.apps.entry(app.clone()).or_default().succeeded(
                        request_seen.as_deref(),
                        &host,
                        now,
                    );
                })
                .await?;
                tracing::info!(%app, "stored the new certificate (expires {})", milky_core::tls::time_text(certificate.not_after));
                Ok(Ordered::Issued)
            }
            Err(err) => {
                let message = format!("{err:#}");
                milky_core::acme::edit(self.store, self.group, |orders| {
                    orders
                        .apps
                        .entry(app.clone())
                        .or_default()
                        .failed(message.clone(), now);
                })
                .await?;
                Err(err)
            }
        }
    }
}

/// The group's stored certificate of `app`, if any.
pub async fn read_stored(
    store: &Store,
    group: &GroupName,
    app: &AppName,
) -> anyhow::Result<Option<StoredCertificate>> {
    let key = layout::tls(group, app);
    let Some(object) = store.get(&key).await? else {
        return Ok(None);
    };
    let stored = StoredCertificate::parse(&String::from_utf8_lossy(&object.bytes))
        .with_context(|| format!("{key} in {}", store.url()))?;
    Ok(Some(stored))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use milky_core::store::S3Options;

    use super::*;
    use crate::web::WebSettings;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        web: WebStack,
        state: PathBuf,
        group: GroupName,
        host: HostName,
        settings: AcmeSettings,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("store").display());
        std::fs::create_dir_all(dir.path().join("store")).unwrap();
        let store = Store::open(&url.parse().unwrap(), &S3Options::default())
            .await
            .unwrap();
        let web = WebStack::new(WebSettings::new(
            dir.path().join("web"),
            "127.0.0.1:9".parse().unwrap(),
        ))
        .unwrap();
        Fixture {
            state: dir.path().join("state/acme"),
            _dir: dir,
            store,
            web,
            group: GroupName::new("stable").unwrap(),
            host: HostName::new("web-2").unwrap(),
            settings: AcmeSettings::default(),
        }
    }

    impl Fixture {
        fn acme(&self) -> GroupAcme<'_> {
            GroupAcme {
                store: &self.store,
                group: &self.group,
                host: &self.host,
                web: &self.web,
                settings: &self.settings,
                state_dir: self.state.clone(),
            }
        }

        fn answers(&self) -> Vec<(String, String)> {
            let mut files: Vec<_> = std::fs::read_dir(self.web.acme_challenge_dir())
                .map(|dir| dir.flatten().collect())
                .unwrap_or_else(|_| Vec::new())
                .into_iter()
                .map(|e| {
                    let text = std::fs::read_to_string(e.path()).unwrap();
                    (e.file_name().to_string_lossy().into_owned(), text)
                })
                .collect();
            files.sort();
            files
        }

        async fn ack(&self) -> Option<Ack> {
            let object = self
                .store
                .get(&layout::acme_ack(&self.group, &self.host))
                .await
                .unwrap()?;
            Some(Ack::parse(&String::from_utf8_lossy(&object.bytes)).unwrap())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pending_answers_are_served_acknowledged_and_removed_when_done() {
        let f = fixture().await;
        let shop = AppName::new("shop").unwrap();
        f.acme().sync_challenges().await.unwrap();
        assert!(f.answers().is_empty());
        milky_core::acme::edit(&f.store, &f.group, |orders| {
            orders.apps.entry(shop.clone()).or_default().challenges =
                [("tok-1".to_owned(), "tok-1.thumb".to_owned())].into();
        })
        .await
        .unwrap();
        let orders = f.acme().sync_challenges().await.unwrap();
        assert!(orders.apps[&shop].challenges.contains_key("tok-1"));
        assert_eq!(
            f.answers(),
            [("tok-1".to_owned(), "tok-1.thumb".to_owned())]
        );
        assert_eq!(f.ack().await.unwrap().tokens, ["tok-1"]);
        // Unchanged: no new acknowledgement (deleted here, it is not written again).
        f.store
            .delete(&layout::acme_ack(&f.group, &f.host))
            .await
            .unwrap();
        f.acme().sync_challenges().await.unwrap();
        assert_eq!(f.ack().await, None);
        milky_core::acme::edit(&f.store, &f.group, |orders| {
            orders
                .apps
                .get_mut(&shop)
                .unwrap()
                .failed("refused".into(), 0);
        })
        .await
        .unwrap();
        f.acme().sync_challenges().await.unwrap();
        assert!(f.answers().is_empty(), "stale answers are removed");
        assert!(f.ack().await.unwrap().tokens.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_server_holds_the_lease_until_it_releases_it() {
        let f = fixture().await;
        let key = layout::acme_lease(&f.group);
        let (one, two) = (HostName::new("web-1").unwrap(), f.host.clone());
        let ttl = Duration::from_secs(60);
        let lease::Taken::Held(held) = lease::take(&f.store, &key, &one, ttl).await.unwrap() else {
            panic!("a free lease is taken");
        };
        assert!(held.still_held());
        match lease::take(&f.store, &key, &two, ttl).await.unwrap() {
            lease::Taken::Busy(holder) => assert_eq!(holder, "web-1"),
            lease::Taken::Held(_) => panic!("two holders"),
        }
        held.release().await;
        let lease::Taken::Held(held) = lease::take(&f.store, &key, &two, ttl).await.unwrap() else {
            panic!("a released lease is free");
        };
        held.release().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_order_waits_out_its_backoff_and_reports_why() {
        let f = fixture().await;
        let shop = AppName::new("shop").unwrap();
        let orders = milky_core::acme::edit(&f.store, &f.group, |orders| {
            orders
                .apps
                .entry(shop.clone())
                .or_default()
                .failed("connection refused".into(), milky_core::tls::now());
        })
        .await
        .unwrap();
        let names = ["shop.example".to_owned()];
        // In its backoff nothing is ordered (no lease taken), and the error is reported.
        let ensured = f.acme().ensure(&shop, &names, &orders, None).await;
        assert!(ensured.waiting.unwrap().contains("connection refused"));
        assert!(ensured.renewal_error.unwrap().contains("next attempt"));
        assert!(!ensured.issued);
        assert!(
            f.store
                .get(&layout::acme_lease(&f.group))
                .await
                .unwrap()
                .is_none()
        );
    }
}
