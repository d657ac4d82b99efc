//! What the raft log carries: one [`Command`] per entry (a [`Command::Batch`]
//! packs concurrent proposals into one entry), and what applying it returns.
//!
//! Applying a command is deterministic given the state before it: lease IDs
//! are chosen before proposing, lease expiry is a proposed revoke, and the
//! MVCC logic is `MemStore`'s.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use waggle_store::{
    DeleteRequest, DeleteResponse, LeaseGrant, LeaseId, PutRequest, PutResponse, Revision, StoreError, TxnRequest,
    TxnResponse,
};

/// One replicated write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put(PutRequest),
    Delete(DeleteRequest),
    Txn(TxnRequest),
    Compact(Revision),
    /// The ID is chosen by the proposer, never 0, so every member grants the same lease.
    LeaseGrant {
        id: LeaseId,
        ttl: i64,
    },
    LeaseRevoke(LeaseId),
    /// Several proposals packed into one raft entry, applied in order.
    Batch(Vec<Command>),
}

/// The outcome of one applied command, as every member computes it.
pub type Applied = Result<Reply, WireError>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Put(PutResponse),
    Delete(DeleteResponse),
    Txn(TxnResponse),
    Revision(Revision),
    LeaseGrant(LeaseGrant),
    Batch(Vec<Applied>),
    /// A raft entry without a command (blank or membership).
    Nothing,
}

/// [`StoreError`] in a form that crosses the wire (its `op` fields are
/// `&'static str`, which serde cannot produce).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireError {
    Compacted { op: String, requested: Revision, compact_revision: Revision },
    FutureRevision { op: String, requested: Revision, current: Revision },
    EmptyKey { op: String },
    KeyNotFound { key: String },
    LeaseNotFound { op: String, id: LeaseId },
    LeaseExists { id: LeaseId },
    LeaseTtlTooLarge { ttl: i64, max: i64 },
    DuplicateKey { key: String },
    TooManyOps { count: usize, limit: usize },
    BadSnapshot { reason: String },
    Internal { op: String, reason: String },
    Unavailable { op: String, reason: String },
}

impl From<StoreError> for WireError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted { op, requested, compact_revision } => {
                Self::Compacted { op: op.to_owned(), requested, compact_revision }
            }
            StoreError::FutureRevision { op, requested, current } => {
                Self::FutureRevision { op: op.to_owned(), requested, current }
            }
            StoreError::EmptyKey { op } => Self::EmptyKey { op: op.to_owned() },
            StoreError::KeyNotFound { key } => Self::KeyNotFound { key },
            StoreError::LeaseNotFound { op, id } => Self::LeaseNotFound { op: op.to_owned(), id },
            StoreError::LeaseExists { id } => Self::LeaseExists { id },
            StoreError::LeaseTtlTooLarge { ttl, max } => Self::LeaseTtlTooLarge { ttl, max },
            StoreError::DuplicateKey { key } => Self::DuplicateKey { key },
            StoreError::TooManyOps { count, limit } => Self::TooManyOps { count, limit },
            StoreError::BadSnapshot { reason } => Self::BadSnapshot { reason },
            StoreError::Internal { op, reason } => Self::Internal { op: op.to_owned(), reason },
            StoreError::Unavailable { op, reason } => Self::Unavailable { op: op.to_owned(), reason },
        }
    }
}

impl From<WireError> for StoreError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Compacted { op, requested, compact_revision } => {
                Self::Compacted { op: intern(op), requested, compact_revision }
            }
            WireError::FutureRevision { op, requested, current } => {
                Self::FutureRevision { op: intern(op), requested, current }
            }
            WireError::EmptyKey { op } => Self::EmptyKey { op: intern(op) },
            WireError::KeyNotFound { key } => Self::KeyNotFound { key },
            WireError::LeaseNotFound { op, id } => Self::LeaseNotFound { op: intern(op), id },
            WireError::LeaseExists { id } => Self::LeaseExists { id },
            WireError::LeaseTtlTooLarge { ttl, max } => Self::LeaseTtlTooLarge { ttl, max },
            WireError::DuplicateKey { key } => Self::DuplicateKey { key },
            WireError::TooManyOps { count, limit } => Self::TooManyOps { count, limit },
            WireError::BadSnapshot { reason } => Self::BadSnapshot { reason },
            WireError::Internal { op, reason } => Self::Internal { op: intern(op), reason },
            WireError::Unavailable { op, reason } => Self::Unavailable { op: intern(op), reason },
        }
    }
}

/// Most distinct operation names kept; they are the store's own string
/// literals (a few dozen), so the bound only matters against a bad peer.
const MAX_INTERNED: usize = 256;

/// Turns an operation name back into the `&'static str` the store's errors
/// hold, leaking each distinct name once.
fn intern(op: String) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let Ok(mut names) = NAMES.get_or_init(Default::default).lock() else { return "a replicated request" };
    if let Some(name) = names.get(op.as_str()) {
        return name;
    }
    if names.len() >= MAX_INTERNED {
        return "a replicated request";
    }
    let name: &'static str = Box::leak(op.into_boxed_str());
    names.insert(name);
    name
}

impl Command {
    /// How many client proposals this command carries.
    pub fn len(&self) -> usize {
        match self {
            Command::Batch(cs) => cs.len(),
            _ => 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The size of the command in the raft log.
    pub fn encoded_len(&self) -> u64 {
        bincode::serialized_size(self).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_survives_the_wire_with_its_variant_and_fields() {
        let e = StoreError::LeaseNotFound { op: "putting a key", id: 0x1234 };
        let bytes = bincode::serialize(&WireError::from(e.clone())).expect("encode");
        let back: WireError = bincode::deserialize(&bytes).expect("decode");
        assert_eq!(StoreError::from(back), e);
    }

    #[test]
    fn a_large_value_is_encoded_as_one_byte_string() {
        let value = vec![7u8; 1 << 20];
        let c = Command::Put(PutRequest::new("k", value.clone()));
        let bytes = bincode::serialize(&c).expect("encode");
        assert!(bytes.len() < value.len() + 64, "{} bytes for a 1 MiB value", bytes.len());
        assert_eq!(c.encoded_len(), bytes.len() as u64);
        assert!(bytes.windows(value.len()).any(|w| w == value.as_slice()), "the value is written as is");
        assert_eq!(bincode::deserialize::<Command>(&bytes).expect("decode"), c);
    }

    #[test]
    fn a_command_round_trips_through_bincode() {
        let c = Command::Batch(vec![
            Command::Put(PutRequest::new("a", "1")),
            Command::LeaseGrant { id: 7, ttl: 5 },
            Command::Compact(3),
        ]);
        let bytes = bincode::serialize(&c).expect("encode");
        assert_eq!(bincode::deserialize::<Command>(&bytes).expect("decode"), c);
    }
}
