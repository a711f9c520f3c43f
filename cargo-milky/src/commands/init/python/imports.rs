//! `from … import …` statements: which names they bring in, and the absolute module a relative
//! import names.

use super::lexer::Tok;

/// `from .base import *` seen from `module`: the absolute module it names.
pub(super) fn resolve_import(module: &str, is_package: bool, from: &str) -> Option<String> {
    let dots = from.chars().take_while(|c| *c == '.').count();
    if dots == 0 {
        return Some(from.to_owned());
    }
    let mut parts: Vec<&str> = module.split('.').collect();
    if !is_package {
        parts.pop();
    }
    for _ in 1..dots {
        parts.pop()?;
    }
    if parts.is_empty() {
        // A relative import needs a package to be relative to.
        return None;
    }
    let rest = &from[dots..];
    if !rest.is_empty() {
        parts.extend(rest.split('.'));
    }
    (!parts.is_empty()).then(|| parts.join("."))
}

/// `from X import *` → (X, None); `from X import a, b as c` → (X, [(a, a), (b, c)]).
type FromImport = (String, Option<Vec<(String, String)>>);

pub(super) fn parse_from_import(tokens: &[Tok]) -> Option<FromImport> {
    if tokens.first() != Some(&Tok::Name("from".into())) {
        return None;
    }
    let mut module = String::new();
    let mut i = 1;
    while let Some(tok) = tokens.get(i) {
        match tok {
            Tok::Op(".") => module.push('.'),
            Tok::Name(n) if n == "import" => break,
            Tok::Name(n) => module.push_str(n),
            _ => return None,
        }
        i += 1;
    }
    i += 1;
    let rest = &tokens[i.min(tokens.len())..];
    if rest == [Tok::Op("*")] {
        return Some((module, None));
    }
    let mut names = Vec::new();
    let mut parts = rest
        .iter()
        .filter(|t| !matches!(t, Tok::Op("(") | Tok::Op(")")))
        .peekable();
    while let Some(Tok::Name(name)) = parts.next() {
        let mut alias = name.clone();
        if parts.peek() == Some(&&Tok::Name("as".into())) {
            parts.next();
            if let Some(Tok::Name(a)) = parts.next() {
                alias = a.clone();
            }
        }
        names.push((name.clone(), alias));
        if parts.next().is_none() {
            break;
        }
    }
    Some((module, Some(names)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_imports_resolve_against_the_package() {
        assert_eq!(
            resolve_import("a.settings.prod", false, ".base").as_deref(),
            Some("a.settings.base")
        );
        assert_eq!(
            resolve_import("a.settings", true, ".base").as_deref(),
            Some("a.settings.base")
        );
        assert_eq!(
            resolve_import("a.settings.prod", false, "..common").as_deref(),
            Some("a.common")
        );
        assert_eq!(resolve_import("prod", false, ".base"), None);
    }
}
