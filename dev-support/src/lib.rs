//! What MilkyWhite's end-to-end tests (`tests/support`), the agent's web-stack tests and `xtask`
//! share, written once: loopback ports reserved across the processes of a test run, processes
//! by pid, the moto S3 server, the Pebble ACME test CA, a plain HTTP GET over loopback, an HTTP
//! forwarder for stand-ins in front of a test server, and file trees (copy, walk, tail).
//!
//! Nothing here is MilkyWhite's domain; it is the scaffolding around the real parts that tests
//! and benchmarks start. Functions that a test can only fail on return errors and leave the
//! panicking to the caller, so xtask can report them as errors.

mod forward;
mod fs;
mod http;
mod moto;
mod pebble;
mod ports;
mod process;
mod s3s_fs;
mod serial;

pub use forward::{Request, exchange, forwarder};
pub use fs::{copy_project, copy_tree, is_project_leftover, tail, walk};
pub use http::{Response, http_get, wait_for_port};
pub use moto::{Moto, MotoBuilder, moto_program};
pub use pebble::Pebble;
pub use ports::Ports;
pub use process::{
    Signal, alive, group_alive, pid_files, pids_in, signal, signal_group, stop, which,
};
pub use s3s_fs::{S3sFs, s3s_fs_program};
