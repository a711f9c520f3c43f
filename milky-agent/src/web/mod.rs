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
//! requests, and an nginx reload closes kept-alive client connections (measured, see FACTS.md).
//!
//! Everything a package provides is checked ([`AppSite::validate`]) before it reaches a config,
//! and every change to a config is tested before it replaces the previous one, so one app's
//! broken release or snippet never touches the other apps.

mod commands;
mod error;
mod hook_user;
mod process;
mod release;
mod data_dir;
mod site;
mod slot;
mod stack;
mod templates;
pub mod validate;

pub use commands::{CommandLine, ServiceCommands};
pub use error::WebError;
pub use hook_user::HookUser;
pub use release::{HookRun, PreparedRelease, ReleaseSetup, prepare_release, run_hooks};
pub use site::AppSite;
pub use data_dir::MEDIA as MEDIA_DIR;
pub use data_dir::ensure as ensure_data_dir;
pub use slot::Slot;
pub use stack::{
    HealthReport, LogWriter, SlotInfo, SlotPorts, Timeouts, WebLog, WebLogSource, WebSettings,
    WebStack,
};
pub use templates::{APACHE_SLOT, APACHE_WSGI, NGINX_APP, NGINX_MAIN, Templates};
