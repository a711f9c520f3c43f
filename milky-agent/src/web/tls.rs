//! What nginx needs for apps whose TLS ends here: each app's installed certificate and key,
//! and the ACME challenge files every server answers. The key is 0600 in a 0700 dir: only
//! nginx's master (root) reads it, never its workers or the apps.
//!
//! ```text
//! ROOT/nginx/tls/APP.crt        the certificate chain nginx serves for APP
//! ROOT/nginx/tls/APP.key        its private key
//! ROOT/nginx/acme-challenge/TOKEN   HTTP-01 answers, served at /.well-known/acme-challenge/
//! ```

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::process::remove_if_exists;
use super::site::SiteTls;
use super::{AppSite, WebError, WebStack, validate};

impl WebStack {
    pub(super) fn tls_dir(&self) -> PathBuf {
        self.nginx_prefix().join("tls")
    }

    /// The certificate chain nginx serves for `app` (PEM).
    pub fn certificate_file(&self, app: &str) -> PathBuf {
        self.tls_dir().join(format!("{app}.crt"))
    }

    /// The private key of `app`'s certificate (PEM, 0600).
    pub fn key_file(&self, app: &str) -> PathBuf {
        self.tls_dir().join(format!("{app}.key"))
    }

    /// Where the HTTP-01 answers are, one file per token.
    pub fn acme_challenge_dir(&self) -> PathBuf {
        self.nginx_prefix().join("acme-challenge")
    }

    /// Makes the dirs: the key dir closed to everyone but root, the challenge dir open to
    /// nginx's workers.
    pub(super) fn make_tls_dirs(&self) -> Result<(), WebError> {
        for (dir, mode) in [(self.tls_dir(), 0o700), (self.acme_challenge_dir(), 0o755)] {
            fs_err::create_dir_all(&dir)?;
            fs_err::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }

    /// The template's `https` values of `site`: `None` unless nginx answers HTTPS for it.
    pub(super) fn https_vars(&self, site: &AppSite) -> Option<serde_json::Value> {
        let Some(SiteTls::Https { hsts }) = site.tls else {
            return None;
        };
        let port = self.settings.https.port();
        Some(json!({
            "listen": self.settings.https.to_string(),
            "port_suffix": if port == 443 { String::new() } else { format!(":{port}") },
            "cert": self.certificate_file(&site.name),
            "key": self.key_file(&site.name),
            "hsts": hsts,
        }))
    }

    /// The certificate chain installed for `app`, if any.
    pub fn installed_certificate(&self, app: &str) -> Result<Option<String>, WebError> {
        validate::app_name(app)?;
        match fs_err::read_to_string(self.certificate_file(app)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Installs `app`'s certificate chain and key (both PEM, checked by the caller to belong
    /// together). When nginx serves the app over HTTPS already, the whole config is tested and
    /// nginx reloads; should the test fail, the previous pair is put back. Returns whether
    /// anything changed.
    pub fn install_certificate(&self, app: &str, chain: &str, key: &str) -> Result<bool, WebError> {
        validate::app_name(app)?;
        let (cert_file, key_file) = (self.certificate_file(app), self.key_file(app));
        let old_chain = self.installed_certificate(app)?;
        let old_key = fs_err::read_to_string(&key_file).ok();
        if old_chain.as_deref() == Some(chain) && old_key.as_deref() == Some(key) {
            return Ok(false);
        }
        self.make_tls_dirs()?;
        write_private(&key_file, key)?;
        write_private(&cert_file, chain)?;
        let serving = self
            .read_site_header(&self.nginx_app_file(app))?
            .is_some_and(|header| header.https);
        if serving && let Err(err) = self.test_and_reload_nginx(app) {
            match (old_chain, old_key) {
                (Some(chain), Some(key)) => {
                    write_private(&key_file, &key)?;
                    write_private(&cert_file, &chain)?;
                }
                _ => {
                    remove_if_exists(&cert_file)?;
                    remove_if_exists(&key_file)?;
                }
            }
            return Err(err);
        }
        tracing::info!(app, "certificate installed");
        Ok(true)
    }

    /// Puts an HTTP-01 answer where nginx serves it.
    pub fn write_challenge(&self, token: &str, answer: &str) -> Result<(), WebError> {
        check_token(token)?;
        self.make_tls_dirs()?;
        let path = self.acme_challenge_dir().join(token);
        super::process::write_atomic(&path, answer)?;
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        Ok(())
    }

    /// Removes every challenge answer but those in `keep`.
    pub fn retain_challenges(&self, keep: &[String]) -> Result<(), WebError> {
        for entry in super::process::read_dir_if_exists(&self.acme_challenge_dir())? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                remove_if_exists(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// ACME tokens are base64url (RFC 8555 §8.1): safe as file names.
fn check_token(token: &str) -> Result<(), WebError> {
    let ok = !token.is_empty()
        && token.len() <= 256
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(WebError::invalid(
            "ACME challenge token",
            token,
            "must be base64url",
        ))
    }
}

/// Replaces `path` with `text` through a temp file made 0600 before anything is written to it.
fn write_private(path: &Path, text: &str) -> Result<(), WebError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    remove_if_exists(&tmp)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| fs_err_io(e, &tmp))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| fs_err_io(e, &tmp))?;
    fs_err::rename(&tmp, path)?;
    Ok(())
}

fn fs_err_io(e: std::io::Error, path: &Path) -> WebError {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display())).into()
}

#[cfg(test)]
mod tests {
    use super::super::stack::test_stack;
    use super::*;

    #[test]
    fn the_key_is_private_and_reinstalling_the_same_pair_changes_nothing() {
        let (_dir, stack) = test_stack();
        assert!(stack.install_certificate("shop", "CHAIN", "KEY").unwrap());
        let mode = |p: &Path| fs_err::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&stack.key_file("shop")), 0o600);
        assert_eq!(mode(&stack.tls_dir()), 0o700);
        assert!(!stack.install_certificate("shop", "CHAIN", "KEY").unwrap());
        assert_eq!(
            stack.installed_certificate("shop").unwrap().as_deref(),
            Some("CHAIN")
        );
        assert!(stack.install_certificate("../x", "C", "K").is_err());
    }

    #[test]
    fn challenge_answers_are_files_named_by_token() {
        let (_dir, stack) = test_stack();
        stack.write_challenge("tok_en-1", "tok_en-1.thumb").unwrap();
        stack.write_challenge("old", "x").unwrap();
        assert!(stack.write_challenge("../etc", "x").is_err());
        stack.retain_challenges(&["tok_en-1".to_owned()]).unwrap();
        let names: Vec<_> = super::super::process::read_dir_if_exists(&stack.acme_challenge_dir())
            .unwrap()
            .iter()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["tok_en-1"]);
    }
}
