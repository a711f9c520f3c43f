//! `cargo milky init`: write a milky.toml into a Django project, after checking that its settings
//! would deploy.

mod checks;
mod choices;
mod layout;
mod milky_toml;
mod prompt;
mod python;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Args;
use milky_core::project::{FILE_NAME, Hooks, ProjectConfig};
use milky_core::{AppName, GroupName, StoreUrl};

use self::checks::{DEFAULT_STATIC_DIR, Deploy, Fix};
use self::choices::{
    choose_fixes, choose_requirements, choose_server_names, choose_settings,
    warn_if_settings_forced,
};
use self::milky_toml::{Manifest, excludes, render};
use self::prompt::Prompt;
use crate::cli::GlobalArgs;
use crate::exit::user_error;
use crate::progress::Printer;

/// Write a milky.toml into a Django project.
///
/// Finds the settings modules (named in manage.py, wsgi.py or asgi.py, or a settings package's
/// base/dev/production modules) and takes the production one, the WSGI module (WSGI_APPLICATION,
/// or a wsgi.py in the settings' package or above) and the requirements file (production's first).
/// Then it reads the settings as a server would see them and reports what would fail a deploy:
/// no STATIC_ROOT, an ALLOWED_HOSTS that rejects the health check's Host, SQLite inside the
/// release, SSL redirects without the proxy header, DEBUG. Fixes go into an overlay settings
/// module beside the project's (`<settings>_milky.py`), which milky.toml then names. On a terminal
/// it asks; with --yes it takes the defaults and applies only the fixes that change nothing that
/// already works. The [deploy] table (store and default group) is the controller's own and is
/// never packed; the rest describes the app and goes into every package.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  cargo milky init --group stable --store s3://my-bucket/milky ./mysite"
)]
pub struct InitArgs {
    /// The Django project directory
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The app's name [default: the directory's name]
    #[arg(long)]
    pub name: Option<AppName>,
    /// The default group, written under [deploy]
    #[arg(long)]
    pub group: Option<GroupName>,
    /// Take the defaults and apply only the safe fixes; never ask
    #[arg(long, short)]
    pub yes: bool,
    /// Overwrite an existing milky.toml
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: InitArgs, global: &GlobalArgs, printer: Printer) -> anyhow::Result<()> {
    let dir = &args.dir;
    let target = dir.join(FILE_NAME);
    if target.exists() && !args.force {
        return Err(user_error(format!(
            "{} exists; pass --force to overwrite it",
            target.display()
        )));
    }
    let root = fs_err::canonicalize(dir)?;
    if !root.join("manage.py").is_file() {
        printer.status(format!(
            "note: no manage.py in {}; treating it as a plain WSGI app",
            dir.display()
        ));
    }
    let layout = layout::detect(&root);
    let prompt = Prompt {
        interactive: !args.yes && std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
    };

    let name = match args.name.clone() {
        Some(name) => name,
        None => {
            let guess = name_from_dir(&root);
            match (&guess, prompt.interactive) {
                (Some(guess), false) => guess.clone(),
                _ => prompt
                    .input("App name", guess.map(|g| g.to_string()), false)?
                    .ok_or_else(|| {
                        user_error("cannot derive an app name from the directory; pass --name")
                    })?
                    .parse()?,
            }
        }
    };

    let settings_module = choose_settings(&layout, prompt, printer)?;
    let settings = settings_module
        .as_deref()
        .and_then(|m| python::read_settings(&root, m));
    if let Some(module) = &settings_module {
        warn_if_settings_forced(&root, module, printer);
    }
    let wsgi = match layout::wsgi_for(&root, settings_module.as_deref(), settings.as_ref()) {
        Some(wsgi) => wsgi,
        None => prompt
            .input("WSGI callable (module:attribute)", None, false)?
            .ok_or_else(|| {
                user_error(
                    "no wsgi.py found; pass the module by editing milky.toml or run interactively",
                )
            })?,
    };
    let requirements = choose_requirements(&layout, prompt, printer)?;
    let server_names = choose_server_names(&name, settings.as_ref(), prompt, printer)?;
    let host = server_names
        .first()
        .cloned()
        .unwrap_or_else(|| name.to_string());
    let mut hooks = Hooks::django_defaults();
    let findings = checks::check(
        settings.as_ref(),
        &Deploy {
            root: &root,
            host: &host,
            health: "/",
            collectstatic: hooks.server.iter().any(|h| h.contains("collectstatic")),
        },
    );
    let fixes = choose_fixes(&findings, prompt, printer)?;

    if fixes
        .iter()
        .any(|fix| matches!(fix, Fix::SqliteInDataDir(_)))
    {
        // Each server keeps its own SQLite file in its data dir: migrating once per group would
        // leave every other server's database without tables.
        hooks.server.splice(0..0, std::mem::take(&mut hooks.once));
        printer.status(
            "SQLite lives in each server's data dir, so every server migrates its own database: migrate is a server hook, not a once hook",
        );
    }

    let mut app_settings = settings_module.clone();
    if let (Some(module), false) = (&settings_module, fixes.is_empty()) {
        app_settings = Some(write_overlay(&root, module, &fixes, printer)?);
    }
    let static_dir = match (&findings.static_dir, fixes.contains(&Fix::StaticRoot)) {
        (_, true) => Some(DEFAULT_STATIC_DIR.to_owned()),
        (dir, false) => dir
            .clone()
            .filter(|d| milky_core::project::check_relative_path("static_dir", d).is_ok()),
    };

    let store = global
        .store
        .clone()
        .or_else(|| std::env::var("MILKY_STORE").ok());
    if let Some(store) = &store {
        store.parse::<StoreUrl>()?;
    }
    let text = render(&Manifest {
        name: &name,
        wsgi: &wsgi,
        settings: app_settings.as_deref(),
        static_dir: static_dir.as_deref(),
        server_names: &server_names,
        requirements: requirements.as_deref(),
        python: layout.python.as_deref(),
        media_url: fixes.iter().find_map(|fix| match fix {
            Fix::MediaInDataDir { url } => url.as_deref(),
            _ => None,
        }),
        hooks: &hooks,
        excludes: &excludes(&findings),
        store: store.as_deref(),
        endpoint: global.endpoint_url.as_deref(),
        group: args.group.as_ref(),
    });
    // What we write must be what we read back.
    ProjectConfig::parse(&text).map_err(|e| {
        user_error(format!(
            "the detected settings are not valid ({e}); pass them explicitly"
        ))
    })?;
    fs_err::write(&target, text)?;
    let left = findings
        .problems
        .iter()
        .filter(|p| p.fix.as_ref().is_none_or(|f| !fixes.contains(f)))
        .count();
    printer.status(format!(
        "wrote {} (app {name}, wsgi {wsgi}{}){}",
        target.display(),
        app_settings
            .map(|s| format!(", settings {s}"))
            .unwrap_or_default(),
        match left {
            0 => String::new(),
            1 => "; 1 problem above is not fixed".to_owned(),
            n => format!("; {n} problems above are not fixed"),
        }
    ));
    outln!("{}", target.display());
    Ok(())
}

fn name_from_dir(dir: &Path) -> Option<AppName> {
    let raw = dir.file_name()?.to_string_lossy().to_lowercase();
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    AppName::new(cleaned.trim_matches('-')).ok()
}

/// Writes the overlay settings module and shows it; returns its module name.
fn write_overlay(
    root: &Path,
    module: &str,
    fixes: &[Fix],
    printer: Printer,
) -> anyhow::Result<String> {
    let file = python::module_file(root, module).expect("the settings were read from it");
    let rel = file.strip_prefix(root).unwrap_or(&file);
    let (overlay, overlay_rel) = checks::overlay_module(module, rel);
    let path = root.join(&overlay_rel);
    if let Ok(existing) = std::fs::read_to_string(&path)
        && !existing.starts_with(checks::OVERLAY_MARKER)
    {
        return Err(user_error(format!(
            "{} exists and was not written by cargo milky init; move it away to let init write the fixes there",
            path.display()
        )));
    }
    let text = checks::render_overlay(module, &overlay_rel, fixes);
    fs_err::write(&path, &text)?;
    printer.status(format!(
        "wrote {} (the servers' settings: {module} with the fixes above):\n{}",
        overlay_rel.display(),
        text.lines()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    ));
    Ok(overlay)
}
