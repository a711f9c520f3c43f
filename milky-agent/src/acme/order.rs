//! One ACME order (instant-acme), run by the server holding the group's lease: the group's
//! account, the order, its HTTP-01 answers spread to every server before the CA validates,
//! a fresh key and CSR, and the certificate checked like any other before it is stored.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use milky_core::acme::Ack;
use milky_core::status::DEFAULT_STALE_AFTER;
use milky_core::store::{Condition, StoreError};
use milky_core::tls::{self, Source, StoredCertificate};
use milky_core::{AppName, HostName, layout};

use super::GroupAcme;
use super::lease::Held;

/// Orders a certificate for `names` and returns it, checked, with its new key.
pub(super) async fn run(
    acme: &GroupAcme<'_>,
    app: &AppName,
    names: &[String],
    held: &Held,
) -> anyhow::Result<StoredCertificate> {
    let account = account(acme).await?;
    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .context("creating the order")?;

    // Every pending authorization's HTTP-01 answer: token → key authorization.
    let mut answers = BTreeMap::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.context("reading the order's authorizations")?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            // Proved recently by this account: nothing to answer.
            AuthorizationStatus::Valid => continue,
            other => bail!(
                "the CA's authorization for {} is {other:?}",
                authz.identifier()
            ),
        }
        let identifier = authz.identifier().to_string();
        let challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| anyhow!("the CA offers no HTTP-01 challenge for {identifier}"))?;
        answers.insert(
            challenge.token.clone(),
            challenge.key_authorization().as_str().to_owned(),
        );
    }

    if !answers.is_empty() {
        publish(acme, app, &answers).await?;
        crate::crash::point("acme:answers-published");
        let tokens: Vec<String> = answers.keys().cloned().collect();
        wait_for_acks(acme, &tokens, held).await?;
        if !held.still_held() {
            bail!("lost the ACME lease while the challenges spread");
        }
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| anyhow!("the HTTP-01 challenge vanished"))?;
            challenge
                .set_ready()
                .await
                .context("asking the CA to validate")?;
        }
    }

    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(Duration::from_secs(90));
    let status = order
        .poll_ready(&retries)
        .await
        .context("waiting for the CA to validate")?;
    if status != OrderStatus::Ready {
        bail!(
            "the CA refused the order ({status:?}): {}",
            validation_errors(&mut order).await
        );
    }
    crate::crash::point("acme:challenges-valid");

    let key = rcgen::KeyPair::generate().context("generating the certificate's key")?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    order
        .finalize_csr(csr.der())
        .await
        .context("finalizing the order")?;
    let chain = order
        .poll_certificate(&retries)
        .await
        .context("downloading the certificate")?;
    crate::crash::point("acme:certificate-downloaded");
    let key = key.serialize_pem();
    let info = tls::inspect(&chain, &key)?;
    info.check(names, tls::now())?;
    if !held.still_held() {
        bail!("lost the ACME lease before storing the certificate");
    }
    Ok(StoredCertificate {
        source: Source::Acme,
        names: info.names,
        not_after: info.not_after,
        chain,
        key,
    })
}

/// Why the CA refused: each failed challenge's error.
async fn validation_errors(order: &mut instant_acme::Order) -> String {
    let mut errors = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if let Ok(state) = authz.refresh().await {
            errors.extend(
                state
                    .challenges
                    .iter()
                    .filter_map(|c| c.error.as_ref())
                    .map(ToString::to_string),
            );
        }
    }
    if errors.is_empty() {
        "no reason given".to_owned()
    } else {
        errors.join("; ")
    }
}

/// The group's account: the stored one if it is for this directory, else a new one, stored
/// for the group (the first server to store one wins; the others use it).
async fn account(acme: &GroupAcme<'_>) -> anyhow::Result<Account> {
    let key = layout::acme_account(acme.group);
    let directory = &acme.settings.directory;
    let builder = || match &acme.settings.ca_roots {
        Some(roots) => Account::builder_with_root(roots)
            .with_context(|| format!("reading [acme] ca_roots {}", roots.display())),
        None => Account::builder().context("setting up the ACME client"),
    };
    let stored = acme.store.get(&key).await?;
    let mut condition = Condition::IfAbsent;
    if let Some(object) = stored {
        let text = String::from_utf8_lossy(&object.bytes);
        let credentials: StoredAccount =
            toml::from_str(&text).with_context(|| format!("{key} is broken"))?;
        if credentials.directory == *directory {
            let credentials: AccountCredentials = serde_json::from_str(&credentials.credentials)
                .with_context(|| format!("{key} is broken"))?;
            return builder()?
                .from_credentials(credentials)
                .await
                .with_context(|| format!("reaching the ACME directory {directory}"));
        }
        // Another CA (the setting changed): a new account replaces it.
        condition = Condition::IfMatch(object.etag);
    }
    let contact: Vec<&str> = acme.settings.contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.clone(),
            None,
        )
        .await
        .with_context(|| format!("creating an ACME account at {directory}"))?;
    let stored = StoredAccount {
        directory: directory.clone(),
        credentials: serde_json::to_string(&credentials)?,
    };
    match acme
        .store
        .put(&key, toml::to_string(&stored)?.into_bytes(), condition)
        .await
    {
        Ok(_) => {
            tracing::info!("created the group's ACME account at {directory}");
            Ok(account)
        }
        // Another server stored one first: the group has one account.
        Err(StoreError::PreconditionFailed { .. }) => Box::pin(self::account(acme)).await,
        Err(other) => Err(other).context("storing the ACME account"),
    }
}

/// The stored account: the directory it belongs to and instant-acme's credentials (JSON,
/// with the account's private key).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: String,
}

/// Puts the answers into the group's orders and into this server's challenge dir.
async fn publish(
    acme: &GroupAcme<'_>,
    app: &AppName,
    answers: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    milky_core::acme::edit(acme.store, acme.group, |orders| {
        orders.apps.entry(app.clone()).or_default().challenges = answers.clone();
    })
    .await?;
    tokio::task::block_in_place(|| {
        answers
            .iter()
            .try_for_each(|(token, answer)| acme.web.write_challenge(token, answer))
    })?;
    Ok(())
}

/// Waits until every other live server of the group acknowledges `tokens`, or
/// `[acme] challenge_wait` passed (then the CA is asked anyway: a server that does not answer
/// may not be the one it asks, and the next order is only a backoff away).
async fn wait_for_acks(acme: &GroupAcme<'_>, tokens: &[String], held: &Held) -> anyhow::Result<()> {
    let deadline = Instant::now() + acme.settings.challenge_wait;
    loop {
        let reports = milky_core::status::read_group(acme.store, acme.group).await?;
        let now = SystemTime::now();
        let live: Vec<HostName> = reports
            .into_iter()
            .filter(|(host, report)| {
                host != acme.host
                    && report
                        .as_ref()
                        .ok()
                        .and_then(|r| r.age_secs(now))
                        .is_some_and(|age| age < DEFAULT_STALE_AFTER.as_secs())
            })
            .map(|(host, _)| host)
            .collect();
        let mut missing = Vec::new();
        for host in live {
            let ack = acme
                .store
                .get(&layout::acme_ack(acme.group, &host))
                .await?
                .and_then(|o| Ack::parse(&String::from_utf8_lossy(&o.bytes)).ok());
            if !ack.is_some_and(|a| a.covers(tokens.iter())) {
                missing.push(host.to_string());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                "{} do not answer the ACME challenges after [acme] challenge_wait; asking the CA to validate anyway",
                missing.join(", ")
            );
            return Ok(());
        }
        if !held.still_held() {
            bail!("lost the ACME lease while the challenges spread");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
