//! Waggle's cluster store: etcd's key-value semantics behind the [`Store`]
//! trait, an in-memory implementation ([`MemStore`]), the [`conformance`]
//! suite every implementation passes, and the etcd v3 gRPC API ([`grpc`]).

pub mod client;
pub mod conformance;
pub mod durability;
pub mod error;
pub mod grpc;
mod lease;
pub mod mem;
mod mvcc;
pub mod proto;
pub mod snapshot;
pub mod store;
pub mod types;
mod watch;
#[cfg(feature = "serde")]
mod wire_bytes;

pub use error::{Result, StoreError};
pub use mem::{MemStore, MemStoreConfig};
pub use store::{Store, Watcher};
pub use types::*;
