//! The store's errors. Each says what was being done to what; the gRPC layer
//! maps them to the status codes and messages etcd clients expect.

use crate::types::{LeaseId, Revision};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{op} at revision {requested}: the revision has been compacted (compacted up to {compact_revision})")]
    Compacted { op: &'static str, requested: Revision, compact_revision: Revision },
    #[error("{op} at revision {requested}: the revision is in the future (current revision {current})")]
    FutureRevision { op: &'static str, requested: Revision, current: Revision },
    #[error("{op}: the key is empty")]
    EmptyKey { op: &'static str },
    #[error("putting {key:?} with ignore_value/ignore_lease: the key does not exist")]
    KeyNotFound { key: String },
    #[error("{op}: lease {id:x} not found")]
    LeaseNotFound { op: &'static str, id: LeaseId },
    #[error("granting lease {id:x}: a lease with that ID already exists")]
    LeaseExists { id: LeaseId },
    #[error("granting a lease with TTL {ttl}s: the maximum is {max}s")]
    LeaseTtlTooLarge { ttl: i64, max: i64 },
    #[error("transaction: key {key:?} is written by more than one operation")]
    DuplicateKey { key: String },
    #[error("transaction: {count} operations exceed the limit of {limit}")]
    TooManyOps { count: usize, limit: usize },
    #[error("reading snapshot: {reason}")]
    BadSnapshot { reason: String },
    #[error("{op}: {reason}")]
    Internal { op: &'static str, reason: String },
    /// The member cannot serve now (no leader known, quorum lost); the
    /// client may retry, as with etcd's `Unavailable` answers.
    #[error("{op}: {reason}")]
    Unavailable { op: &'static str, reason: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
