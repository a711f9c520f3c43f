//! Certificates from an ACME CA (`tls = "acme"`): what the servers of a group share in the store
//! to get and renew them together, and the pure decisions (whether to order, when to try again).
//!
//! One object per group, `groups/<group>/acme/orders.toml` ([`Orders`]), holds per app the
//! HTTP-01 answers of a pending order, a renewal request (`cargo milky tls renew`), and the last
//! failure with its backoff. Every server of the group reads it each pass (a conditional GET),
//! writes the answers into its challenge dir, and says which tokens it serves in its own
//! [`Ack`]; the server holding the group's ACME lease asks the CA to validate once every live
//! server acknowledged (or a bounded wait passed). The certificate and key go where `cargo milky
//! tls set` puts them ([`crate::tls`]), so every server installs them the same way.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names::{AppName, GroupName};
use crate::store::{Condition, Store, StoreError};
use crate::tls::{CertificateInfo, time_text};

#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key} is broken: {why}")]
    Broken { key: String, why: String },
    #[error("{0} kept changing under this edit; try again")]
    Contended(String),
}

/// The group's orders and their ETag (none when there are none yet).
pub async fn read(
    store: &Store,
    group: &GroupName,
) -> Result<(Orders, Option<String>), OrdersError> {
    let key = crate::layout::acme_orders(group);
    match store.get(&key).await? {
        None => Ok((Orders::default(), None)),
        Some(object) => {
            let orders = Orders::parse(&String::from_utf8_lossy(&object.bytes))
                .map_err(|why| OrdersError::Broken { key, why })?;
            Ok((orders, Some(object.etag)))
        }
    }
}

/// Applies `change` to the group's orders by compare-and-swap (re-read and re-applied when
/// another writer was first); returns what was written.
pub async fn edit(
    store: &Store,
    group: &GroupName,
    mut change: impl FnMut(&mut Orders),
) -> Result<Orders, OrdersError> {
    let key = crate::layout::acme_orders(group);
    for _ in 0..20 {
        let (mut orders, etag) = read(store, group).await?;
        change(&mut orders);
        let condition = match etag {
            Some(etag) => Condition::IfMatch(etag),
            None => Condition::IfAbsent,
        };
        match store
            .put(&key, orders.to_toml().into_bytes(), condition)
            .await
        {
            Ok(_) => return Ok(orders),
            Err(StoreError::PreconditionFailed { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(OrdersError::Contended(key))
}

/// The group's ACME orders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Orders {
    #[serde(default)]
    pub apps: BTreeMap<AppName, AppOrder>,
}

/// One app's orders in a group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppOrder {
    /// While an order waits for validation: HTTP-01 token → key authorization, which every
    /// server answers at `/.well-known/acme-challenge/TOKEN`. Not secret: the CA fetches them
    /// over plain HTTP.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub challenges: BTreeMap<String, String>,
    /// Set by `cargo milky tls renew` (RFC 3339): the next order renews whatever the expiry;
    /// cleared by the order that did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_requested: Option<String>,
    /// Why the last order failed (cleared by a successful one); the current certificate serves on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failed orders in a row.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// No new order before this (Unix seconds), after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// When the last certificate was issued (RFC 3339), and by which server's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Orders {
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("ACME orders serialize")
    }

    /// Every pending answer of the group: token → key authorization.
    pub fn challenges(&self) -> BTreeMap<&str, &str> {
        self.apps
            .values()
            .flat_map(|order| order.challenges.iter())
            .map(|(token, answer)| (token.as_str(), answer.as_str()))
            .collect()
    }
}

impl AppOrder {
    /// Records a failed order: the error, and when the next may start.
    pub fn failed(&mut self, error: String, now: u64) {
        self.failures = self.failures.saturating_add(1);
        self.retry_after = Some(now + backoff(self.failures).as_secs());
        self.error = Some(error);
        self.challenges.clear();
    }

    /// Records an issued certificate; clears the renewal request the order started from (a
    /// newer one stays).
    pub fn succeeded(&mut self, request_seen: Option<&str>, host: &str, now: u64) {
        *self = AppOrder {
            renew_requested: self
                .renew_requested
                .take()
                .filter(|r| Some(r.as_str()) != request_seen),
            issued: Some(time_text(now)),
            issued_by: Some(host.to_owned()),
            ..AppOrder::default()
        };
    }

    /// "…; next attempt after T" for reports.
    pub fn describe_error(&self) -> Option<String> {
        let error = self.error.as_deref()?;
        Some(match self.retry_after {
            Some(at) => format!(
                "{error} ({} failed order(s) in a row; next attempt after {})",
                self.failures,
                time_text(at)
            ),
            None => error.to_owned(),
        })
    }
}

/// What a server acknowledges: the tokens its nginx answers now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub tokens: Vec<String>,
    /// RFC 3339.
    pub written: String,
}

impl Ack {
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("an ACME ack serializes")
    }

    /// Whether it answers every one of `tokens`.
    pub fn covers<'a>(&self, mut tokens: impl Iterator<Item = &'a String>) -> bool {
        tokens.all(|token| self.tokens.contains(token))
    }
}

/// What an app's certificate needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// The stored certificate is fine.
    Current,
    /// A new one should be ordered, because…
    Order(String),
    /// One should be ordered, but the last order failed and the backoff runs until this
    /// (Unix seconds).
    Later { why: String, retry_after: u64 },
}

/// Whether `stored` (the group's certificate, if any) should be replaced by a new order now.
pub fn decide(
    stored: Option<&CertificateInfo>,
    server_names: &[String],
    order: Option<&AppOrder>,
    now: u64,
) -> Need {
    let why = match stored {
        None => Some("no certificate yet".to_owned()),
        Some(info) => {
            if let Some(missing) = server_names
                .iter()
                .find(|host| !info.names.iter().any(|n| crate::tls::covers(n, host)))
            {
                Some(format!("the certificate does not cover {missing}"))
            } else if order.is_some_and(|o| o.renew_requested.is_some()) {
                Some("renewal requested".to_owned())
            } else if renewal_due(info, now) {
                Some(format!(
                    "a third of its lifetime is left (it expires at {})",
                    time_text(info.not_after)
                ))
            } else {
                None
            }
        }
    };
    let Some(why) = why else {
        return Need::Current;
    };
    match order.and_then(|o| o.retry_after) {
        Some(retry_after) if retry_after > now => Need::Later { why, retry_after },
        _ => Need::Order(why),
    }
}

/// A certificate is renewed once a third of its lifetime is left (30 days of Let's Encrypt's 90).
pub fn renewal_due(info: &CertificateInfo, now: u64) -> bool {
    let lifetime = info.not_after.saturating_sub(info.not_before);
    now.saturating_add(lifetime / 3) >= info.not_after
}

/// How long after the `failures`-th failed order in a row the next may start: 5 minutes,
/// doubling, at most 6 hours (well inside Let's Encrypt's limit of 5 failed validations per
/// name and hour, and a third of a lifetime leaves weeks of attempts).
pub fn backoff(failures: u32) -> Duration {
    const FIRST: u64 = 5 * 60;
    const MAX: u64 = 6 * 3600;
    let doublings = failures.saturating_sub(1).min(16);
    Duration::from_secs((FIRST << doublings).min(MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 3600;

    fn info(names: &[&str], not_before: u64, not_after: u64) -> CertificateInfo {
        CertificateInfo {
            names: names.iter().map(|n| n.to_string()).collect(),
            not_before,
            not_after,
        }
    }

    #[test]
    fn renewal_is_due_with_a_third_of_the_lifetime_left() {
        let cert = info(&["a.example"], 0, 90 * DAY);
        assert!(!renewal_due(&cert, 59 * DAY));
        assert!(renewal_due(&cert, 60 * DAY));
        assert!(renewal_due(&cert, 100 * DAY));
        let names = ["a.example".to_owned()];
        assert_eq!(decide(Some(&cert), &names, None, DAY), Need::Current);
        assert!(
            matches!(decide(Some(&cert), &names, None, 61 * DAY), Need::Order(why) if why.contains("third"))
        );
        assert!(
            matches!(decide(None, &names, None, 0), Need::Order(why) if why.contains("no certificate"))
        );
        let more = ["a.example".to_owned(), "b.example".to_owned()];
        assert!(
            matches!(decide(Some(&cert), &more, None, DAY), Need::Order(why) if why.contains("b.example"))
        );
    }

    #[test]
    fn a_request_renews_and_a_failure_waits_out_its_backoff() {
        let cert = info(&["a.example"], 0, 90 * DAY);
        let names = ["a.example".to_owned()];
        let mut order = AppOrder {
            renew_requested: Some("2026-12-01T00:00:00Z".into()),
            ..AppOrder::default()
        };
        assert!(
            matches!(decide(Some(&cert), &names, Some(&order), DAY), Need::Order(why) if why == "renewal requested")
        );
        order.failed("connection refused".into(), DAY);
        assert_eq!(order.failures, 1);
        assert_eq!(order.retry_after, Some(DAY + 300));
        assert!(matches!(
            decide(Some(&cert), &names, Some(&order), DAY + 10),
            Need::Later { retry_after, .. } if retry_after == DAY + 300
        ));
        assert!(
            order
                .describe_error()
                .unwrap()
                .contains("connection refused")
        );
        assert!(matches!(
            decide(Some(&cert), &names, Some(&order), DAY + 300),
            Need::Order(_)
        ));
        // The request the order started from is done; one made meanwhile stays.
        let mut done = order.clone();
        done.succeeded(Some("2026-12-01T00:00:00Z"), "web-1", DAY);
        assert_eq!(done.renew_requested, None);
        assert_eq!((done.failures, done.error.as_deref()), (0, None));
        assert_eq!(done.issued_by.as_deref(), Some("web-1"));
        let mut newer = order.clone();
        newer.succeeded(Some("2026-11-01T00:00:00Z"), "web-1", DAY);
        assert!(newer.renew_requested.is_some());
    }

    #[test]
    fn backoff_doubles_up_to_six_hours() {
        let mins = |n| backoff(n).as_secs() / 60;
        assert_eq!([mins(1), mins(2), mins(3)], [5, 10, 20]);
        assert_eq!(mins(8), 360);
        assert_eq!(mins(u32::MAX), 360);
    }

    #[test]
    fn the_stored_objects_round_trip_and_unknown_fields_are_refused() {
        let mut orders = Orders::default();
        orders.apps.insert(
            AppName::new("shop").unwrap(),
            AppOrder {
                challenges: [("tok".to_owned(), "tok.thumb".to_owned())].into(),
                renew_requested: Some("2026-12-01T00:00:00Z".into()),
                ..AppOrder::default()
            },
        );
        let text = orders.to_toml();
        assert_eq!(Orders::parse(&text).unwrap(), orders);
        assert_eq!(
            orders.challenges().into_iter().collect::<Vec<_>>(),
            [("tok", "tok.thumb")]
        );
        assert!(Orders::parse("[apps.shop]\nsurprise = 1\n").is_err());
        assert_eq!(Orders::parse("").unwrap(), Orders::default());
        let ack = Ack {
            tokens: vec!["tok".into()],
            written: "2026-12-01T00:00:00Z".into(),
        };
        assert_eq!(Ack::parse(&ack.to_toml()).unwrap(), ack);
        assert!(ack.covers(["tok".to_owned()].iter()));
        assert!(!ack.covers(["tok".to_owned(), "other".to_owned()].iter()));
    }
}
