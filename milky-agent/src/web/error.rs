//! The one error type of the web layer. Every message names the app, slot, path or command it is
//! about, because the agent runs unattended and its log line is all an operator gets.

use std::path::PathBuf;
use std::time::Duration;

use super::Slot;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// A value from a package or a setting that could break out of a config or a path.
    #[error("{what} {value:?} is not allowed: {reason}")]
    Invalid {
        what: String,
        value: String,
        reason: &'static str,
    },

    /// File errors from `fs_err` already name the path.
    #[error(transparent)]
    Io(#[from] std::io::Error),

    #[error("cannot render template {name}: {source:#}")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },

    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot {what}: {signal} to pid {pid} failed: {source}")]
    Signal {
        what: String,
        signal: String,
        pid: u32,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` ({what}) failed with {status}:\n{output}")]
    Command {
        what: String,
        command: String,
        status: String,
        output: String,
    },

    #[error(
        "Apache config of app {app} slot {slot} failed its test, nothing was started (`{command}`):\n{output}"
    )]
    ApacheConfigTest {
        app: String,
        slot: Slot,
        command: String,
        output: String,
    },

    #[error(
        "nginx config for app {app} failed its test, the previous config stays in place (`{command}`):\n{output}"
    )]
    NginxConfigTest {
        app: String,
        command: String,
        output: String,
    },

    #[error(
        "Apache of app {app} slot {slot} did not come up on 127.0.0.1:{port} within {timeout:?}; {log}"
    )]
    SlotStart {
        app: String,
        slot: Slot,
        port: u16,
        timeout: Duration,
        /// The end of the error log, with its path.
        log: String,
    },

    #[error(
        "app {app} slot {slot} is unhealthy: GET {url} ({attempts} attempts in {elapsed:?}): {last}; {log}"
    )]
    Unhealthy {
        app: String,
        slot: Slot,
        url: String,
        attempts: u32,
        elapsed: Duration,
        last: String,
        /// The end of the error log, with its path.
        log: String,
    },

    #[error(
        "port {port} of app {app} slot {slot} is taken by a program that is not this slot's Apache"
    )]
    PortInUse { app: String, slot: Slot, port: u16 },

    #[error("app {app} slot {slot} is not running")]
    SlotNotRunning { app: String, slot: Slot },

    #[error(
        "app {app} slot {slot} is the one nginx serves; switch nginx to the other slot before {action} it"
    )]
    SlotIsLive {
        app: String,
        slot: Slot,
        action: &'static str,
    },

    #[error("Apache of app {app} slot {slot} (pid {pid}) did not stop within {timeout:?}")]
    SlotStop {
        app: String,
        slot: Slot,
        pid: u32,
        timeout: Duration,
    },

    #[error("nginx {what} within {timeout:?}; {log}")]
    Nginx {
        what: &'static str,
        timeout: Duration,
        /// The end of the error log, with its path.
        log: String,
    },

    #[error("apps {first} and {second} both ask to be nginx's default_server on the front port")]
    TwoDefaultServers { first: String, second: String },

    #[error("no free pair of slot ports left in {first}..={last} for app {app}")]
    NoSlotPorts { app: String, first: u16, last: u16 },

    #[error("{path}: {reason}")]
    State { path: PathBuf, reason: String },

    #[error(
        "release {release} cannot be read by the web servers: {path} has mode {mode:o}, others need {needs}"
    )]
    NotWorldReadable {
        release: PathBuf,
        path: PathBuf,
        mode: u32,
        needs: &'static str,
    },

    #[error("hooks cannot run as user {user:?}: {reason}")]
    HookUser { user: String, reason: String },

    /// A step or a service command still ran at its time limit: it was ended, with every
    /// process of its group.
    #[error(
        "{what}: `{command}` was still running after {limit} ([limits] {setting} in agent.toml), so it was ended with its process group; output tail:\n{output_tail}"
    )]
    TimedOut {
        /// What it was for: "preparing release …", "start Apache of app …".
        what: String,
        command: String,
        /// As written in agent.toml ("30m").
        limit: String,
        setting: &'static str,
        output_tail: String,
    },

    /// Creating the venv, installing requirements or a per-server hook failed.
    #[error(
        "preparing release {release}: `{step}` failed with {status}; output tail:\n{output_tail}"
    )]
    PrepareFailed {
        release: PathBuf,
        step: String,
        status: String,
        output_tail: String,
    },
}

impl WebError {
    pub(crate) fn invalid(
        what: impl Into<String>,
        value: impl Into<String>,
        reason: &'static str,
    ) -> Self {
        WebError::Invalid {
            what: what.into(),
            value: value.into(),
            reason,
        }
    }
}
