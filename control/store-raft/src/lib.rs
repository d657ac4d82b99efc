//! Waggle's replicated store: etcd's semantics on openraft, with the raft
//! log in RocksDB and peers talking gRPC.
//!
//! The pieces, each in its own module and tested on its own:
//! - [`log_store`]: the raft log and vote in RocksDB (column families `log`
//!   and `meta`); appends are written at once and made durable by one
//!   `fsync` per group of appends on a syncer thread, so the raft loop never
//!   waits on the disk;
//! - [`state_machine`]: `waggle-store`'s [`MemStore`](waggle_store::MemStore)
//!   driven by committed [`Command`]s, persisted (unsynced: the log is the
//!   durable record) into RocksDB column families `sm_*` together with the
//!   last applied log ID, so a restart replays only the log after it;
//!   snapshots are its image, kept in RocksDB (column family `snapshot`)
//!   and shipped to lagging members;
//! - [`network`]: the peer RPCs over tonic (`proto/raft.proto`);
//! - [`RaftStore`]: the [`Store`](waggle_store::Store) a client talks to.
//!   Writes are acknowledged once committed (durable on a quorum) and
//!   applied; reads use openraft's read index (`ensure_linearizable`): the
//!   leader confirms its leadership with a quorum, then serves from its
//!   state machine once it has applied up to the read index; a follower asks
//!   the leader for the read index and waits until it has applied that far.
//!
//! openraft 0.9 (stable) rather than 0.10 (alpha): 0.10's API still moves
//! between alphas and its RocksDB examples need rocksdb 0.22+, which does not
//! build against Debian's librocksdb 7.8; 0.9's one gap that matters here,
//! batching of proposals, is filled by packing concurrent proposals into one
//! entry ([`Command::Batch`]).

pub mod cluster;
pub mod command;
pub mod disk;
pub mod error;
pub mod log_store;
pub mod member;
pub mod network;
pub mod removal;
pub mod state_machine;
mod store;

mod proto {
    #![allow(clippy::all, missing_debug_implementations)]
    tonic::include_proto!("waggle.raft.v1");
}

use std::io::Cursor;

pub use command::{Applied, Command, Reply, WireError};
pub use disk::Disk;
pub use error::RaftStoreError;
pub use member::Member;
pub use store::{RaftConfig, RaftStore};

/// A member's ID in the raft group.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's types for the store.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
