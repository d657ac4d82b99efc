//! The seam between the store's logic and a disk: [`MemStore`](crate::MemStore)
//! hands every committed change to a [`Durability`] before the change is
//! acknowledged or shown to watchers, and rebuilds itself from a
//! [`Recovered`] image at start — etcd's design, where the in-memory index
//! is rebuilt from the revision-keyed backend.
//!
//! This crate has no disk implementation; `waggle-store-rocks` provides one
//! on RocksDB, keeping this crate free of it.

use crate::error::Result;
use crate::types::{EventKind, KeyValue, LeaseId, Revision};

/// One version of a key as it is written: a put carries the whole key-value,
/// a delete (tombstone) only the key and its revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub revision: Revision,
    /// Position within the revision (transactions write several keys at one revision).
    pub sub: u32,
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// Everything one commit changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// The store's revision after this batch.
    pub revision: Revision,
    pub entries: Vec<Entry>,
    /// Leases granted, with their granted TTL.
    pub granted: Vec<(LeaseId, i64)>,
    pub revoked: Vec<LeaseId>,
    /// A compaction: the new compaction revision and the versions it dropped.
    pub compacted: Option<(Revision, Vec<(Revision, u32)>)>,
}

/// What a disk held at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub revision: Revision,
    pub compact_revision: Revision,
    /// Every retained version, in (revision, sub) order.
    pub entries: Vec<Entry>,
    pub leases: Vec<(LeaseId, i64)>,
}

/// Makes committed batches durable. Both methods return only once the
/// batches would survive a crash (fsync). One thread calls them, with
/// batches in commit order. (Behind a [`MemStore::replica`](crate::MemStore::replica),
/// whose commits a replicated log already made durable, `write` only stages
/// the batch, under the store's lock.)
pub trait Durability: Send + Sync + std::fmt::Debug + 'static {
    fn write(&self, batch: &Batch) -> Result<()>;

    /// Makes several consecutive commits durable at once (group commit);
    /// a disk should write them as one synced write. Either all of them
    /// are durable on return or the call fails.
    fn write_group(&self, batches: &[Batch]) -> Result<()> {
        batches.iter().try_for_each(|b| self.write(b))
    }
}
