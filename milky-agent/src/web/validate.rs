//! Checks for every value that ends up inside an nginx or Apache config.
//!
//! Both config languages treat `;`, `{`, `}`, quotes, whitespace, `#` and `$`/`%{` specially, so a
//! server name or path from a package could otherwise add directives of its own. The rules are
//! allowlists: what is not listed is rejected, with the value and the reason in the error.

use std::path::{Component, Path};

use super::WebError;

/// Characters allowed in a path that goes into a config (besides ASCII letters and digits).
const PATH_EXTRA: &str = "._-/+@=,";

/// App names as milky-core's `AppName`: they name directories, nginx upstreams and mod_wsgi
/// process groups.
pub fn app_name(name: &str) -> Result<(), WebError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(WebError::invalid(
            "app name",
            name,
            "1 to 64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit",
        ))
    }
}

/// A host name for nginx's `server_name` and Apache's `ServerName`: letters, digits, `-`, `.`,
/// `_`, and an optional leading `*.` wildcard. Regex server names (`~…`) are not accepted.
pub fn server_name(app: &str, name: &str) -> Result<(), WebError> {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    let ok = !rest.is_empty()
        && name.len() <= 253
        && rest.starts_with(|c: char| c.is_ascii_alphanumeric())
        && !rest.contains("..")
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(WebError::invalid(
            format!("server name of app {app}"),
            name,
            "letters, digits, '-', '.' and '_', optionally starting with '*.'",
        ))
    }
}

/// An absolute path that goes into a config verbatim.
pub fn config_path(what: &str, path: &Path) -> Result<(), WebError> {
    if !path.is_absolute() {
        return Err(WebError::invalid(
            what,
            path.display().to_string(),
            "must be an absolute path",
        ));
    }
    path_chars(what, path)
}

/// A path inside a release, as a package gives it (`mysite/wsgi.py`, `static_collected`).
pub fn release_relative(what: &str, path: &Path) -> Result<(), WebError> {
    let all_normal = path.components().all(|c| matches!(c, Component::Normal(_)));
    if path.as_os_str().is_empty() || !all_normal {
        return Err(WebError::invalid(
            what,
            path.display().to_string(),
            "must be a relative path inside the release, without '..' or '.'",
        ));
    }
    path_chars(what, path)
}

fn path_chars(what: &str, path: &Path) -> Result<(), WebError> {
    let Some(s) = path.to_str() else {
        return Err(WebError::invalid(
            what,
            path.display().to_string(),
            "must be UTF-8",
        ));
    };
    let chars_ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || PATH_EXTRA.contains(c));
    let dots_ok = !path.components().any(|c| matches!(c, Component::ParentDir));
    if chars_ok && dots_ok {
        Ok(())
    } else {
        Err(WebError::invalid(
            what,
            s,
            "only letters, digits and . _ - / + @ = , are allowed, and no '..'",
        ))
    }
}

/// A URL path prefix such as `/static/` or a health-check path such as `/health`.
pub fn url_path(what: &str, path: &str) -> Result<(), WebError> {
    let ok = path.starts_with('/')
        && !path.contains("..")
        && !path.contains("//")
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '~'));
    if ok {
        Ok(())
    } else {
        Err(WebError::invalid(
            what,
            path,
            "must start with '/' and hold only letters, digits and / . _ - ~",
        ))
    }
}

/// The name of an environment variable handed to the app.
pub fn env_key(app: &str, key: &str) -> Result<(), WebError> {
    let ok = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(WebError::invalid(
            format!("environment variable name of app {app}"),
            key,
            "letters, digits and '_', not starting with a digit",
        ))
    }
}

/// A value of an environment variable: rendered as a JSON string, so only NUL is a problem.
pub fn env_value(app: &str, key: &str, value: &str) -> Result<(), WebError> {
    if value.contains('\0') {
        return Err(WebError::invalid(
            format!("value of environment variable {key} of app {app}"),
            value,
            "must not contain NUL",
        ));
    }
    Ok(())
}

/// A user or group name for Apache's `User`/`Group` or nginx's `user`.
pub fn account(what: &str, name: &str) -> Result<(), WebError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(WebError::invalid(
            what,
            name,
            "letters, digits, '_', '-' and '.'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        for ok in [
            "example.com",
            "*.example.com",
            "a-b.c_d.example",
            "localhost",
            "app1",
        ] {
            server_name("x", ok).unwrap();
        }
        for bad in [
            "", "a b", "a;b", "a{", "a}", "a\"b", "a'b", "a\nb", "~^re$", "a..b", "*.", "-a",
            "a$host", "a#b", "*",
        ] {
            assert!(server_name("x", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn paths() {
        config_path("p", Path::new("/srv/milky/apps/a/releases/v1.2+3")).unwrap();
        for bad in [
            "relative", "/a b", "/a;b", "/a/../b", "/a{b}", "/a\"b", "/a'b", "/a\nb", "/a$b",
            "/a%{X}",
        ] {
            assert!(
                config_path("p", Path::new(bad)).is_err(),
                "{bad:?} accepted"
            );
        }
        release_relative("p", Path::new("deploy/nginx.conf")).unwrap();
        for bad in ["", "/abs", "../x", "a/../../x", "./a", "a b", "a;"] {
            assert!(
                release_relative("p", Path::new(bad)).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn error_names_the_app_and_value() {
        let err = server_name("shop", "evil; include /etc/passwd")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server name of app shop"), "{err}");
        assert!(err.contains("evil; include"), "{err}");
    }

    #[test]
    fn urls_apps_and_env() {
        url_path("u", "/static/").unwrap();
        url_path("u", "/health").unwrap();
        for bad in ["static", "/a b", "/a;", "/../x", "/a{"] {
            assert!(url_path("u", bad).is_err(), "{bad:?} accepted");
        }
        app_name("shop-2").unwrap();
        for bad in ["", "Shop", "a b", "-a", "a/b", "a.b"] {
            assert!(app_name(bad).is_err(), "{bad:?} accepted");
        }
        env_key("a", "DJANGO_SETTINGS_MODULE").unwrap();
        assert!(env_key("a", "1X").is_err());
        assert!(env_key("a", "A-B").is_err());
    }
}
