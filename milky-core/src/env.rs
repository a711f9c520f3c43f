//! Per-group app settings and secrets: `groups/<group>/env/<app>.toml`, edited by
//! `cargo milky env` with the same compare-and-swap as the index, never inside packages.
//!
//! Each edit bumps the app's generation in `version.info` too (`[env.<group>] app = N`), so
//! agents notice a change with the one conditional GET of the index they make anyway, and
//! restart the app through the usual blue/green switch.
//!
//! An edit made with a signing key signs the new generation
//! ([`crate::signing::env_message`]); servers that trust keys refuse an env that no trusted key
//! signed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::{AppName, GroupName};
use crate::signing::{KeyId, SecretKey, TrustedKeys};
use crate::store::{Condition, EditError, Store, StoreError, backoff};

pub fn key(group: &GroupName, app: &AppName) -> String {
    crate::layout::env(group, app)
}

/// An app's environment in one group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppEnv {
    /// Bumped by every edit; servers report which generation they run.
    pub generation: u64,
    /// `<key-id>:<base64>` over group, app, generation and vars; absent when unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("invalid variable name {0:?}: use letters, digits and '_', not starting with a digit")]
    BadName(String),
    #[error("{0}")]
    BadLine(String),
    #[error("the env object is broken: {0}")]
    Malformed(String),
    #[error("{app} has no env in {group}: nothing to sign")]
    NothingToSign { group: GroupName, app: AppName },
}

/// POSIX environment variable names (portable subset).
pub fn check_name(name: &str) -> Result<(), EnvError> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(EnvError::BadName(name.to_owned()))
    }
}

impl AppEnv {
    pub fn parse(text: &str) -> Result<Self, EnvError> {
        let env: Self = toml::from_str(text).map_err(|e| EnvError::Malformed(e.to_string()))?;
        for name in env.vars.keys() {
            check_name(name)?;
        }
        Ok(env)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("env serializes")
    }

    /// Signs the env as it is now, as `app` in `group`.
    pub fn sign(&mut self, group: &GroupName, app: &AppName, key: &SecretKey) {
        self.signature = Some(key.sign_env(group, app, self.generation, &self.vars));
    }

    /// The key id its signature names, if any (not verified).
    pub fn signer(&self) -> Option<KeyId> {
        let (id, _) = self.signature.as_deref()?.split_once(':')?;
        KeyId::parse(id)
    }
}

/// Parses `KEY=VALUE` as given on a command line: the value is everything after the first `=`.
pub fn parse_assignment(text: &str) -> Result<(String, String), EnvError> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| EnvError::BadLine(format!("{text:?} is not KEY=VALUE")))?;
    check_name(name)?;
    Ok((name.to_owned(), value.to_owned()))
}

/// Parses a `.env` file: `KEY=VALUE` lines, `export ` allowed, `#` comments, values bare,
/// in single quotes (taken as they are) or in double quotes (with `\n`, `\"`, `\\` escapes and
/// real newlines inside).
pub fn parse_dotenv(text: &str) -> Result<BTreeMap<String, String>, EnvError> {
    let mut vars = BTreeMap::new();
    let mut rest = text;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let (line, after) = rest.split_once('\n').unwrap_or((rest, ""));
        rest = after;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let (name, raw) = trimmed.split_once('=').ok_or_else(|| {
            EnvError::BadLine(format!("line {line_no}: {trimmed:?} is not KEY=VALUE"))
        })?;
        let name = name.trim();
        check_name(name)?;
        let raw = raw.trim_start();
        let value = if let Some(body) = raw.strip_prefix('\'') {
            let end = body
                .find('\'')
                .ok_or_else(|| EnvError::BadLine(format!("line {line_no}: unclosed '")))?;
            body[..end].to_owned()
        } else if let Some(body) = raw.strip_prefix('"') {
            // A double-quoted value may run over several lines.
            let mut source = body.to_owned();
            loop {
                if let Some(value) = unescape_until_quote(&source) {
                    break value;
                }
                if rest.is_empty() {
                    return Err(EnvError::BadLine(format!("line {line_no}: unclosed \"")));
                }
                let (next, after) = rest.split_once('\n').unwrap_or((rest, ""));
                source.push('\n');
                source.push_str(next);
                rest = after;
                line_no += 1;
            }
        } else {
            raw.split(" #").next().unwrap_or("").trim_end().to_owned()
        };
        vars.insert(name.to_owned(), value);
    }
    Ok(vars)
}

/// The value up to the first unescaped `"`, unescaped; None if there is no closing quote yet.
fn unescape_until_quote(source: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = source.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            other => out.push(other),
        }
    }
    None
}

/// Reads an app's env (empty, generation 0, when there is none).
pub async fn read(
    store: &Store,
    group: &GroupName,
    app: &AppName,
) -> Result<(AppEnv, Option<String>), EditError<EnvError>> {
    match store.get(&key(group, app)).await? {
        None => Ok((AppEnv::default(), None)),
        Some(object) => {
            let env =
                AppEnv::parse(&String::from_utf8_lossy(&object.bytes)).map_err(EditError::Edit)?;
            Ok((env, Some(object.etag)))
        }
    }
}

/// Read-modify-write of an app's env under its ETag, re-applied on a lost race; the generation
/// goes up by one when anything changed, and the new generation is signed with `signer` (or left
/// unsigned without one). Returns the env as written (or as it was, unchanged).
pub async fn edit(
    store: &Store,
    group: &GroupName,
    app: &AppName,
    signer: Option<&SecretKey>,
    mut change: impl FnMut(&mut BTreeMap<String, String>),
) -> Result<(AppEnv, bool), EditError<EnvError>> {
    write(store, group, app, |env| {
        let before = env.vars.clone();
        change(&mut env.vars);
        if env.vars == before {
            return false;
        }
        env.generation += 1;
        env.signature = None;
        if let Some(key) = signer {
            env.sign(group, app, key);
        }
        true
    })
    .await
}

/// Signs the app's env as it is, as a new generation (so servers that refused it unsigned take
/// it at once, like any edit). Unchanged when it carries a valid signature by that key already.
/// An app without an env has nothing to sign: an error.
pub async fn sign(
    store: &Store,
    group: &GroupName,
    app: &AppName,
    key: &SecretKey,
) -> Result<(AppEnv, bool), EditError<EnvError>> {
    let mut missing = false;
    let own = TrustedKeys::new(vec![key.public()]);
    let result = write(store, group, app, |env| {
        missing = env.generation == 0;
        let signed = own
            .verify_env(
                group,
                app,
                env.generation,
                &env.vars,
                env.signature.as_deref(),
            )
            .is_ok();
        if missing || signed {
            return false;
        }
        env.generation += 1;
        env.sign(group, app, key);
        true
    })
    .await;
    if missing {
        return Err(EditError::Edit(EnvError::NothingToSign {
            group: group.clone(),
            app: app.clone(),
        }));
    }
    result
}

/// Reads the env, lets `change` edit it (returning whether it did) and writes it back under the
/// ETag it was read with, again on a lost race.
async fn write(
    store: &Store,
    group: &GroupName,
    app: &AppName,
    mut change: impl FnMut(&mut AppEnv) -> bool,
) -> Result<(AppEnv, bool), EditError<EnvError>> {
    let key = key(group, app);
    for attempt in 1..=40 {
        let (mut env, etag) = read(store, group, app).await?;
        if !change(&mut env) {
            return Ok((env, false));
        }
        let condition = etag.map_or(Condition::IfAbsent, Condition::IfMatch);
        match store.put(&key, env.to_toml().into_bytes(), condition).await {
            Ok(_) => return Ok((env, true)),
            Err(StoreError::PreconditionFailed { .. }) => {
                tokio::time::sleep(backoff(attempt)).await
            }
            Err(other) => return Err(other.into()),
        }
    }
    Err(StoreError::TooManyRaces {
        store: store.url(),
        key,
        attempts: 40,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_posix() {
        for ok in ["SECRET_KEY", "_x", "A1"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "1A", "A-B", "A B", "Ä"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_assignment("URL=a=b").unwrap(),
            ("URL".into(), "a=b".into())
        );
        assert!(parse_assignment("NOVALUE").is_err());
    }

    #[test]
    fn dotenv_files_keep_quotes_and_newlines() {
        let text = "# settings\nexport A=plain\nB='single \"kept\" $x'\nC=\"two\\nlines and \\\"quotes\\\"\"\nD=\"real\nnewline\"\nE=bare # comment\n\n";
        let vars = parse_dotenv(text).unwrap();
        assert_eq!(vars["A"], "plain");
        assert_eq!(vars["B"], "single \"kept\" $x");
        assert_eq!(vars["C"], "two\nlines and \"quotes\"");
        assert_eq!(vars["D"], "real\nnewline");
        assert_eq!(vars["E"], "bare");
        let err = parse_dotenv("OK=1\nnot a line\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn any_utf8_value_round_trips_through_the_object() {
        let mut env = AppEnv {
            generation: 3,
            ..AppEnv::default()
        };
        env.vars.insert(
            "SECRET_KEY".into(),
            "it's \"quoted\"\nand\ttabbed ünïcode \\ end".into(),
        );
        assert_eq!(AppEnv::parse(&env.to_toml()).unwrap(), env);
    }
}
