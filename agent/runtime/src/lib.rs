//! Container runtime client for waggle's agent: containerd through the
//! `containerd-client` crate.
//!
//! - [`archive`] reads OCI layout tarballs (what `waggle images import` takes).
//! - [`Runtime`] imports images (content, image record, unpacked snapshots) and
//!   runs containers (OCI spec, snapshot, task) in one containerd namespace.
//! - [`Runtime::pull_image`] pulls images from an OCI registry.

pub mod archive;
mod client;
mod containers;
mod error;
mod images;
mod pull;
pub mod spec;
mod tasks;

pub use client::Runtime;
pub use containers::{ContainerConfig, ExitStatus, SecurityRequest};
pub use error::Error;
pub use images::{ImageSummary, ImportedImage};
pub use pull::{Credentials, PulledImage, normalize_image};
pub use spec::{BindMount, Security};
pub use tasks::{ContainerInfo, ExecIo, ExecOutcome, TaskStatus};

/// The snapshotter waggle uses (works on this kernel with cgroup v1 + runc).
pub const SNAPSHOTTER: &str = "overlayfs";
/// The containerd runtime (shim) waggle uses.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
