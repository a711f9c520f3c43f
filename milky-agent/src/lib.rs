//! The MilkyWhite agent: makes one server run what the index gives its group.
//!
//! A pass ([`reconcile::Agent::pass`]) reads the index, plans ([`plan`]) and carries the plan
//! out on nginx + Apache mod_wsgi ([`web`]) with blue/green slots per app.

pub mod acme;
pub mod cli;
pub mod config;
pub mod crash;
pub mod group_state;
pub mod logfile;
pub mod logship;
pub mod once_hooks;
pub mod plan;
pub mod python;
pub mod reconcile;
pub mod release_store;
pub mod state_dir;
pub mod verify;
pub mod web;
