//! The state machine: `waggle-store`'s [`MemStore`] (its MVCC index, watch
//! hub and lease table) driven only by committed [`Command`]s, so every
//! member computes the same revisions and responses.
//!
//! The `MemStore` persists every commit into the raft database's state
//! machine column families (`sm_kv`, `sm_lease`, `sm_meta`, in
//! `waggle-store-rocks`'s layout) through [`SmDurability`]
//! ([`MemStore::replica`]: a commit is staged as it is made and shown at
//! once, without a round trip to a disk thread): the commits of
//! one `apply` call are gathered into one RocksDB write batch, written with
//! the last applied log ID and membership, so the state on disk and the log
//! position it stands for never disagree. That write is not synced: the raft
//! log is the durable record, and RocksDB's write-ahead log is ordered, so a
//! crash can only lose a suffix of applies, which openraft applies again
//! from the log. A restart opens the state from these column families and
//! replays only the log after the last applied entry.
//!
//! Snapshots are the store's image (`snapshot` column family, with `fsync`),
//! built between two applies and shipped to members that fell behind.
//! Installing one replaces the state machine's column families and the
//! `MemStore` whole: watchers on this member end (their channel closes) and
//! clients re-watch, as after a compaction.

use std::collections::{BTreeSet, HashMap};
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock, Weak};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{AnyError, Entry, EntryPayload, LogId, RaftLogId, StorageError, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use waggle_store::durability::{self, Batch, Durability, Recovered};
use waggle_store::{EventKind, MemStore, MemStoreConfig, Store as _, StoreError};

use crate::command::{Applied, Command, Reply, WireError};
use crate::disk::{CF_SM_META, CF_SNAPSHOT, Disk};
use crate::removal::Removal;
use crate::{Member, NodeId, TypeConfig};

const SNAPSHOT_KEY: &[u8] = b"current";
/// In `sm_meta`: the last applied log ID and the last applied membership.
const SM_APPLIED: &[u8] = b"applied";
const SM_MEMBERSHIP: &[u8] = b"membership";
/// In `sm_meta`: the IDs removed from the membership ([`Removal`]).
const SM_REMOVED: &[u8] = b"removed";

/// Gathered commits are written early when they grow past this, so that a
/// long run of large entries does not pile up in memory.
const FLUSH_BYTES: usize = 32 * 1024 * 1024;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// The current `MemStore` of a member; replaced when a snapshot is installed.
#[derive(Clone, Debug)]
pub struct SharedMem(Arc<RwLock<MemStore>>);

impl SharedMem {
    fn new(mem: MemStore) -> Self {
        Self(Arc::new(RwLock::new(mem)))
    }

    /// The store as it is now (a cheap handle).
    pub fn get(&self) -> MemStore {
        match self.0.read() {
            Ok(mem) => mem.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, mem: MemStore) {
        match self.0.write() {
            Ok(mut current) => *current = mem,
            Err(poisoned) => *poisoned.into_inner() = mem,
        }
    }
}

/// The state machine's disk: gathers the `MemStore`'s commits into one
/// write batch per `apply` call ([`StateMachine::apply`] writes it).
/// It does not keep the database open: clients' handles on the `MemStore`
/// may outlive raft, and the database must close when raft stops.
pub struct SmDurability {
    disk: Weak<Disk>,
    pending: Mutex<rocksdb::WriteBatch>,
}

impl std::fmt::Debug for SmDurability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmDurability").finish_non_exhaustive()
    }
}

impl Durability for SmDurability {
    fn write(&self, batch: &Batch) -> waggle_store::Result<()> {
        let mut pending = self.pending.lock().map_err(|_| StoreError::Internal {
            op: "gathering a commit for RocksDB",
            reason: "the pending batch lock is poisoned".to_owned(),
        })?;
        let disk = self.disk.upgrade().ok_or_else(|| StoreError::Internal {
            op: "gathering a commit for RocksDB",
            reason: "the raft database is closed".to_owned(),
        })?;
        disk.layout().put_batch(&mut pending, batch);
        Ok(())
    }
}

impl SmDurability {
    fn take(&self) -> rocksdb::WriteBatch {
        match self.pending.lock() {
            Ok(mut wb) => std::mem::take(&mut *wb),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    fn pending_bytes(&self) -> usize {
        self.pending.lock().map(|wb| wb.size_in_bytes()).unwrap_or(0)
    }
}

/// A snapshot as it is kept on disk.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Member>,
    data: Vec<u8>,
}

#[derive(Debug)]
pub struct StateMachine {
    mem: SharedMem,
    config: MemStoreConfig,
    disk: Arc<Disk>,
    durability: Arc<SmDurability>,
    removal: Arc<Removal>,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, Member>,
}

impl StateMachine {
    /// The state machine kept in `disk`. A database written before the
    /// state machine was kept on disk gets it from its latest snapshot
    /// first. `config` must have `expire_leases: false` (the leader
    /// proposes revokes). `removal` learns the removed members as
    /// membership changes are applied.
    pub fn open(disk: Arc<Disk>, config: MemStoreConfig, removal: Arc<Removal>) -> Result<Self, crate::RaftStoreError> {
        let corrupt = |what: String| disk.corrupt(format!("state machine: {what}"));
        let durability = Arc::new(SmDurability { disk: Arc::downgrade(&disk), pending: Mutex::default() });
        let meta = disk.cf(CF_SM_META);
        let applied = disk.db.get_cf(meta, SM_APPLIED).map_err(|e| corrupt(e.to_string()))?;
        if applied.is_none()
            && !disk.layout().has_versions(&disk.db)
            && let Some(s) = read_snapshot(&disk).map_err(|e| corrupt(format!("snapshot: {e}")))?
        {
            let image = image_of(&s.data).map_err(|e| corrupt(format!("snapshot: {e}")))?;
            write_image(&disk, &image, &s.meta, &removal.removed(), None).map_err(|e| corrupt(e.to_string()))?;
            info!(last_log_id = ?s.meta.last_log_id, "state machine loaded from the latest snapshot");
        }
        let last_applied: Option<LogId<NodeId>> =
            read_meta::<Option<LogId<NodeId>>>(&disk, SM_APPLIED).map_err(|e| corrupt(e.to_string()))?.flatten();
        let last_membership: StoredMembership<NodeId, Member> =
            read_meta(&disk, SM_MEMBERSHIP).map_err(|e| corrupt(e.to_string()))?.unwrap_or_default();
        removal.restore(read_meta(&disk, SM_REMOVED).map_err(|e| corrupt(e.to_string()))?.unwrap_or_default());
        let recovered = disk.layout().recover(&disk.db).map_err(|e| corrupt(e.to_string()))?;
        let versions = recovered.entries.len();
        let mem = MemStore::replica(config.clone(), Arc::clone(&durability) as Arc<dyn Durability>, recovered)
            .map_err(|e| corrupt(e.to_string()))?;
        info!(last_applied = ?last_applied, versions, "state machine opened");
        Ok(Self { mem: SharedMem::new(mem), config, disk, durability, removal, last_applied, last_membership })
    }

    /// The handle the client side reads and watches through.
    pub fn shared(&self) -> SharedMem {
        self.mem.clone()
    }

    /// Writes the commits gathered since the last flush, with the log
    /// position and membership they bring the state machine to, as one
    /// (unsynced) RocksDB batch.
    fn flush(&self) -> Result<(), AnyError> {
        let mut wb = self.durability.take();
        put_applied(&self.disk, &mut wb, self.last_applied, &self.last_membership, &self.removal.removed())?;
        self.disk.db.write(wb).map_err(|e| AnyError::new(&e))
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(disk: &Disk, key: &[u8]) -> Result<Option<T>, AnyError> {
    let Some(bytes) = disk.db.get_cf(disk.cf(CF_SM_META), key).map_err(|e| AnyError::new(&e))? else {
        return Ok(None);
    };
    bincode::deserialize(&bytes).map(Some).map_err(|e| AnyError::new(&*e))
}

fn put_applied(
    disk: &Disk,
    wb: &mut rocksdb::WriteBatch,
    applied: Option<LogId<NodeId>>,
    membership: &StoredMembership<NodeId, Member>,
    removed: &BTreeSet<NodeId>,
) -> Result<(), AnyError> {
    let meta = disk.cf(CF_SM_META);
    wb.put_cf(meta, SM_APPLIED, bincode::serialize(&applied).map_err(|e| AnyError::new(&*e))?);
    wb.put_cf(meta, SM_MEMBERSHIP, bincode::serialize(membership).map_err(|e| AnyError::new(&*e))?);
    wb.put_cf(meta, SM_REMOVED, bincode::serialize(removed).map_err(|e| AnyError::new(&*e))?);
    Ok(())
}

/// The state a snapshot carries, as the versions the disk layout holds:
/// each live key once, at its mod revision (keys written by one
/// transaction share a revision and get distinct positions in it).
fn image_of(data: &[u8]) -> Result<Recovered, StoreError> {
    let image = waggle_store::snapshot::decode(data)?;
    let mut subs: HashMap<i64, u32> = HashMap::new();
    let mut entries: Vec<durability::Entry> = image
        .kvs
        .into_iter()
        .map(|kv| {
            let sub = subs.entry(kv.mod_revision).or_default();
            let entry = durability::Entry { revision: kv.mod_revision, sub: *sub, kind: EventKind::Put, kv };
            *sub += 1;
            entry
        })
        .collect();
    entries.sort_by_key(|e| (e.revision, e.sub));
    Ok(Recovered {
        revision: image.revision,
        compact_revision: image.compact_revision,
        entries,
        leases: image.leases.into_iter().map(|l| (l.id, l.granted_ttl)).collect(),
    })
}

/// Replaces the state machine's column families with `image`, as of the
/// snapshot `meta`, in one synced batch (with the snapshot itself, if given).
fn write_image(
    disk: &Disk,
    image: &Recovered,
    meta: &SnapshotMeta<NodeId, Member>,
    removed: &BTreeSet<NodeId>,
    snapshot: Option<&StoredSnapshot>,
) -> Result<(), AnyError> {
    let mut wb = rocksdb::WriteBatch::default();
    disk.layout().put_image(&mut wb, image);
    put_applied(disk, &mut wb, meta.last_log_id, &meta.last_membership, removed)?;
    if let Some(snapshot) = snapshot {
        let bytes = bincode::serialize(snapshot).map_err(|e| AnyError::new(&*e))?;
        wb.put_cf(disk.cf(CF_SNAPSHOT), SNAPSHOT_KEY, bytes);
    }
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    disk.db.write_opt(wb, &opts).map_err(|e| AnyError::new(&e))
}

fn read_snapshot(disk: &Disk) -> Result<Option<StoredSnapshot>, AnyError> {
    let Some(bytes) = disk.db.get_cf(disk.cf(CF_SNAPSHOT), SNAPSHOT_KEY).map_err(|e| AnyError::new(&e))? else {
        return Ok(None);
    };
    bincode::deserialize(&bytes).map(Some).map_err(|e| AnyError::new(&*e))
}

fn write_snapshot(disk: &Disk, snapshot: &StoredSnapshot) -> Result<(), AnyError> {
    let bytes = bincode::serialize(snapshot).map_err(|e| AnyError::new(&*e))?;
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    disk.db.put_cf_opt(disk.cf(CF_SNAPSHOT), SNAPSHOT_KEY, bytes, &opts).map_err(|e| AnyError::new(&e))
}

/// Applies one command to the store.
async fn run(mem: &MemStore, command: Command) -> Applied {
    match command {
        Command::Batch(commands) => {
            let mut replies = Vec::with_capacity(commands.len());
            for c in commands {
                replies.push(match c {
                    Command::Batch(_) => Err(WireError::Internal {
                        op: "applying a batch".to_owned(),
                        reason: "batches do not nest".to_owned(),
                    }),
                    c => run_one(mem, c).await,
                });
            }
            Ok(Reply::Batch(replies))
        }
        c => run_one(mem, c).await,
    }
}

async fn run_one(mem: &MemStore, command: Command) -> Applied {
    let reply = match command {
        Command::Put(r) => mem.put(r).await.map(Reply::Put),
        Command::Delete(r) => mem.delete(r).await.map(Reply::Delete),
        Command::Txn(r) => mem.txn(r).await.map(Reply::Txn),
        Command::Compact(revision) => mem.compact(revision).await.map(Reply::Revision),
        Command::LeaseGrant { id, ttl } => mem.lease_grant(id, ttl).await.map(Reply::LeaseGrant),
        Command::LeaseRevoke(id) => mem.lease_revoke(id).await.map(Reply::Revision),
        Command::Batch(_) => return Ok(Reply::Nothing),
    };
    reply.map_err(WireError::from)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>)> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mem = self.mem.get();
        let mut replies = Vec::new();
        for entry in entries {
            let log_id = *entry.get_log_id();
            self.last_applied = Some(log_id);
            replies.push(match entry.payload {
                EntryPayload::Blank => Ok(Reply::Nothing),
                EntryPayload::Normal(command) => run(&mem, command).await,
                EntryPayload::Membership(m) => {
                    self.removal.apply(self.last_membership.membership(), &m);
                    self.last_membership = StoredMembership::new(Some(log_id), m);
                    Ok(Reply::Nothing)
                }
            });
            if self.durability.pending_bytes() >= FLUSH_BYTES {
                self.flush().map_err(StorageIOError::write_state_machine)?;
            }
        }
        self.flush().map_err(StorageIOError::write_state_machine)?;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // The image is taken now, between two applies, so that it matches
        // `last_applied`; the builder only persists it.
        let image = self.mem.get().snapshot().await.map_err(|e| e.to_string());
        SnapshotBuilder {
            disk: Arc::clone(&self.disk),
            image,
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let signature = Some(meta.signature());
        let image = image_of(&data).map_err(|e| StorageIOError::read_snapshot(signature.clone(), AnyError::new(&e)))?;
        // Whatever an interrupted apply gathered belongs to the state replaced now.
        drop(self.durability.take());
        // A snapshot does not name the members removed before it; those known here stay known.
        self.removal.apply(self.last_membership.membership(), meta.last_membership.membership());
        let removed = self.removal.removed();
        let stored = StoredSnapshot { meta: meta.clone(), data };
        let disk = Arc::clone(&self.disk);
        let image = tokio::task::spawn_blocking(move || {
            write_image(&disk, &image, &stored.meta, &removed, Some(&stored)).map(|()| image)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(signature.clone(), AnyError::new(&e)))?
        .map_err(|e| StorageIOError::write_snapshot(signature.clone(), e))?;
        let mem = MemStore::replica(self.config.clone(), Arc::clone(&self.durability) as Arc<dyn Durability>, image)
            .map_err(|e| StorageIOError::read_snapshot(signature, AnyError::new(&e)))?;
        self.mem.replace(mem);
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        info!(last_log_id = ?self.last_applied, "installed a snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let stored = read_snapshot(&self.disk).map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

/// Persists the image taken by [`StateMachine::get_snapshot_builder`].
#[derive(Debug)]
pub struct SnapshotBuilder {
    disk: Arc<Disk>,
    image: Result<Vec<u8>, String>,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, Member>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let data = self.image.clone().map_err(|e| StorageIOError::read_state_machine(AnyError::error(e)))?;
        let snapshot_id = match self.last_applied {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index),
            None => "empty".to_owned(),
        };
        let meta =
            SnapshotMeta { last_log_id: self.last_applied, last_membership: self.last_membership.clone(), snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data };
        let disk = Arc::clone(&self.disk);
        let stored = tokio::task::spawn_blocking(move || write_snapshot(&disk, &stored).map(|()| stored))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e)))?
            .map_err(|e| {
                warn!(error = %e, "persisting a snapshot failed");
                StorageIOError::write_snapshot(Some(meta.signature()), e)
            })?;
        info!(last_log_id = ?stored.meta.last_log_id, bytes = stored.data.len(), "built a snapshot");
        Ok(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}
