//! The milky.toml init writes: each key with the comment lines above it, values escaped by
//! toml_edit, and the package excludes the findings call for.

use milky_core::AppName;
use milky_core::GroupName;
use milky_core::project::Hooks;
use toml_edit::{Array, DocumentMut, Item, Table, value};

use super::checks::{DEFAULT_STATIC_DIR, Findings};

/// Left out of packages, each anchored at the project root (a leading `/`), so that a folder of
/// the same name deeper in the tree (`app/fixtures/media/`) is still packed.
pub(super) fn excludes(findings: &Findings) -> Vec<String> {
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
pub(super) struct Manifest<'a> {
    pub(super) name: &'a AppName,
    pub(super) wsgi: &'a str,
    pub(super) settings: Option<&'a str>,
    pub(super) static_dir: Option<&'a str>,
    pub(super) server_names: &'a [String],
    pub(super) requirements: Option<&'a str>,
    pub(super) python: Option<&'a str>,
    pub(super) media_url: Option<&'a str>,
    pub(super) hooks: &'a Hooks,
    pub(super) excludes: &'a [String],
    pub(super) store: Option<&'a str>,
    pub(super) endpoint: Option<&'a str>,
    pub(super) group: Option<&'a GroupName>,
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

pub(super) fn render(m: &Manifest) -> String {
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
    use milky_core::project::ProjectConfig;

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
}
