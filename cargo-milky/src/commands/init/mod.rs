//! `cargo milky init`: write a milky.toml into a Django project, after checking that its settings
//! would deploy.

mod checks;
mod layout;
mod python;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Args;
use milky_core::project::{FILE_NAME, Hooks, ProjectConfig};
use milky_core::{AppName, GroupName, StoreUrl};
use toml_edit::{Array, DocumentMut, Item, Table, value};

use self::checks::{DEFAULT_STATIC_DIR, Deploy, Findings, Fix};
use self::layout::Layout;
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

/// Asks on a terminal; elsewhere (or with --yes) every question takes its default.
#[derive(Clone, Copy)]
struct Prompt {
    interactive: bool,
}

impl Prompt {
    fn input(
        self,
        prompt: &str,
        default: Option<String>,
        allow_empty: bool,
    ) -> anyhow::Result<Option<String>> {
        if !self.interactive {
            return Ok(default);
        }
        let mut input = dialoguer::Input::<String>::new()
            .with_prompt(prompt)
            .allow_empty(allow_empty);
        if let Some(default) = default {
            input = input.default(default);
        }
        Ok(Some(input.interact_text()?))
    }

    /// The index of the chosen item; 0 (the default) without a terminal.
    fn select(self, prompt: &str, items: &[String]) -> anyhow::Result<usize> {
        if !self.interactive || items.len() < 2 {
            return Ok(0);
        }
        Ok(dialoguer::Select::new()
            .with_prompt(prompt)
            .items(items)
            .default(0)
            .interact()?)
    }

    fn confirm(self, prompt: &str, default: bool) -> anyhow::Result<bool> {
        if !self.interactive {
            return Ok(default);
        }
        Ok(dialoguer::Confirm::new()
            .with_prompt(prompt)
            .default(default)
            .interact()?)
    }
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

/// The settings module the servers use: the best-ranked one, or the user's pick on a terminal.
fn choose_settings(
    layout: &Layout,
    prompt: Prompt,
    printer: Printer,
) -> anyhow::Result<Option<String>> {
    let candidates = &layout.settings;
    let Some(first) = candidates.first() else {
        return Ok(None);
    };
    let labels: Vec<String> = candidates
        .iter()
        .map(|c| format!("{} ({})", c.module, c.describe()))
        .collect();
    let chosen = &candidates[prompt.select("Settings module for the servers", &labels)?];
    if !prompt.interactive && candidates.len() > 1 {
        printer.status(format!(
            "settings: {} ({}); also found {}",
            chosen.module,
            chosen.describe(),
            candidates[1..]
                .iter()
                .map(|c| format!("{} ({})", c.module, c.describe()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if chosen.kind == layout::Kind::Development && chosen == first {
        printer.status(format!(
            "warning: the only settings found, {}, look like development settings",
            chosen.module
        ));
    }
    Ok(Some(chosen.module.clone()))
}

/// manage.py or wsgi.py assigning `os.environ["DJANGO_SETTINGS_MODULE"]` outright overrides the
/// settings module the agent sets from milky.toml.
fn warn_if_settings_forced(root: &Path, module: &str, printer: Printer) {
    let package = module.split('.').next().unwrap_or(module);
    for file in ["manage.py".to_owned(), format!("{package}/wsgi.py")] {
        let Ok(text) = std::fs::read_to_string(root.join(&file)) else {
            continue;
        };
        let forced = text.lines().any(|line| {
            let line = line.trim();
            !line.starts_with('#')
                && (line.contains("environ[\"DJANGO_SETTINGS_MODULE\"]")
                    || line.contains("environ['DJANGO_SETTINGS_MODULE']"))
                && line.split(']').nth(1).is_some_and(|rest| {
                    rest.trim_start().starts_with('=') && !rest.trim_start().starts_with("==")
                })
        });
        if forced {
            printer.status(format!(
                "warning: {file} assigns DJANGO_SETTINGS_MODULE outright, so on a server it replaces the settings milky.toml names\n  fix: use os.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", …) in {file}"
            ));
        }
    }
}

fn choose_requirements(
    layout: &Layout,
    prompt: Prompt,
    printer: Printer,
) -> anyhow::Result<Option<String>> {
    let found = &layout.requirements;
    if layout.uv_lock {
        // The lock is what the developer installs from; a requirements file beside it is
        // usually an export of it that may have fallen behind.
        printer.status(format!(
            "dependencies: uv.lock (servers install exactly the locked versions){}",
            if found.is_empty() {
                String::new()
            } else {
                format!("; not {}", found[0].path)
            }
        ));
        return Ok(Some(milky_core::project::UV_LOCK.to_owned()));
    }
    if found.is_empty() {
        if layout.pyproject.is_some() {
            printer.status(format!(
                "warning: no requirements file and no uv.lock, and servers install the app's dependencies only from one{}\n  fix: `uv lock` (then run init again), or export them to requirements.txt (`pip-compile pyproject.toml`) and set [app] requirements",
                if layout.pyproject == Some(true) {
                    " (pyproject.toml lists them under [project] dependencies)"
                } else {
                    ""
                }
            ));
        }
        return Ok(None);
    }
    let labels: Vec<String> = found.iter().map(|r| r.path.clone()).collect();
    let chosen = &found[prompt.select("Requirements file the servers install", &labels)?];
    if found.len() > 1 && !prompt.interactive {
        printer.status(format!(
            "requirements: {}; also found {}",
            chosen.path,
            labels
                .iter()
                .filter(|l| **l != chosen.path)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(Some(chosen.path.clone()))
}

/// A host name a site is really reached by: no wildcard, not loopback, not an address.
fn is_real_host(host: &str) -> bool {
    let host = host.trim_start_matches('.');
    !host.is_empty()
        && !host.contains('*')
        && !matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "0.0.0.0")
        && !host.chars().all(|c| c.is_ascii_digit() || c == '.')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The names nginx answers for: the first is also the `Host` of the health check, so it must pass
/// ALLOWED_HOSTS. Without a terminal: the first real host in ALLOWED_HOSTS; none when ALLOWED_HOSTS
/// lets any name through (the app is then the server's default site, reached by any name, and the
/// health check sends its app name); else `localhost`, which the overlay adds to ALLOWED_HOSTS.
fn choose_server_names(
    name: &AppName,
    settings: Option<&python::Settings>,
    prompt: Prompt,
    printer: Printer,
) -> anyhow::Result<Vec<String>> {
    let allowed = checks::allowed_hosts(settings);
    let listed = allowed
        .iter()
        .flatten()
        .find(|h| is_real_host(h))
        .map(|h| h.trim_start_matches('.').to_owned());
    let any_name = allowed
        .as_ref()
        .is_some_and(|hosts| checks::host_allowed(name.as_str(), hosts));
    let default = match (&listed, any_name) {
        (Some(host), _) => Some(host.clone()),
        (None, true) => None,
        (None, false) => Some("localhost".to_owned()),
    };
    let answer = prompt.input(
        "Host names nginx answers for this app, comma-separated (the first is the health check's Host; empty: any name, as the server's default site)",
        default.clone(),
        true,
    )?;
    let names: Vec<String> = answer
        .unwrap_or_default()
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if !prompt.interactive {
        match (&listed, names.first()) {
            (Some(host), _) => printer.status(format!(
                "server_names = [\"{host}\"], the first host name ALLOWED_HOSTS lists"
            )),
            (None, Some(host)) => printer.status(format!(
                "server_names = [\"{host}\"]: ALLOWED_HOSTS names no host, so the health check will ask for {host}; put your domain first in server_names and ALLOWED_HOSTS"
            )),
            (None, None) => printer.status(format!(
                "server_names left empty: ALLOWED_HOSTS lets any name through, so the app is its server's default site and the health check sends Host: {name}"
            )),
        }
    }
    Ok(names)
}

/// Reports every problem; returns the fixes to apply: on a terminal those the user accepts, else
/// the safe ones.
fn choose_fixes(findings: &Findings, prompt: Prompt, printer: Printer) -> anyhow::Result<Vec<Fix>> {
    let mut fixes = Vec::new();
    for problem in &findings.problems {
        printer.status(format!(
            "problem: {}\n  fix: {}",
            problem.message, problem.remedy
        ));
        let Some(fix) = &problem.fix else { continue };
        let apply = prompt.confirm(
            "Apply this fix in the overlay settings module?",
            fix.is_safe(),
        )?;
        if apply {
            fixes.push(fix.clone());
        } else if !prompt.interactive {
            printer.status(
                "  not applied: it changes how the app behaves; run init on a terminal to apply it, or make the fix by hand",
            );
        }
    }
    Ok(fixes)
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

/// Left out of packages, each anchored at the project root (a leading `/`), so that a folder of
/// the same name deeper in the tree (`app/fixtures/media/`) is still packed.
fn excludes(findings: &Findings) -> Vec<String> {
    let mut out = vec!["/*.sqlite3".to_owned()];
    for file in &findings.sqlite_files {
        if file.contains('/') {
            out.push(format!("/{file}"));
        }
    }
    let media = findings.media_dir.as_deref().unwrap_or("media");
    if media != "." && !media.starts_with("..") {
        out.push(format!("/{media}/"));
    }
    out
}

/// What init writes into milky.toml.
struct Manifest<'a> {
    name: &'a AppName,
    wsgi: &'a str,
    settings: Option<&'a str>,
    static_dir: Option<&'a str>,
    server_names: &'a [String],
    requirements: Option<&'a str>,
    python: Option<&'a str>,
    media_url: Option<&'a str>,
    hooks: &'a Hooks,
    excludes: &'a [String],
    store: Option<&'a str>,
    endpoint: Option<&'a str>,
    group: Option<&'a GroupName>,
}

/// A table built key by key, each with the comment lines above it (toml_edit escapes values).
struct Section {
    table: Table,
    pending: String,
}

impl Section {
    fn new(header_comment: &str) -> Self {
        let mut table = Table::new();
        table.decor_mut().set_prefix(header_comment);
        Section {
            table,
            pending: String::new(),
        }
    }

    /// A comment line above the next key (or the next table).
    fn comment(&mut self, line: &str) -> &mut Self {
        self.pending.push_str("# ");
        self.pending.push_str(line);
        self.pending.push('\n');
        self
    }

    fn set(&mut self, key: &str, item: impl Into<Item>) -> &mut Self {
        self.table.insert(key, item.into());
        if let Some(mut key) = self.table.key_mut(key) {
            key.leaf_decor_mut()
                .set_prefix(std::mem::take(&mut self.pending));
        }
        self
    }
}

fn strings<'a>(items: impl IntoIterator<Item = &'a String>) -> Item {
    value(Array::from_iter(items.into_iter().map(String::as_str)))
}

fn render(m: &Manifest) -> String {
    let mut app = Section::new(
        "# MilkyWhite settings of this project. `cargo milky package` packs [app], [hooks] and\n\
         # [snippets] into every release; [deploy] is the controller's own and never leaves this file.\n\n",
    );
    app.set("name", m.name.as_str()).set("wsgi", m.wsgi);
    if let Some(settings) = m.settings {
        app.set("settings", settings);
    }
    app.comment("collectstatic's STATIC_ROOT; nginx serves it at /static/");
    match m.static_dir {
        Some(dir) => app.set("static_dir", dir),
        None => app.comment(&format!("static_dir = \"{DEFAULT_STATIC_DIR}\"")),
    };
    app.comment("The path servers check before they switch to a new release")
        .set("health", "/")
        .comment("Host names nginx answers for this app; the health check sends the first");
    if m.server_names.is_empty() {
        app.comment("server_names = [\"myapp.example.com\"]");
    } else {
        app.set("server_names", strings(m.server_names));
    }
    if let Some(requirements) = m.requirements {
        app.comment(
            "What the servers install dependencies from: a pip requirements file, or uv.lock",
        )
        .set("requirements", requirements);
    }
    app.comment("The Python the app runs on: a version or a specifier such as \">=3.12\"");
    match m.python {
        Some(python) => app.set("python", python),
        None => app.comment("python = \"3.13\"   (unset: the server's default Python)"),
    };

    if let Some(url) = m.media_url {
        app.comment("nginx serves uploads (MILKY_MEDIA_DIR, the data dir's media/) here")
            .set("media_url", url);
    }

    let mut hooks = Section::new(&format!("{}\n", app.pending));
    hooks
        .comment("Run once per group and version, by one server, before any server switches")
        .set("once", strings(&m.hooks.once))
        .comment("Run on every server before it switches")
        .set("server", strings(&m.hooks.server));

    let mut package = Section::new("\n");
    package
        .comment("Left out of packages, on top of .gitignore and .milkyignore (gitignore syntax;")
        .comment("a leading / anchors a pattern at the project root)")
        .set("exclude", strings(m.excludes))
        .comment("Vendor every requirement as a wheel, so servers install offline")
        .set("wheels", false);

    let mut deploy = Section::new("\n");
    match m.store {
        Some(store) => deploy.set("store", store),
        None => deploy.comment("store = \"s3://my-bucket/milky\""),
    };
    if let Some(endpoint) = m.endpoint {
        deploy.set("endpoint_url", endpoint);
    }
    match m.group {
        Some(group) => deploy.set("group", group.as_str()),
        None => deploy.comment("group = \"stable\""),
    };

    let mut doc = DocumentMut::new();
    for (position, (key, section)) in [
        ("app", app),
        ("hooks", hooks),
        ("package", package),
        ("deploy", deploy),
    ]
    .into_iter()
    .enumerate()
    {
        let mut table = section.table;
        table.set_position(position);
        doc.insert(key, Item::Table(table));
        if key == "deploy" {
            doc.set_trailing(section.pending);
        }
    }
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest<'a>(name: &'a AppName, hooks: &'a Hooks, excludes: &'a [String]) -> Manifest<'a> {
        Manifest {
            name,
            wsgi: "mysite.wsgi:application",
            settings: Some("mysite.settings"),
            static_dir: Some("static_collected"),
            server_names: &[],
            requirements: None,
            python: None,
            media_url: None,
            hooks,
            excludes,
            store: Some("s3://b/p"),
            endpoint: None,
            group: None,
        }
    }

    #[test]
    fn the_written_file_reads_back_with_comments_in_place() {
        let name: AppName = "myapp".parse().unwrap();
        let hooks = Hooks::django_defaults();
        let excludes = ["/*.sqlite3".to_owned(), "/media/".to_owned()];
        let text = render(&manifest(&name, &hooks, &excludes));
        let config = ProjectConfig::parse(&text).unwrap();
        assert_eq!(config.app.static_dir.as_deref(), Some("static_collected"));
        assert_eq!(config.deploy.store.as_deref(), Some("s3://b/p"));
        assert_eq!(config.package.exclude, excludes);
        assert_eq!(config.hooks, hooks);
        // Tests and users uncomment this line to name hosts.
        assert!(
            text.lines()
                .any(|l| l == "# server_names = [\"myapp.example.com\"]"),
            "{text}"
        );
        assert!(text.ends_with("# group = \"stable\"\n"), "{text}");
        let order: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(order, ["[app]", "[hooks]", "[package]", "[deploy]"]);
    }

    #[test]
    fn values_are_escaped_not_pasted() {
        let name: AppName = "myapp".parse().unwrap();
        let hooks = Hooks {
            once: vec!["echo \"quoted\" \\ and 'single'".into()],
            server: vec![],
            first: vec![],
        };
        let mut m = manifest(&name, &hooks, &[]);
        m.store = Some("s3://bucket/with\"quote");
        let text = render(&m);
        let doc: DocumentMut = text.parse().unwrap();
        assert_eq!(
            doc["hooks"]["once"][0].as_str(),
            Some("echo \"quoted\" \\ and 'single'")
        );
        assert_eq!(
            doc["deploy"]["store"].as_str(),
            Some("s3://bucket/with\"quote")
        );
    }

    #[test]
    fn excludes_are_anchored_at_the_root() {
        let findings = Findings {
            media_dir: Some("var/uploads".into()),
            sqlite_files: vec!["db.sqlite3".into(), "data/app.sqlite3".into()],
            ..Findings::default()
        };
        assert_eq!(
            excludes(&findings),
            ["/*.sqlite3", "/data/app.sqlite3", "/var/uploads/"]
        );
        assert_eq!(excludes(&Findings::default()), ["/*.sqlite3", "/media/"]);
    }

    #[test]
    fn real_hosts_are_told_from_wildcards_and_loopback() {
        assert!(is_real_host("www.example.com"));
        assert!(is_real_host(".example.com"));
        for host in [
            "*",
            "localhost",
            "127.0.0.1",
            "10.0.0.1",
            "[::1]",
            "*.example.com",
            "",
        ] {
            assert!(!is_real_host(host), "{host}");
        }
    }
}
