//! waggle-cni: a CNI 1.1 plugin that puts each pod on a Linux bridge with
//! host-local compatible IPAM.
//!
//! `main` reads the environment and stdin, and dispatches to one `cmd_*` per
//! CNI command in [`commands`]; everything else is one module per concern.

pub mod bridge;
pub mod commands;
pub mod config;
pub mod env;
pub mod error;
pub mod ipam;
pub mod link;
pub mod netns;
pub mod spec;
pub mod sysctl;
