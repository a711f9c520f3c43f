//! `cargo milky init`: write a milky.toml into a Django project.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Args;
use milky_core::project::{FILE_NAME, ProjectConfig};
use milky_core::{AppName, GroupName, StoreUrl};

use crate::cli::GlobalArgs;
use crate::exit::user_error;
use crate::progress::Printer;

/// Write a milky.toml into a Django project.
///
/// Detects manage.py, the settings module (from manage.py) and the WSGI module (a wsgi.py next to
/// the settings), and asks only for what it cannot detect. With --yes it asks nothing and takes
/// the defaults, for scripts. The [deploy] table (store and default group) is the controller's
/// own and is never packed; the rest describes the app and goes into every package.
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
    /// Take the defaults; never ask
    #[arg(long, short)]
    pub yes: bool,
    /// Overwrite an existing milky.toml
    #[arg(long)]
    pub force: bool,
}

/// What could be found out about a project by reading it.
#[derive(Debug, Default)]
struct Detected {
    settings: Option<String>,
    wsgi: Option<String>,
    static_dir: Option<String>,
    requirements: Option<String>,
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
    if !dir.join("manage.py").is_file() {
        printer.status(format!(
            "note: no manage.py in {}; treating it as a plain WSGI app",
            dir.display()
        ));
    }
    let detected = detect(dir);
    let interactive =
        !args.yes && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let ask = |prompt: &str, default: Option<String>| -> anyhow::Result<Option<String>> {
        if !interactive {
            return Ok(default);
        }
        let mut input = dialoguer::Input::<String>::new().with_prompt(prompt);
        if let Some(default) = default {
            input = input.default(default);
        }
        Ok(Some(input.interact_text()?))
    };

    let name = match args.name.clone() {
        Some(name) => name,
        None => {
            let guess = name_from_dir(dir);
            match (&guess, interactive) {
                (Some(guess), false) => guess.clone(),
                _ => ask("App name", guess.map(|g| g.to_string()))?
                    .ok_or_else(|| {
                        user_error("cannot derive an app name from the directory; pass --name")
                    })?
                    .parse()?,
            }
        }
    };
    let wsgi = match detected.wsgi.clone() {
        Some(wsgi) => wsgi,
        None => ask("WSGI callable (module:attribute)", None)?.ok_or_else(|| {
            user_error(
                "no wsgi.py found; pass the module by editing milky.toml or run interactively",
            )
        })?,
    };
    let settings = detected.settings.clone();
    let store = global
        .store
        .clone()
        .or_else(|| std::env::var("MILKY_STORE").ok());
    if let Some(store) = &store {
        store.parse::<StoreUrl>()?;
    }

    let text = render(
        &name,
        &wsgi,
        settings.as_deref(),
        &detected,
        store.as_deref(),
        args.group.as_ref(),
        global.endpoint_url.as_deref(),
    );
    // What we write must be what we read back.
    ProjectConfig::parse(&text).map_err(|e| {
        user_error(format!(
            "the detected settings are not valid ({e}); pass them explicitly"
        ))
    })?;
    fs_err::write(&target, text)?;
    printer.status(format!(
        "wrote {} (app {name}, wsgi {wsgi}{})",
        target.display(),
        settings
            .map(|s| format!(", settings {s}"))
            .unwrap_or_default()
    ));
    println!("{}", target.display());
    Ok(())
}

fn name_from_dir(dir: &Path) -> Option<AppName> {
    let abs = dir.canonicalize().ok()?;
    let raw = abs.file_name()?.to_string_lossy().to_lowercase();
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

/// Reads manage.py for DJANGO_SETTINGS_MODULE and looks for the wsgi.py beside the settings.
fn detect(dir: &Path) -> Detected {
    let mut detected = Detected::default();
    if let Ok(manage) = std::fs::read_to_string(dir.join("manage.py")) {
        detected.settings = manage
            .lines()
            .find(|line| line.contains("DJANGO_SETTINGS_MODULE"))
            .and_then(|line| {
                quoted_strings(line)
                    .into_iter()
                    .find(|s| s != "DJANGO_SETTINGS_MODULE")
            });
    }
    let package = detected
        .settings
        .as_deref()
        .and_then(|s| s.rsplit_once('.'))
        .map(|(pkg, _)| pkg.to_owned());
    let candidates: Vec<String> = match &package {
        Some(pkg) => vec![pkg.clone()],
        None => std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("wsgi.py").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
    };
    detected.wsgi = candidates
        .iter()
        .find(|pkg| dir.join(pkg.replace('.', "/")).join("wsgi.py").is_file())
        .map(|pkg| format!("{pkg}.wsgi:application"));
    if let Some(settings) = &detected.settings
        && let Ok(text) =
            std::fs::read_to_string(dir.join(format!("{}.py", settings.replace('.', "/"))))
    {
        detected.static_dir = text
            .lines()
            .find(|line| line.trim_start().starts_with("STATIC_ROOT"))
            .and_then(|line| quoted_strings(line).pop())
            .map(|s| s.trim_matches('/').to_owned())
            .filter(|s| milky_core::project::check_relative_path("static_dir", s).is_ok());
    }
    detected.requirements = [
        "requirements.txt",
        "requirements/production.txt",
        "requirements/base.txt",
    ]
    .into_iter()
    .find(|r| dir.join(r).is_file())
    .map(str::to_owned);
    detected
}

fn quoted_strings(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find(['"', '\'']) {
        let quote = rest[start..].chars().next().expect("found a quote");
        let after = &rest[start + 1..];
        let Some(end) = after.find(quote) else { break };
        out.push(after[..end].to_owned());
        rest = &after[end + 1..];
    }
    out
}

fn render(
    name: &AppName,
    wsgi: &str,
    settings: Option<&str>,
    detected: &Detected,
    store: Option<&str>,
    group: Option<&GroupName>,
    endpoint: Option<&str>,
) -> String {
    let mut text = String::from(
        "# MilkyWhite settings of this project. `cargo milky package` packs [app], [hooks] and\n# [snippets] into every release; [deploy] is the controller's own and never leaves this file.\n\n[app]\n",
    );
    text += &format!("name = \"{name}\"\n");
    text += &format!("wsgi = \"{wsgi}\"\n");
    if let Some(settings) = settings {
        text += &format!("settings = \"{settings}\"\n");
    }
    match &detected.static_dir {
        Some(dir) => {
            text += &format!(
                "# collectstatic's STATIC_ROOT; nginx serves it at /static/\nstatic_dir = \"{dir}\"\n"
            )
        }
        None => {
            text += "# collectstatic's STATIC_ROOT; nginx serves it at /static/\n# static_dir = \"static_collected\"\n"
        }
    }
    text += "# The path servers check before they switch to a new release\nhealth = \"/\"\n";
    text += "# Host names nginx answers for this app\n# server_names = [\"myapp.example.com\"]\n";
    if let Some(requirements) = &detected.requirements {
        text += &format!("requirements = \"{requirements}\"\n");
    }
    text += "\n[hooks]\n# Run once per group and version, by one server, before any server switches\nonce = [\"python manage.py migrate --noinput\"]\n# Run on every server before it switches\nserver = [\"python manage.py collectstatic --noinput\"]\n";
    text += "\n[package]\n# Left out of packages, on top of .gitignore and .milkyignore (gitignore syntax)\nexclude = [\"*.sqlite3\", \"media/\"]\n# Vendor every requirement as a wheel, so servers install offline\nwheels = false\n";
    text += "\n[deploy]\n";
    match store {
        Some(store) => text += &format!("store = \"{store}\"\n"),
        None => text += "# store = \"s3://my-bucket/milky\"\n",
    }
    if let Some(endpoint) = endpoint {
        text += &format!("endpoint_url = \"{endpoint}\"\n");
    }
    match group {
        Some(group) => text += &format!("group = \"{group}\"\n"),
        None => text += "# group = \"stable\"\n",
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_a_standard_django_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("manage.py"),
            "import os\n    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n",
        )
        .unwrap();
        std::fs::create_dir(root.join("mysite")).unwrap();
        std::fs::write(
            root.join("mysite/settings.py"),
            "STATIC_ROOT = BASE_DIR / \"static_collected\"\n",
        )
        .unwrap();
        std::fs::write(root.join("mysite/wsgi.py"), "application = None\n").unwrap();
        std::fs::write(root.join("requirements.txt"), "Django\n").unwrap();
        let detected = detect(root);
        assert_eq!(detected.settings.as_deref(), Some("mysite.settings"));
        assert_eq!(detected.wsgi.as_deref(), Some("mysite.wsgi:application"));
        assert_eq!(detected.static_dir.as_deref(), Some("static_collected"));
        let text = render(
            &"myapp".parse().unwrap(),
            "mysite.wsgi:application",
            Some("mysite.settings"),
            &detected,
            Some("s3://b/p"),
            None,
            None,
        );
        let config = ProjectConfig::parse(&text).unwrap();
        assert_eq!(config.app.static_dir.as_deref(), Some("static_collected"));
        assert_eq!(config.deploy.store.as_deref(), Some("s3://b/p"));
    }
}
