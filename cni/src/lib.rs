//! waggle-cni: a CNI 1.1 plugin that puts each pod on a Linux bridge with
//! host-local compatible IPAM.
//!
//! `main` reads the environment and stdin, and dispatches to one `cmd_*` per
//! CNI command in [`commands`]; everything else is one module per concern.
//!
//! Decisions worth knowing:
//! - The spec types are written here ([`spec`]) rather than taken from the
//!   `cni-plugin` crate, which stops at CNI 1.0 and has no STATUS or GC.
//! - `ipMasq` is accepted but installs nothing: masquerading is the job of
//!   waggle's eBPF dataplane, and this plugin never touches iptables.
//! - Own error codes (100+): 100 range exhausted, 101 CHECK mismatch,
//!   102 netlink refused, 103 interface exists, 104 requested address
//!   unavailable, 105 delegated plugin failed without a CNI error.
//! - `ipam.type` `waggle` (or absent) is the built-in, host-local compatible
//!   IPAM; any other type is exec'd from CNI_PATH.
//! - Logs go to stderr (`WAGGLE_CNI_LOG` filter, default `warn`) or to
//!   `WAGGLE_CNI_LOG_FILE`; stdout carries only the result or error JSON.

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
