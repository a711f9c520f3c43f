//! The MilkyWhite agent: makes one server run what the index gives its group.

pub mod web;
