//! `cargo milky doctor`: checks the store before servers rely on it.

use clap::Args;

use crate::cli::GlobalArgs;
use crate::settings::Settings;

/// Check the store: reachable, index readable, and conditional writes applied atomically.
///
/// Besides one create over an existing object and one replace with a stale ETag (both must be
/// refused, and change nothing), it races 8 conditional creates of one key and 8 replaces of one
/// ETag: at most one of each may win. Without that, two controllers can lose each other's edits
/// of version.info, a package can be overwritten, and two servers can both run a group's
/// migrations; some S3-compatible servers ignore the conditions, others check them without a
/// lock. Commands that write refuse such a store (see --allow-unsafe-store); they remember the
/// verdict for a day, and doctor refreshes it.
#[derive(Debug, Args)]
pub struct DoctorArgs {}

pub async fn run(_args: DoctorArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let store = settings.open_store().await?;
    outln!("store: {}", store.url());
    match store.read_index().await? {
        Some((index, _)) => outln!(
            "ok: version.info parses ({} group(s), {} app(s))",
            index.groups().len(),
            index.apps().len()
        ),
        None => outln!("ok: no version.info yet (the first upload creates it)"),
    }
    let report = crate::store_check::probe_now(&store).await?;
    for check in &report.checks {
        match &check.failure {
            None => outln!("ok: {}", check.what),
            Some(why) => outln!("FAILED: {}: {why}", check.what),
        }
    }
    match report.verdict() {
        Ok(()) => {
            outln!("ok: conditional writes are applied atomically");
            Ok(())
        }
        Err(why) => anyhow::bail!(
            "this store does not apply conditional writes atomically: {why}; index edits can be lost, packages overwritten, and agents will refuse to run once hooks (migrations). Commands that write refuse it unless --allow-unsafe-store (MILKY_ALLOW_UNSAFE_STORE=1, `allow_unsafe_store = true` under [deploy]) says otherwise"
        ),
    }
}
