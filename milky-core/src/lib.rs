//! The domain of MilkyWhite, shared by the controller (`cargo milky`) and the agent
//! (`milky-agent`): names, the index `version.info`, the package format, the store (S3 or a local
//! directory), where things live in it, and package signatures. No CLI code and no printing here.

pub mod acme;
pub mod env;
pub mod index;
pub mod layout;
pub mod logs;
pub mod names;
pub mod once_hooks;
pub mod package;
pub mod project;
pub mod python;
pub mod retention;
pub mod served;
pub mod signing;
pub mod status;
pub mod store;
pub mod tls;

pub use index::{Index, IndexError, PackageEntry, Rollback};
pub use names::{AppName, GroupName, HostName, NameError, Version};
pub use package::Manifest;
pub use project::ProjectConfig;
pub use store::{Condition, Store, StoreError, StoreUrl};
