//! The group's signed state on this server (required with trusted keys, unless `[signing]
//! require_signed_state = false`): read when the index changed, when the copy accepted nears
//! its expiry, or while the last one did not match the index; checked against the trusted
//! keys, the highest generation accepted before and the clock; and applied to the plan of the
//! pass, so only what it names is installed or removed.
//!
//! An idle pass with a settled state makes no request for it: the index's conditional GET
//! stays the only one.

use std::collections::BTreeMap;

use milky_core::signing::deploy_keys::DeployKeys;
use milky_core::signing::group_state::{GroupState, StateError, unix_now};
use milky_core::signing::{PublicKey, TrustedKeys};
use milky_core::store::Fetched;
use milky_core::{AppName, GroupName, PackageEntry, Store, Version, layout};

use crate::config::Signing;
use crate::plan::{Plan, Running, Step};
use crate::state_dir::{AgentState, StateDir};
use crate::verify::Verifier;

/// A state this close to its expiry is read again on every pass, so a refreshed one (`cargo
/// milky sign-state`, daily from CI) is picked up before the old one runs out.
const REFRESH_BEFORE_SECS: u64 = 24 * 3600;

/// What the group's signed state allows this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Not required on this server: the pass goes by the index alone, as before.
    Off,
    /// A valid, trusted, unexpired state, not older than any accepted before: only what it
    /// names is installed, and only apps it does not name are removed.
    Open(GroupState),
    /// No acceptable state: nothing new is installed, nothing removed; what serves keeps
    /// serving (a release that stopped is brought back as it was).
    Closed(String),
}

/// Where the pass finds the state: the store, this server's copy, its memory.
pub struct Source<'a> {
    pub store: &'a Store,
    pub state_dir: &'a StateDir,
    pub group: &'a GroupName,
}

impl Gate {
    /// Decides the gate of this pass. `index_changed`: the index was read anew this pass.
    pub async fn load(
        source: &Source<'_>,
        state: &mut AgentState,
        signing: &Signing,
        verifier: &Verifier,
        index_changed: bool,
    ) -> Self {
        if !required(signing, verifier) {
            return Self::Off;
        }
        let trusted = match verifier {
            Verifier::On(keys) => Some(keys),
            Verifier::Off => None,
            Verifier::Broken(why) => {
                return Self::Closed(format!("the trusted keys cannot be read ({why})"));
            }
        };
        let cached = source.state_dir.cached_group_state();
        let cached_state = cached.as_deref().and_then(|t| GroupState::parse(t).ok());
        let now = unix_now();
        let near_expiry = cached_state
            .as_ref()
            .and_then(GroupState::expires_at)
            .is_none_or(|at| at <= now + REFRESH_BEFORE_SECS);
        let fetch_now = index_changed || !state.group_state_settled || near_expiry;
        let deploy_keys;
        let keys = if signing.root_keys.is_empty() {
            let Some(keys) = trusted else {
                return Self::Closed(
                    "require_signed_state is set but no trusted or root keys are configured ([signing] in agent.toml)".into(),
                );
            };
            keys
        } else {
            match deploy_keys_of(source, state, &signing.root_keys, fetch_now).await {
                Ok(listed) => {
                    deploy_keys = listed;
                    &deploy_keys
                }
                Err(why) => return Self::Closed(why),
            }
        };
        let text = if fetch_now {
            match fetch(source, state, cached).await {
                Ok(Some(text)) => text,
                Ok(None) => {
                    return Self::Closed(
                        StateError::Missing {
                            group: source.group.clone(),
                            why: format!(
                                "{} has no {}",
                                source.store.url(),
                                layout::group_state(source.group)
                            ),
                        }
                        .to_string(),
                    );
                }
                Err(err) => return Self::Closed(format!("reading the signed state: {err:#}")),
            }
        } else {
            cached.expect("a settled state is cached")
        };
        let group_state = match GroupState::parse(&text) {
            Ok(group_state) => group_state,
            Err(err) => {
                return Self::Closed(format!(
                    "{} does not parse ({err}); refused",
                    layout::group_state(source.group)
                ));
            }
        };
        let highest = state.group_state_generation.unwrap_or(0);
        match group_state.check(keys, source.group, highest, now) {
            Ok(signer) => {
                tracing::debug!(generation = group_state.generation, %signer, "group state verified");
                state.group_state_generation = Some(highest.max(group_state.generation));
                Self::Open(group_state)
            }
            Err(err) => Self::Closed(err.to_string()),
        }
    }

    /// Cuts the plan down to what the gate allows; what it refuses goes into the errors (per
    /// app, or for the whole pass when the gate is closed). Records whether index and state
    /// agreed, which decides whether the next idle pass reads the state again.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &self,
        plan: &mut Plan,
        wanted: &BTreeMap<AppName, (Version, PackageEntry)>,
        wanted_env: &BTreeMap<AppName, u64>,
        running: &BTreeMap<AppName, Running>,
        state: &mut AgentState,
        app_errors: &mut BTreeMap<AppName, String>,
        errors: &mut Vec<String>,
    ) {
        let env = |app: &AppName| wanted_env.get(app).copied().unwrap_or(0);
        match self {
            Self::Off => state.group_state_settled = false,
            Self::Closed(why) => {
                state.group_state_settled = false;
                errors.push(format!(
                    "signed state: {why}; nothing new is installed or removed"
                ));
                // Only a release that stopped comes back, exactly as it ran.
                plan.steps.retain(|step| {
                    matches!(step, Step::Deploy { app, version, .. }
                    if running.get(app).is_some_and(|r| {
                        r.version.as_ref() == Some(version) && r.env_generation == env(app)
                    }))
                });
            }
            Self::Open(signed) => {
                let mut refused: BTreeMap<AppName, String> = BTreeMap::new();
                for (app, (version, entry)) in wanted {
                    if let Err(why) = signed.allows(app, version, &entry.sha256, env(app)) {
                        refused.insert(app.clone(), why);
                    }
                }
                for app in signed.apps.keys().filter(|a| !wanted.contains_key(*a)) {
                    refused.insert(
                        app.clone(),
                        format!(
                            "the signed state (generation {}) lists {app}, the index does not; refused",
                            signed.generation
                        ),
                    );
                }
                plan.steps.retain(|step| {
                    let app = match step {
                        Step::Deploy { app, .. } | Step::Remove { app } => app,
                    };
                    !refused.contains_key(app)
                });
                state.group_state_settled = refused.is_empty();
                app_errors.extend(refused);
            }
        }
    }
}

/// Whether this server goes by signed group state: as `require_signed_state` says, else
/// whenever it trusts keys. A server that checks package signatures but not which of them its
/// group runs would still install any old signed release an attacker points the index at.
fn required(signing: &Signing, verifier: &Verifier) -> bool {
    signing
        .require_signed_state
        .unwrap_or(!matches!(verifier, Verifier::Off) || !signing.root_keys.is_empty())
}

/// The deploy keys on the newest list a root key signed: read from the store when the state
/// is, else the copy on this server; never a list older than one accepted before.
async fn deploy_keys_of(
    source: &Source<'_>,
    state: &mut AgentState,
    roots: &[PublicKey],
    fetch_now: bool,
) -> Result<TrustedKeys, String> {
    let cached = source.state_dir.cached_deploy_keys();
    let text = match cached {
        Some(text) if !fetch_now => text,
        cached => match source.store.get(layout::DEPLOY_KEYS).await {
            Ok(Some(object)) => {
                let text = String::from_utf8_lossy(&object.bytes).into_owned();
                if let Err(err) = source.state_dir.cache_deploy_keys(&text) {
                    tracing::warn!("caching {}: {err:#}", layout::DEPLOY_KEYS);
                }
                text
            }
            Ok(None) => {
                return Err(format!(
                    "root keys are configured but {} has no {} (`cargo milky keys add`)",
                    source.store.url(),
                    layout::DEPLOY_KEYS
                ));
            }
            Err(err) => cached.ok_or_else(|| format!("reading {}: {err}", layout::DEPLOY_KEYS))?,
        },
    };
    let list = DeployKeys::parse(&text)
        .map_err(|err| format!("{} does not parse ({err}); refused", layout::DEPLOY_KEYS))?;
    let highest = state.deploy_keys_generation.unwrap_or(0);
    let keys = list
        .check(&TrustedKeys::new(roots.to_vec()), highest)
        .map_err(|err| err.to_string())?;
    state.deploy_keys_generation = Some(highest.max(list.generation));
    Ok(keys)
}

/// The state's text: from the store (a conditional GET when a copy is cached), else the copy
/// when the store does not answer. `None` when the store has none.
async fn fetch(
    source: &Source<'_>,
    state: &mut AgentState,
    cached: Option<String>,
) -> anyhow::Result<Option<String>> {
    let key = layout::group_state(source.group);
    let etag = cached.as_ref().and(state.group_state_etag.as_deref());
    match source.store.get_if_changed(&key, etag).await {
        Ok(Fetched::NotModified) => Ok(cached),
        Ok(Fetched::Changed(object)) => {
            let text = String::from_utf8_lossy(&object.bytes).into_owned();
            source.state_dir.cache_group_state(&text)?;
            state.group_state_etag = Some(object.etag);
            Ok(Some(text))
        }
        Ok(Fetched::Missing) => Ok(None),
        Err(err) => match cached {
            Some(text) => {
                tracing::warn!("reading {key}: {err}; checking the copy on this server");
                Ok(Some(text))
            }
            None => Err(err.into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use milky_core::signing::group_state::StateEntry;

    use super::*;

    #[test]
    fn signed_state_is_required_wherever_keys_are_trusted_unless_turned_off() {
        let public = milky_core::signing::SecretKey::generate().unwrap().public();
        let trusting = Verifier::On(TrustedKeys::new(vec![public.clone()]));
        let rooted = Signing {
            root_keys: vec![public],
            ..Signing::default()
        };
        let unset = Signing::default();
        assert!(!required(&unset, &Verifier::Off), "no keys: as before");
        assert!(required(&unset, &trusting));
        assert!(required(&unset, &Verifier::Broken("unreadable".into())));
        assert!(required(&rooted, &Verifier::Off));
        let off = Signing {
            require_signed_state: Some(false),
            ..Signing::default()
        };
        assert!(!required(&off, &trusting), "turned off by hand");
        let on = Signing {
            require_signed_state: Some(true),
            ..Signing::default()
        };
        assert!(
            required(&on, &Verifier::Off),
            "asked for without keys: refuses"
        );
    }

    fn app(name: &str) -> AppName {
        name.parse().unwrap()
    }
    fn v(name: &str) -> Version {
        name.parse().unwrap()
    }
    fn entry(hex: &str) -> PackageEntry {
        PackageEntry {
            sha256: hex.repeat(32),
            size: 1,
            uploaded: "2026-01-01T00:00:00Z".into(),
            signature: None,
            python: None,
        }
    }
    fn deploy(name: &str, version: &str, hex: &str) -> Step {
        Step::Deploy {
            app: app(name),
            version: v(version),
            entry: entry(hex),
        }
    }
    fn running(version: &str) -> Running {
        Running {
            version: Some(v(version)),
            serving: false,
            env_generation: 0,
        }
    }

    /// The state signs shop v2 (ab…) and blog v1 (cd…); the index wants shop v2 and wiki v1,
    /// and drops blog.
    #[test]
    fn an_open_gate_keeps_only_what_the_state_names() {
        let signed = GroupState {
            group: "stable".parse().unwrap(),
            generation: 3,
            expires: "2100-01-01T00:00:00Z".into(),
            signature: None,
            apps: [(app("shop"), ("v2", "ab")), (app("blog"), ("v1", "cd"))]
                .into_iter()
                .map(|(a, (version, hex))| {
                    let entry = StateEntry {
                        version: v(version),
                        sha256: hex.repeat(32),
                        env: 0,
                    };
                    (a, entry)
                })
                .collect(),
        };
        let wanted = BTreeMap::from([
            (app("shop"), (v("v2"), entry("ab"))),
            (app("wiki"), (v("v1"), entry("ef"))),
        ]);
        let mut plan = Plan {
            steps: vec![
                deploy("shop", "v2", "ab"),
                deploy("wiki", "v1", "ef"),
                Step::Remove { app: app("blog") },
                Step::Remove { app: app("old") },
            ],
            ..Plan::default()
        };
        let (mut state, mut app_errors, mut errors) =
            (AgentState::default(), BTreeMap::new(), Vec::new());
        Gate::Open(signed).apply(
            &mut plan,
            &wanted,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &mut state,
            &mut app_errors,
            &mut errors,
        );
        assert_eq!(
            plan.steps,
            [deploy("shop", "v2", "ab"), Step::Remove { app: app("old") }]
        );
        assert!(app_errors[&app("wiki")].contains("does not list wiki"));
        assert!(app_errors[&app("blog")].contains("lists blog, the index does not"));
        assert!(errors.is_empty());
        assert!(!state.group_state_settled, "a mismatch is read again");
    }

    #[test]
    fn a_closed_gate_only_brings_back_what_stopped() {
        let mut plan = Plan {
            steps: vec![
                deploy("shop", "v1", "ab"),
                deploy("blog", "v2", "cd"),
                Step::Remove { app: app("old") },
            ],
            ..Plan::default()
        };
        let running = BTreeMap::from([(app("shop"), running("v1")), (app("blog"), running("v1"))]);
        let (mut state, mut app_errors, mut errors) = (
            AgentState {
                group_state_settled: true,
                ..AgentState::default()
            },
            BTreeMap::new(),
            Vec::new(),
        );
        Gate::Closed("expired".into()).apply(
            &mut plan,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &running,
            &mut state,
            &mut app_errors,
            &mut errors,
        );
        assert_eq!(plan.steps, [deploy("shop", "v1", "ab")]);
        assert_eq!(
            errors,
            ["signed state: expired; nothing new is installed or removed"]
        );
        assert!(!state.group_state_settled);
    }
}
