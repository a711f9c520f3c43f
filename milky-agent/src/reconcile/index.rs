//! What the index asks of this server: the index itself (a conditional GET, else the copy
//! cached in the state dir) and the apps it gives this server's group.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use milky_core::store::Fetched;
use milky_core::{Index, layout};

use super::{Agent, Wanted};
use crate::state_dir::AgentState;

impl Agent {
    /// The index: fetched if it changed since the last pass (one small conditional request when
    /// it did not), else the cached copy. A broken index is an error; the cache is kept.
    pub(super) async fn read_index(&self, state: &mut AgentState) -> anyhow::Result<(Index, bool)> {
        let cached = self.state_dir.cached_index();
        let etag = cached.as_ref().and(state.index_etag.as_deref());
        match self.store.get_if_changed(layout::INDEX, etag).await? {
            Fetched::NotModified => {
                let text = cached.expect("a conditional GET is only made with a cache");
                Ok((Index::parse(&text).context("the cached index")?, true))
            }
            Fetched::Changed(object) => {
                let text = String::from_utf8_lossy(&object.bytes).into_owned();
                let (index, text, etag) = match Index::parse(&text) {
                    Ok(index) => (index, text, object.etag),
                    // Torn on its way from a busy store, or broken: the store's reader reads
                    // it again and calls it broken only when two reads agree.
                    Err(_) => match self.store.read_index().await? {
                        Some((index, etag)) => {
                            let text = index.to_string();
                            (index, text, etag)
                        }
                        None => return Err(self.no_index()),
                    },
                };
                self.state_dir.cache_index(&text)?;
                state.index_etag = Some(etag);
                Ok((index, false))
            }
            Fetched::Missing => Err(self.no_index()),
        }
    }

    fn no_index(&self) -> anyhow::Error {
        anyhow!(
            "{} has no {}; nothing was changed on this server",
            self.store.url(),
            layout::INDEX
        )
    }

    pub(super) fn cached_index(&self) -> Option<Index> {
        Index::parse(&self.state_dir.cached_index()?).ok()
    }

    pub(super) fn wanted(&self, index: &Index, errors: &mut Vec<String>) -> Wanted {
        let mut wanted = BTreeMap::new();
        for (app, version) in index.group(&self.config.group) {
            match index.package(&app, &version) {
                Some(entry) => {
                    wanted.insert(app, (version, entry));
                }
                None => errors.push(format!(
                    "{app}: the index names {version} but lists no such package"
                )),
            }
        }
        wanted
    }
}
