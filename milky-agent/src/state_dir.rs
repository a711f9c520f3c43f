//! What the agent remembers between passes, in its state dir. What runs is not stored here: it
//! is read back from the web stack's own files each pass, so the two can never disagree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use milky_core::{AppName, Version};
use serde::{Deserialize, Serialize};

const STATE_FILE: &str = "state.toml";
const INDEX_CACHE: &str = "version.info";
const GROUP_STATE_CACHE: &str = "group-state.toml";
const DEPLOY_KEYS_CACHE: &str = "deploy-keys.toml";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// ETag of the index last read: the next pass asks the store "only if changed".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_etag: Option<String>,
    /// The env generation (`cargo milky env`) each app's live processes were started with.
    #[serde(default)]
    pub live_env: BTreeMap<AppName, u64>,
    /// Versions that failed to deploy, so they are not retried on every pass.
    #[serde(default)]
    pub failures: BTreeMap<AppName, Failure>,
    /// Whether the store applies conditional writes atomically (probed before once hooks, again
    /// after a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditional_writes: Option<ConditionalWrites>,
    /// When the status report was last written (unix seconds) and what it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<String>,
    /// The group's signed state: the highest generation accepted (a lower one is a replay and
    /// is refused), the ETag of the copy cached on disk, and whether the last pass found the
    /// index and that state in agreement (if not, the state is read again each pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_state_generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_state_etag: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub group_state_settled: bool,
    /// The highest generation of the deploy key list (`keys.toml`) accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_keys_generation: Option<u64>,
}

/// The outcome of probing a store for conditional writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionalWrites {
    pub store: String,
    /// Why not, if the store ignores them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
    /// When it was probed (unix seconds); a verdict older than a day is probed again.
    #[serde(default)]
    pub checked: u64,
}

/// A failed deploy of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub version: Version,
    /// The index generation it failed under: a new generation is always tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_etag: Option<String>,
    pub attempts: u32,
    pub error: String,
    /// Unix seconds.
    pub failed_at: u64,
    pub retry_at: u64,
}

impl Failure {
    /// Backoff after `attempts` failures: 1, 2, 4 … minutes, at most 6 hours.
    pub fn backoff_secs(attempts: u32) -> u64 {
        (60u64 << attempts.saturating_sub(1).min(9)).min(6 * 3600)
    }
}

/// The state dir and its files.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    pub fn new(root: &Path) -> anyhow::Result<Self> {
        fs_err::create_dir_all(root)?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn lock_path(&self) -> PathBuf {
        self.root.join("agent.lock")
    }

    pub fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// A missing or unreadable state is a fresh start: the worst it costs is one full index read
    /// and one retry of a failed version.
    pub fn load(&self) -> AgentState {
        let path = self.root.join(STATE_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!("ignoring unreadable {}: {e}", path.display());
                AgentState::default()
            }),
            Err(_) => AgentState::default(),
        }
    }

    pub fn save(&self, state: &AgentState) -> anyhow::Result<()> {
        let path = self.root.join(STATE_FILE);
        let text = toml::to_string(state)?;
        // An idle pass changes nothing: no write, no fsync.
        if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            return Ok(());
        }
        write_atomic(&path, text.as_bytes())
    }

    pub fn cached_index(&self) -> Option<String> {
        std::fs::read_to_string(self.root.join(INDEX_CACHE)).ok()
    }

    pub fn cache_index(&self, text: &str) -> anyhow::Result<()> {
        write_atomic(&self.root.join(INDEX_CACHE), text.as_bytes())
    }

    /// The group's signed state as last read from the store.
    pub fn cached_group_state(&self) -> Option<String> {
        std::fs::read_to_string(self.root.join(GROUP_STATE_CACHE)).ok()
    }

    pub fn cache_group_state(&self, text: &str) -> anyhow::Result<()> {
        write_atomic(&self.root.join(GROUP_STATE_CACHE), text.as_bytes())
    }

    /// The deploy key list as last read from the store.
    pub fn cached_deploy_keys(&self) -> Option<String> {
        std::fs::read_to_string(self.root.join(DEPLOY_KEYS_CACHE)).ok()
    }

    pub fn cache_deploy_keys(&self, text: &str) -> anyhow::Result<()> {
        write_atomic(&self.root.join(DEPLOY_KEYS_CACHE), text.as_bytes())
    }
}

/// Write to a temp file and rename: a crash leaves the old file or the new one, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("path has a parent")?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing into {}", dir.display()))?;
    std::io::Write::write_all(&mut temp, bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(Failure::backoff_secs(1), 60);
        assert_eq!(Failure::backoff_secs(2), 120);
        assert_eq!(Failure::backoff_secs(50), 6 * 3600);
    }

    #[test]
    fn state_round_trips_and_a_broken_file_is_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let states = StateDir::new(dir.path()).unwrap();
        assert_eq!(states.load(), AgentState::default());
        let mut state = AgentState {
            index_etag: Some("\"abc\"".into()),
            ..AgentState::default()
        };
        state.failures.insert(
            "shop".parse().unwrap(),
            Failure {
                version: "v3".parse().unwrap(),
                index_etag: None,
                attempts: 1,
                error: "boom".into(),
                failed_at: 1,
                retry_at: 61,
            },
        );
        states.save(&state).unwrap();
        assert_eq!(states.load(), state);
        std::fs::write(dir.path().join(STATE_FILE), "not = [toml").unwrap();
        assert_eq!(states.load(), AgentState::default());
    }

    #[test]
    fn an_unchanged_state_is_not_written_again() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let states = StateDir::new(dir.path()).unwrap();
        let inode = || {
            std::fs::metadata(dir.path().join(STATE_FILE))
                .unwrap()
                .ino()
        };
        let mut state = AgentState {
            index_etag: Some("\"abc\"".into()),
            ..AgentState::default()
        };
        states.save(&state).unwrap();
        let first = inode();
        states.save(&state).unwrap();
        assert_eq!(inode(), first, "an identical state was rewritten");
        state.index_etag = Some("\"def\"".into());
        states.save(&state).unwrap();
        assert_ne!(inode(), first, "a changed state was not written");
        assert_eq!(states.load(), state);
    }
}
