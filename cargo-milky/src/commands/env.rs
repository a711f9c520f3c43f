//! `cargo milky env`: per-group app settings and secrets, delivered by the agents to the app.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use milky_core::env::{self, AppEnv};
use milky_core::store::EditError;
use milky_core::{AppName, GroupName, IndexError, Store};

use crate::cli::GlobalArgs;
use crate::exit::user_error;
use crate::progress::Printer;
use crate::settings::Settings;

/// Settings and secrets of an app in a group (SECRET_KEY, DATABASE_URL, ALLOWED_HOSTS, …).
///
/// Stored in the store (groups/GROUP/env/APP.toml), never in packages, and edited with
/// compare-and-swap. When does a change take effect? On each server's next pass (cron: within
/// 5 minutes; `run`: within its interval): the agent restarts the app through the same
/// blue/green switch as a new version, so no request is dropped, and a change that makes the app
/// fail its health check leaves the old processes serving. `cargo milky status` shows which
/// servers run the newest generation; `--wait` blocks until all do.
///
/// With a signing key (--sign-key, MILKY_SIGNING_KEY or `signing_key` under [deploy]) every edit
/// signs the new generation; servers that trust keys run only envs a trusted key signed.
/// `env sign` signs an env as it is.
#[derive(Debug, Args)]
pub struct EnvArgs {
    #[command(subcommand)]
    pub command: EnvCommand,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Set variables: KEY=VALUE… (the value is everything after the first '=')
    #[command(
        after_help = "Example:\n  cargo milky env set stable myapp DEBUG=0 'ALLOWED_HOSTS=example.com,www.example.com'"
    )]
    Set {
        group: GroupName,
        app: AppName,
        #[arg(required = true, value_name = "KEY=VALUE")]
        vars: Vec<String>,
        #[command(flatten)]
        options: EditOptions,
    },
    /// Remove variables
    Unset {
        group: GroupName,
        app: AppName,
        #[arg(required = true, value_name = "KEY")]
        names: Vec<String>,
        #[command(flatten)]
        options: EditOptions,
    },
    /// List variables (values hidden unless --show)
    List {
        group: GroupName,
        app: AppName,
        /// Print the values too
        #[arg(long)]
        show: bool,
        /// Print as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Set every variable of a .env file (KEY=VALUE lines, quotes and `export` allowed)
    Import {
        group: GroupName,
        app: AppName,
        file: std::path::PathBuf,
        #[command(flatten)]
        options: EditOptions,
    },
    /// Sign the env as it is, as a new generation (servers restart the app with it)
    #[command(
        after_help = "For an env written before signing was set up, or edited without the key: servers that trust\nthe key refuse it until it is signed, and keep serving with the env they have."
    )]
    Sign {
        group: GroupName,
        app: AppName,
        /// The secret key (from `cargo milky keygen`) [default: $MILKY_SIGNING_KEY, else [deploy] signing_key in milky.toml]
        #[arg(long, value_name = "PATH")]
        sign_key: Option<PathBuf>,
    },
}

#[derive(Debug, Args, Clone)]
pub struct EditOptions {
    /// Show what would change; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Sign the new generation with this secret key (from `cargo milky keygen`) [default: $MILKY_SIGNING_KEY, else [deploy] signing_key in milky.toml]
    #[arg(long, value_name = "PATH")]
    pub sign_key: Option<PathBuf>,
    #[command(flatten)]
    pub new_group: crate::groups::NewGroupArgs,
    #[command(flatten)]
    pub wait: crate::wait::WaitArgs,
}

pub async fn run(args: EnvArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    let settings = Settings::resolve(global)?;
    let writes = match &args.command {
        EnvCommand::Set { options, .. }
        | EnvCommand::Unset { options, .. }
        | EnvCommand::Import { options, .. } => !options.dry_run,
        EnvCommand::List { .. } => false,
        EnvCommand::Sign { .. } => true,
    };
    let store = settings.open_store_for(writes).await?;
    let (group, app, options, change) = match args.command {
        EnvCommand::Set {
            group,
            app,
            vars,
            options,
        } => {
            let mut assignments = BTreeMap::new();
            for var in &vars {
                let (name, value) =
                    env::parse_assignment(var).map_err(|e| user_error(e.to_string()))?;
                assignments.insert(name, value);
            }
            (group, app, options, Change::Set(assignments))
        }
        EnvCommand::Unset {
            group,
            app,
            names,
            options,
        } => {
            for name in &names {
                env::check_name(name).map_err(|e| user_error(e.to_string()))?;
            }
            (group, app, options, Change::Unset(names))
        }
        EnvCommand::Import {
            group,
            app,
            file,
            options,
        } => {
            let text = fs_err::read_to_string(&file)?;
            let vars = env::parse_dotenv(&text)
                .map_err(|e| user_error(format!("{}: {e}", file.display())))?;
            (group, app, options, Change::Set(vars))
        }
        EnvCommand::List {
            group,
            app,
            show,
            json,
        } => {
            require_group(&store, &group).await?;
            return list(&store, &group, &app, show, json).await;
        }
        EnvCommand::Sign {
            group,
            app,
            sign_key,
        } => {
            require_group(&store, &group).await?;
            return sign(
                &settings,
                &store,
                &group,
                &app,
                sign_key.as_deref(),
                printer,
            )
            .await;
        }
    };
    let index = store.read_index().await?.map(|(index, _)| index);
    crate::groups::allow_new(&store, index.as_ref(), &group, &options.new_group).await?;
    apply(&settings, &store, &group, &app, &options, printer, &change).await
}

async fn require_group(store: &Store, group: &GroupName) -> anyhow::Result<()> {
    let index = store.read_index().await?.map(|(index, _)| index);
    crate::groups::require(store, index.as_ref(), group).await
}

/// What an edit does to the variables.
enum Change {
    Set(BTreeMap<String, String>),
    Unset(Vec<String>),
}

impl Change {
    fn apply_to(&self, vars: &mut BTreeMap<String, String>) {
        match self {
            Change::Set(new) => vars.extend(new.clone()),
            Change::Unset(names) => names.iter().for_each(|name| {
                vars.remove(name);
            }),
        }
    }
}

async fn list(
    store: &Store,
    group: &GroupName,
    app: &AppName,
    show: bool,
    json: bool,
) -> anyhow::Result<()> {
    let (env, _) = env::read(store, group, app)
        .await
        .context("reading the env")?;
    let shown: BTreeMap<&String, String> = env
        .vars
        .iter()
        .map(|(k, v)| (k, if show { v.clone() } else { "(hidden)".into() }))
        .collect();
    let signer = env.signer().map(|id| id.to_string());
    if json {
        return super::print_json(
            &serde_json::json!({ "group": group, "app": app, "generation": env.generation, "signed_by": signer, "vars": shown }),
        );
    }
    let signed = signer.map_or("unsigned".to_owned(), |id| format!("signed by {id}"));
    outln!("{app} in {group}: generation {}, {signed}", env.generation);
    for (name, value) in shown {
        if show {
            outln!("{name}={}", serde_json::to_string(&value)?);
        } else {
            outln!("{name} (hidden; --show prints values)");
        }
    }
    Ok(())
}

async fn sign(
    settings: &Settings,
    store: &Store,
    group: &GroupName,
    app: &AppName,
    sign_key: Option<&std::path::Path>,
    printer: Printer,
) -> anyhow::Result<()> {
    let key = settings.signing_key(sign_key)?.ok_or_else(|| {
        user_error(
            "no signing key given: pass --sign-key PATH, set MILKY_SIGNING_KEY, or add `signing_key = \"…\"` under [deploy] in milky.toml",
        )
    })?;
    let (env, changed) = match env::sign(store, group, app, &key.key).await {
        Err(EditError::Edit(err @ env::EnvError::NothingToSign { .. })) => {
            return Err(user_error(err.to_string()));
        }
        other => other.context("signing the env")?,
    };
    let id = key.key.public().id();
    if changed {
        record_generation(store, group, app, env.generation).await?;
        crate::group_state::after_edit(settings, sign_key, store, group, printer).await?;
        outln!(
            "{app} in {group}: env generation {} signed by {id}; servers restart the app on their next pass",
            env.generation
        );
    } else {
        outln!(
            "{app} in {group}: env generation {} was signed by {id} already",
            env.generation
        );
    }
    Ok(())
}

async fn apply(
    settings: &Settings,
    store: &Store,
    group: &GroupName,
    app: &AppName,
    options: &EditOptions,
    printer: Printer,
    change: &Change,
) -> anyhow::Result<()> {
    let key = settings.signing_key(options.sign_key.as_deref())?;
    if options.dry_run {
        let (env, _) = env::read(store, group, app)
            .await
            .context("reading the env")?;
        let mut after = env.vars.clone();
        change.apply_to(&mut after);
        print_diff(&env, &after);
        printer.status("dry run: nothing written");
        return Ok(());
    }
    let before = env::read(store, group, app)
        .await
        .context("reading the env")?
        .0;
    let signer = key.as_ref().map(|k| &k.key);
    let (env, changed) = env::edit(store, group, app, signer, |vars| change.apply_to(vars))
        .await
        .context("writing the env")?;
    if !changed {
        outln!(
            "{app} in {group}: no change (generation {})",
            env.generation
        );
        return Ok(());
    }
    // Reports written before the new generation is in the index are about an older one: a
    // failure in one of them is not this generation's (`--wait` waits for the servers to try it).
    let reports_before = if options.wait.wait {
        Some(crate::wait::ReportsBefore::read(store, group).await?)
    } else {
        None
    };
    record_generation(store, group, app, env.generation).await?;
    crate::group_state::after_edit(settings, options.sign_key.as_deref(), store, group, printer)
        .await?;
    print_diff(&before, &env.vars);
    let signed = match &key {
        Some(key) => format!(", signed by {}", key.key.public().id()),
        None => String::new(),
    };
    outln!(
        "{app} in {group}: env generation {}{signed}; servers restart the app on their next pass",
        env.generation
    );
    if key.is_none()
        && let Some(signer) = before.signer()
    {
        tracing::warn!(
            "the env was signed (by {signer}); this generation is not: servers that verify keep the old env until `cargo milky env sign {group} {app}` (or an edit with --sign-key)"
        );
    }
    if let Some(reports_before) = reports_before {
        crate::wait::until_env_converged(
            store,
            group,
            app,
            env.generation,
            &reports_before,
            &options.wait,
            printer,
        )
        .await?;
    }
    Ok(())
}

/// Puts the env's new generation in version.info, which is what servers watch.
async fn record_generation(
    store: &Store,
    group: &GroupName,
    app: &AppName,
    generation: u64,
) -> anyhow::Result<()> {
    store
        .edit_index(|index| -> Result<_, IndexError> {
            index.set_env_generation(group, app, generation);
            Ok(())
        })
        .await
        .context("recording the env generation in version.info")?;
    Ok(())
}

fn print_diff(before: &AppEnv, after: &BTreeMap<String, String>) {
    for (name, value) in after {
        match before.vars.get(name) {
            None => outln!("  + {name}"),
            Some(old) if old != value => outln!("  ~ {name}"),
            Some(_) => {}
        }
    }
    for name in before.vars.keys().filter(|n| !after.contains_key(*n)) {
        outln!("  - {name}");
    }
}
