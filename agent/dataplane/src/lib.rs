//! User space of waggle's eBPF dataplane.
//!
//! [`Dataplane`] owns the eBPF object built from `ebpf/programs`: it loads the
//! programs, attaches them to interfaces (XDP on an uplink, tc on either
//! direction of a link) and hands out one typed wrapper per map.

pub mod cgroup;
mod error;
pub mod lb;
pub mod maps;
mod object;

pub use aya::programs::TestRunResult;
pub use error::Error;
pub use object::{Dataplane, LbCapacity, LbMaps, LoadConfig, TcDirection, tcx_ingress_programs};
pub use waggle_ebpf_common::{Counter, CounterSlot, lb as lb_abi};
