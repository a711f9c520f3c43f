//! `cargo milky doctor`: checks the store before servers rely on it.

use clap::Args;
use milky_core::once::probe_conditional_writes;

use crate::cli::GlobalArgs;
use crate::settings::Settings;

/// Check the store: reachable, index readable, and conditional writes honoured (If-None-Match
/// and If-Match on PUT). Without them two controllers can lose each other's edits and two
/// servers can both run a group's migrations; some S3-compatible servers ignore them.
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
    match probe_conditional_writes(&store, "doctor").await? {
        Ok(()) => {
            outln!("ok: conditional writes are honoured");
            Ok(())
        }
        Err(why) => anyhow::bail!(
            "this store does not honour conditional writes: {why}; index edits can be lost and agents will refuse to run once hooks (migrations)"
        ),
    }
}
