//! Where things live in the store, under its bucket and prefix. The one place that spells keys.

use crate::names::{AppName, GroupName, HostName, Version};

/// The index: which group runs which app in which version.
pub const INDEX: &str = "version.info";

/// An immutable package: written once, never overwritten.
pub fn package(app: &AppName, version: &Version) -> String {
    format!("packages/{app}/{}", package_file_name(app, version))
}

/// The file name of a package, in the store and on disk.
pub fn package_file_name(app: &AppName, version: &Version) -> String {
    format!("{app}-{version}.tar.bz2")
}

/// The deploy keys the root key allows to sign group state (`cargo milky keys`).
pub const DEPLOY_KEYS: &str = "keys.toml";

/// Everything of the groups: one folder each below it.
pub const GROUPS: &str = "groups/";

/// An agent's own status report.
pub fn host_status(group: &GroupName, host: &HostName) -> String {
    format!("{}{host}.toml", host_status_prefix(group))
}

/// Where the status reports of a group's servers are, one object per server.
pub fn host_status_prefix(group: &GroupName) -> String {
    format!("groups/{group}/hosts/")
}

/// An app's settings and secrets in a group (`cargo milky env`).
pub fn env(group: &GroupName, app: &AppName) -> String {
    format!("groups/{group}/env/{app}.toml")
}

/// An app's certificate and key in a group (`cargo milky tls set`, or ordered by ACME).
pub fn tls(group: &GroupName, app: &AppName) -> String {
    format!("groups/{group}/tls/{app}.toml")
}

/// A group's ACME orders (`tls = "acme"`): per app, the HTTP-01 answers every server of the
/// group serves while an order is pending, renewal requests, the last failure and its backoff.
/// Written by the server holding [`acme_lease`] and by `cargo milky tls renew`, both by
/// compare-and-swap; read by every server with a conditional GET each pass.
pub fn acme_orders(group: &GroupName) -> String {
    format!("groups/{group}/acme/orders.toml")
}

/// Which server of the group orders certificates (the once-hooks lease design).
pub fn acme_lease(group: &GroupName) -> String {
    format!("groups/{group}/acme/lease.toml")
}

/// The group's ACME account (its private key): a secret, like the group's env.
pub fn acme_account(group: &GroupName) -> String {
    format!("groups/{group}/acme/account.toml")
}

/// A server's acknowledgement of the challenge answers it serves.
pub fn acme_ack(group: &GroupName, host: &HostName) -> String {
    format!("groups/{group}/acme/acks/{host}.toml")
}

/// A group's signed state: what it runs, under a growing generation and an expiry.
pub fn group_state(group: &GroupName) -> String {
    format!("groups/{group}/state.toml")
}

/// Where one (group, app, version)'s once hooks are coordinated: `lease.toml` and `result.toml`.
pub fn once_hooks(group: &GroupName, app: &AppName, version: &Version) -> String {
    format!("groups/{group}/once/{app}/{version}/")
}

/// Where the controller's conditional-write probe (`doctor`, and the check before a command
/// writes) puts its scratch objects.
pub const STORE_PROBE_PREFIX: &str = "doctor";

/// Where the conditional-write probe of a group's servers writes its scratch objects.
pub fn once_probe_prefix(group: &GroupName) -> String {
    format!("groups/{group}/once")
}

/// Where one attempt at an app's first-deploy hooks (with `version`) is coordinated:
/// `lease.toml` and `result.toml`, as for once hooks.
pub fn first_hooks(group: &GroupName, app: &AppName, version: &Version) -> String {
    format!("{}{version}/", first_hooks_prefix(group, app))
}

/// Everything of an app's first-deploy hooks in a group: the attempts and the done marker.
pub fn first_hooks_prefix(group: &GroupName, app: &AppName) -> String {
    format!("groups/{group}/first/{app}/")
}

/// Written once the first-deploy hooks of an app ran successfully in a group: from then on no
/// server runs them again (until `cargo milky hooks reset` deletes it).
pub fn first_hooks_done(group: &GroupName, app: &AppName) -> String {
    format!("{}done.toml", first_hooks_prefix(group, app))
}

/// The lease object in a once- or first-hooks folder.
pub fn lease_in(folder: &str) -> String {
    format!("{folder}lease.toml")
}

/// The result object in a once- or first-hooks folder.
pub fn result_in(folder: &str) -> String {
    format!("{folder}result.toml")
}

/// Created by the first server that serves `version` of `app` in a group; rollback steps only
/// onto versions that have one.
pub fn served(group: &GroupName, app: &AppName, version: &Version) -> String {
    format!("{}{version}", served_prefix(group, app))
}

/// Every served marker of an app in a group.
pub fn served_prefix(group: &GroupName, app: &AppName) -> String {
    format!("groups/{group}/served/{app}/")
}

/// Shipped server logs: `logs/<group>/<host>/<day>/…`, one gzip segment per object (the
/// segment's own part of the key is spelled in `logs.rs`, which also parses it back).
pub const LOGS: &str = "logs/";

/// Every shipped log of a group's servers, one folder per host below it.
pub fn logs_group_prefix(group: &GroupName) -> String {
    format!("{LOGS}{group}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let app = AppName::new("myapp").unwrap();
        let version = Version::new("v1022").unwrap();
        assert_eq!(
            package(&app, &version),
            "packages/myapp/myapp-v1022.tar.bz2"
        );
        let group = GroupName::new("stable").unwrap();
        let host = HostName::new("web-1").unwrap();
        assert_eq!(host_status(&group, &host), "groups/stable/hosts/web-1.toml");
        assert_eq!(env(&group, &app), "groups/stable/env/myapp.toml");
        assert_eq!(logs_group_prefix(&group), "logs/stable/");
        assert_eq!(tls(&group, &app), "groups/stable/tls/myapp.toml");
        assert_eq!(group_state(&group), "groups/stable/state.toml");
        assert_eq!(acme_orders(&group), "groups/stable/acme/orders.toml");
        assert_eq!(acme_lease(&group), "groups/stable/acme/lease.toml");
        assert_eq!(acme_account(&group), "groups/stable/acme/account.toml");
        assert_eq!(
            acme_ack(&group, &host),
            "groups/stable/acme/acks/web-1.toml"
        );
        assert_eq!(
            lease_in(&once_hooks(&group, &app, &version)),
            "groups/stable/once/myapp/v1022/lease.toml"
        );
        assert_eq!(
            result_in(&first_hooks(&group, &app, &version)),
            "groups/stable/first/myapp/v1022/result.toml"
        );
        assert_eq!(
            first_hooks_done(&group, &app),
            "groups/stable/first/myapp/done.toml"
        );
        assert_eq!(
            served(&group, &app, &version),
            "groups/stable/served/myapp/v1022"
        );
    }
}
