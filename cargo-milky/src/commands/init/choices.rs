//! What init decides from what it found: the settings module, the requirements, the server
//! names and the fixes to apply, each reported, and asked on a terminal.

use std::path::Path;

use milky_core::AppName;

use super::checks::{self, Findings, Fix};
use super::layout::{self, Layout};
use super::prompt::Prompt;
use super::python;
use crate::progress::Printer;

/// The settings module the servers use: the best-ranked one, or the user's pick on a terminal.
pub(super) fn choose_settings(
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
pub(super) fn warn_if_settings_forced(root: &Path, module: &str, printer: Printer) {
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

pub(super) fn choose_requirements(
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
pub(super) fn choose_server_names(
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
pub(super) fn choose_fixes(
    findings: &Findings,
    prompt: Prompt,
    printer: Printer,
) -> anyhow::Result<Vec<Fix>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
