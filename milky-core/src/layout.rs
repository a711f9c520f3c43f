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

/// An agent's own status report.
pub fn host_status(group: &GroupName, host: &HostName) -> String {
    format!("groups/{group}/hosts/{host}.toml")
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
    }
}
