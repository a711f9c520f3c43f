//! The nginx and Apache templates: embedded in the binary, overridable per server.

use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use super::WebError;

/// nginx's main config: prefix-local paths, one `include` per app.
pub const NGINX_MAIN: &str = "nginx-main.conf.j2";
/// One app's nginx `upstream` (the live slot) and `server` block.
pub const NGINX_APP: &str = "nginx-app.conf.j2";
/// A standalone httpd.conf for one slot of one app.
pub const APACHE_SLOT: &str = "apache-slot.conf.j2";
/// The WSGI wrapper that sets the app's environment, then runs the app's WSGI file.
pub const APACHE_WSGI: &str = "apache-wsgi.py.j2";

const EMBEDDED: [(&str, &str); 4] = [
    (
        NGINX_MAIN,
        include_str!("../../../templates/nginx-main.conf.j2"),
    ),
    (
        NGINX_APP,
        include_str!("../../../templates/nginx-app.conf.j2"),
    ),
    (
        APACHE_SLOT,
        include_str!("../../../templates/apache-slot.conf.j2"),
    ),
    (
        APACHE_WSGI,
        include_str!("../../../templates/apache-wsgi.py.j2"),
    ),
];

/// The templates the agent renders. The embedded ones are always there; a server can replace any
/// of them with a file of the same name in its override directory (as cargo-dist does), e.g. to
/// add headers or tune worker counts without a new agent build.
#[derive(Debug, Clone)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The templates built into the agent.
    pub fn embedded() -> Self {
        Self::build(EMBEDDED.iter().map(|(n, s)| (*n, (*s).to_owned())))
            .expect("embedded templates are checked by the tests")
    }

    /// The embedded templates, with those that have a file of the same name in `dir` replaced by
    /// that file. A missing `dir` is not an error: no overrides.
    pub fn with_overrides(dir: &Path) -> Result<Self, WebError> {
        let mut sources = Vec::new();
        for (name, embedded) in EMBEDDED {
            let path = dir.join(name);
            let source = match fs_err::read_to_string(&path) {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => embedded.to_owned(),
                Err(e) => return Err(e.into()),
            };
            sources.push((name, source));
        }
        Self::build(sources)
    }

    fn build(sources: impl IntoIterator<Item = (&'static str, String)>) -> Result<Self, WebError> {
        let mut env = Environment::new();
        env.set_keep_trailing_newline(true);
        // A typo in an override must fail loudly, not render an empty directive.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in sources {
            env.add_template_owned(name, source)
                .map_err(|source| WebError::Template {
                    name: name.to_owned(),
                    source,
                })?;
        }
        Ok(Templates { env })
    }

    /// Renders template `name` with `context`.
    pub fn render(&self, name: &str, context: impl Serialize) -> Result<String, WebError> {
        let template_error = |source| WebError::Template {
            name: name.to_owned(),
            source,
        };
        self.env
            .get_template(name)
            .and_then(|t| t.render(context))
            .map_err(template_error)
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::embedded()
    }
}
