//! Rendering and driving nginx + Apache mod_wsgi for the apps of one server.
//!
//! Every app has two Apache instances ("slots", blue and green), each with its own config root
//! and loopback port, and one nginx `server` block on the shared front port that sends requests
//! to the live slot, found through a link nginx resolves per request. A new release is prepared
//! ([`prepare_release`]), started on the idle slot ([`WebStack::start_slot`], config-tested
//! first), health-checked there directly ([`WebStack::health_check`]), and only then does nginx
//! switch to it ([`WebStack::switch_nginx`]: the link is replaced; nginx is config-tested and
//! reloaded only if the app's file changed); the old slot stops once no request can reach it
//! ([`WebStack::stop_slot`]). This is because an Apache graceful restart drops in-flight mod_wsgi
//! requests, and an nginx reload closes kept-alive client connections (measured under load on the machines this was built on).
//!
//! Everything a package provides is checked ([`AppSite::validate`]) before it reaches a config,
//! and every change to a config is tested before it replaces the previous one, so one app's
//! broken release or snippet never touches the other apps.
//!
//! The files: `stack.rs` ([`WebStack`] and its settings), with one `impl WebStack` block per
//! concern beside it: `paths.rs` (the layout of the web root), `ports.rs` (slot ports and
//! `ports.toml`), `apache.rs` (a slot's config, start, stop and read-back), `nginx.rs` (the
//! switch: by live link, or a tested config change and a reload), `nginx_config.rs` (the app
//! files and main config rendered and written), `nginx_control.rs` (nginx started, tested,
//! reloaded, drained), `health.rs`, `served.rs` (what runs, read back
//! from the app files and live links), `remove.rs` (taking an app off), `logs.rs` (the log
//! files to ship) and `tls.rs` (installed certificates and ACME challenge answers). Then
//! `data_dir.rs` (each app's persistent data dir), `release/` (venv, requirements, hooks),
//! `hook_user.rs` (hooks as an unprivileged user), `site.rs` ([`AppSite`]), `validate.rs`,
//! `templates.rs`, `slot.rs`, `service_commands.rs` (the service command lines), `process.rs`
//! (pid files, /proc, signals, atomic file writes) and `error.rs`.

mod apache;
mod data_dir;
mod error;
mod health;
mod hook_user;
mod logs;
mod nginx;
mod nginx_config;
mod nginx_control;
mod paths;
mod ports;
mod process;
mod release;
mod remove;
mod served;
mod service_commands;
mod site;
mod slot;
mod stack;
mod templates;
mod tls;
pub mod validate;

pub use apache::SlotInfo;
pub use data_dir::{MEDIA as MEDIA_DIR, ensure as ensure_data_dir};
pub use error::WebError;
pub use health::HealthReport;
pub use hook_user::HookUser;
pub use logs::{LogWriter, WebLog, WebLogSource};
pub use nginx_config::MainServed;
pub use release::{
    HookRun, PreparedRelease, ReleaseSetup, compile_bytecode, prepare_release, run_hooks,
};
pub use service_commands::{CommandLine, ServiceCommands};
pub use site::{AppSite, SiteTls};
pub use slot::Slot;
pub use stack::{SlotPorts, Timeouts, WebSettings, WebStack};
pub use templates::{APACHE_SLOT, APACHE_WSGI, NGINX_APP, NGINX_MAIN, Templates};
