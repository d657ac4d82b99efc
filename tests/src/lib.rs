//! Harnesses that waggle's tests share: network namespaces and veth pairs with
//! unique names, a private containerd, and a busybox OCI image built locally.
//!
//! Everything here cleans up in `Drop`, so a failing test leaves nothing
//! behind, and every name is unique, so tests run in parallel.

pub mod bpffs;
pub mod cgroup;
pub mod cleanup;
pub mod containerd;
pub mod echo;
pub mod image;
pub mod lbnet;
pub mod linearizability;
pub mod names;
pub mod netns;
pub mod node;
pub mod packet;
pub mod registry;
pub mod store_procs;

pub use containerd::Containerd;
pub use netns::{NetNs, VethPair};
pub use node::{NodeGuard, target_bin};

/// True when the process runs as root; privileged tests check this first and
/// fail loudly rather than skip, because CI runs as root.
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}
