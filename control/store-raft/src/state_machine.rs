//! The state machine: `waggle-store`'s [`MemStore`] (its MVCC index, watch
//! hub and lease table) driven only by committed [`Command`]s, so every
//! member computes the same revisions and responses.
//!
//! The state machine itself lives in memory; what makes it durable is the
//! latest snapshot (column family `snapshot`, written with `fsync`) plus the
//! raft log after it, which openraft re-applies at start. Installing a
//! snapshot replaces the `MemStore` whole: watchers on this member end
//! (their channel closes) and clients re-watch, as after a compaction.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{AnyError, Entry, EntryPayload, LogId, RaftLogId, StorageError, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use waggle_store::{MemStore, MemStoreConfig, Store as _};

use crate::command::{Applied, Command, Reply, WireError};
use crate::disk::{CF_SNAPSHOT, Disk};
use crate::{Member, NodeId, TypeConfig};

const SNAPSHOT_KEY: &[u8] = b"current";

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
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, Member>,
}

impl StateMachine {
    /// The state machine of `disk`: its latest snapshot, or empty. `config`
    /// must have `expire_leases: false` (the leader proposes revokes).
    pub fn open(disk: Arc<Disk>, config: MemStoreConfig) -> Result<Self, crate::RaftStoreError> {
        let corrupt = |what: String| crate::RaftStoreError::Corrupt {
            path: disk.path.clone(),
            what: format!("snapshot: {what}"),
        };
        let stored = read_snapshot(&disk).map_err(|e| corrupt(e.to_string()))?;
        let (mem, last_applied, last_membership) = match stored {
            Some(s) => {
                let mem = MemStore::from_snapshot(config.clone(), &s.data).map_err(|e| corrupt(e.to_string()))?;
                info!(last_log_id = ?s.meta.last_log_id, "state machine restored from its snapshot");
                (mem, s.meta.last_log_id, s.meta.last_membership)
            }
            None => {
                (MemStore::new(config.clone()).map_err(|e| corrupt(e.to_string()))?, None, StoredMembership::default())
            }
        };
        Ok(Self { mem: SharedMem::new(mem), config, disk, last_applied, last_membership })
    }

    /// The handle the client side reads and watches through.
    pub fn shared(&self) -> SharedMem {
        self.mem.clone()
    }
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
                    self.last_membership = StoredMembership::new(Some(log_id), m);
                    Ok(Reply::Nothing)
                }
            });
        }
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
        let mem = MemStore::from_snapshot(self.config.clone(), &data)
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), AnyError::new(&e)))?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        let disk = Arc::clone(&self.disk);
        let stored = tokio::task::spawn_blocking(move || write_snapshot(&disk, &stored).map(|()| stored))
            .await
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), AnyError::new(&e)))?
            .map_err(|e| StorageIOError::write_snapshot(signature, e))?;
        self.mem.replace(mem);
        self.last_applied = stored.meta.last_log_id;
        self.last_membership = stored.meta.last_membership.clone();
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
