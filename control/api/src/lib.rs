//! Kubernetes API machinery shared by waggle's components, with no I/O:
//!
//! - [`registry`]: every resource waggle serves (group, version, kind, plural,
//!   scope, short names, verbs, subresources), the one table that drives
//!   discovery, routing and OpenAPI;
//! - [`selector`]: label and field selectors as upstream parses them;
//! - [`status`]: the `Status` errors every API answer uses;
//! - [`meta`]: object metadata helpers over JSON objects;
//! - [`patch`]: JSON patch, JSON merge patch and strategic merge patch;
//! - [`fieldset`], [`fieldmanager`]: managedFields and server-side apply;
//! - [`protobuf`]: kubectl 1.32+ protobuf request bodies decoded to JSON.

pub mod defaults;
pub mod fieldmanager;
pub mod fieldset;
pub mod meta;
pub mod patch;
pub mod protobuf;
pub mod quantity;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod stats;
pub mod status;
pub mod table;
pub mod validation;

pub use registry::{ResourceInfo, Scope};
pub use status::{Reason, StatusError};
