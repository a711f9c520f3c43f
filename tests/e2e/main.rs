//! End-to-end tests: the real binaries against a real S3-compatible server on loopback.
//! One test binary, so it links once.

mod access;
mod acme;
mod agent;
mod cli;
mod controller;
mod demo;
mod env;
mod first_deploy;
mod fleet_state;
mod harden;
mod init;
mod install;
mod limits;
mod logs;
mod prune_grace;
mod python;
mod rollout;
mod scale;
mod signing;
mod store_truth;
mod tls;
