//! Whether a store really applies conditional writes, found by trying: some S3-compatible
//! servers ignore `If-None-Match`/`If-Match`, others check them and then write without a lock, so
//! two writers that race both pass. One sequential try cannot tell the second kind; a race can.
//!
//! Every check writes under its own scratch key below a prefix and deletes what it wrote.

use tokio::task::JoinSet;

use super::{Condition, Store, StoreError};

/// Writers in each race: enough that a check-then-write store lets two through.
const RACERS: usize = 8;
/// Races of each kind: a store without a lock may still serialise one race by luck.
const ROUNDS: usize = 3;

/// One check and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub what: &'static str,
    /// Why it failed; None when the store passed it.
    pub failure: Option<String>,
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// Ok, or every failure in one line.
    pub fn verdict(&self) -> Result<(), String> {
        let failures: Vec<String> = self
            .checks
            .iter()
            .filter_map(|c| c.failure.as_ref().map(|why| format!("{}: {why}", c.what)))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }
}

/// Checks, under `prefix`, that the store refuses a create over an object and a replace with a
/// stale ETag and changes nothing when it refuses; that of racing creates of one key at most one
/// wins (and the key then holds its bytes); and the same of racing replaces of one ETag.
pub async fn probe(store: &Store, prefix: &str) -> Result<Report, StoreError> {
    // The name agents' access policies allow deleting under their once prefix.
    let run = format!(
        "{prefix}/.conditional-write-probe-{:016x}",
        rand::random::<u64>()
    );
    let keys = [
        format!("{run}-sequential"),
        format!("{run}-creates"),
        format!("{run}-replaces"),
    ];
    let result = checks(store, &keys).await;
    for key in &keys {
        // Best effort: a failed delete leaves a few bytes, not a wrong answer.
        let _ = store.delete(key).await;
    }
    result
}

async fn checks(
    store: &Store,
    [sequential, creates, replaces]: &[String; 3],
) -> Result<Report, StoreError> {
    let mut checks = refusals(store, sequential).await?;
    checks.push(Check {
        what: "racing creates of one key",
        failure: race_creates(store, creates).await?,
    });
    checks.push(Check {
        what: "racing replaces of one version",
        failure: race_replaces(store, replaces).await?,
    });
    Ok(Report { checks })
}

/// A create over an existing object and a stale replace are refused, and leave it unchanged.
async fn refusals(store: &Store, key: &str) -> Result<Vec<Check>, StoreError> {
    store
        .put(key, b"first".to_vec(), Condition::IfAbsent)
        .await?;
    let create = refused(
        store
            .put(key, b"second".to_vec(), Condition::IfAbsent)
            .await,
        "it accepted a create (If-None-Match: *) over an existing object",
    )?;
    let stale = refused(
        store
            .put(
                key,
                b"stale".to_vec(),
                Condition::IfMatch("\"00000000000000000000000000000000\"".into()),
            )
            .await,
        "it accepted a replace (If-Match) with a stale ETag",
    )?;
    let now = store.get(key).await?.map(|o| o.bytes);
    let unchanged = (now.as_deref() != Some(b"first".as_slice())).then(|| {
        format!(
            "the object holds {:?} after the refused writes, not the bytes first written",
            now.map(|b| String::from_utf8_lossy(&b).into_owned())
        )
    });
    Ok(vec![
        Check {
            what: "a create over an existing object",
            failure: create,
        },
        Check {
            what: "a replace with a stale ETag",
            failure: stale,
        },
        Check {
            what: "an object after refused writes",
            failure: unchanged,
        },
    ])
}

/// None if the write was refused as a failed precondition; `accepted` if it went through.
fn refused(
    result: Result<String, StoreError>,
    accepted: &str,
) -> Result<Option<String>, StoreError> {
    match result {
        Ok(_) => Ok(Some(accepted.to_owned())),
        Err(StoreError::PreconditionFailed { .. }) => Ok(None),
        Err(other) => Err(other),
    }
}

fn body(round: usize, writer: usize) -> Vec<u8> {
    format!("round {round} writer {writer}").into_bytes()
}

/// Races [`RACERS`] writes of `key` under `condition`; returns the writers the store said yes
/// to, with the ETags it gave them.
async fn race(
    store: &Store,
    key: &str,
    round: usize,
    condition: Condition,
) -> Result<Vec<(usize, String)>, StoreError> {
    let mut writers = JoinSet::new();
    for writer in 0..RACERS {
        let (store, key, condition) = (store.clone(), key.to_owned(), condition.clone());
        writers.spawn(async move {
            (
                writer,
                store.put(&key, body(round, writer), condition).await,
            )
        });
    }
    let mut won = Vec::new();
    while let Some(joined) = writers.join_next().await {
        let (writer, result) = joined.expect("a probe writer does not panic");
        match result {
            Ok(etag) => won.push((writer, etag)),
            Err(StoreError::PreconditionFailed { .. }) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(won)
}

/// The failure of one race: more than one winner, or a winner whose bytes the key does not
/// hold. No winner at all is no harm done (S3 may answer 409 to writes that collide in flight).
async fn judge(
    store: &Store,
    key: &str,
    round: usize,
    won: &[(usize, String)],
    what: &str,
) -> Result<Option<String>, StoreError> {
    let winner = match won {
        [] => return Ok(None),
        [(winner, _)] => *winner,
        _ => {
            return Ok(Some(format!(
                "{} of {RACERS} concurrent {what} succeeded; at most one may",
                won.len()
            )));
        }
    };
    let now = store.get(key).await?.map(|o| o.bytes);
    if now != Some(body(round, winner)) {
        return Ok(Some(format!(
            "the store said yes to one of {RACERS} concurrent {what}, but holds other bytes"
        )));
    }
    Ok(None)
}

async fn race_creates(store: &Store, key: &str) -> Result<Option<String>, StoreError> {
    for round in 0..ROUNDS {
        let key = format!("{key}-{round}");
        let won = race(store, &key, round, Condition::IfAbsent).await;
        let judged = match won {
            Ok(won) => judge(store, &key, round, &won, "creates (If-None-Match: *)").await,
            Err(err) => Err(err),
        };
        store.delete(&key).await?;
        if let Some(failure) = judged? {
            return Ok(Some(failure));
        }
    }
    Ok(None)
}

async fn race_replaces(store: &Store, key: &str) -> Result<Option<String>, StoreError> {
    let mut etag = store.put(key, b"base".to_vec(), Condition::None).await?;
    for round in 0..ROUNDS {
        let won = race(store, key, round, Condition::IfMatch(etag.clone())).await?;
        let what = "replaces (If-Match) of one ETag";
        if let Some(failure) = judge(store, key, round, &won, what).await? {
            return Ok(Some(failure));
        }
        if let Some((_, new)) = won.first() {
            etag = new.clone();
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;

    #[tokio::test]
    async fn the_local_store_passes_and_the_probe_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Local(LocalStore::open(dir.path()).unwrap());
        let report = probe(&store, "doctor").await.unwrap();
        assert_eq!(report.verdict(), Ok(()), "{report:?}");
        assert_eq!(report.checks.len(), 5);
        assert!(store.list("doctor/").await.unwrap().is_empty());
    }
}
