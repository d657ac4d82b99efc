//! The raft log and vote in RocksDB.
//!
//! An append is written to RocksDB at once without `fsync` (so readers see
//! it: the leader replicates entries it has not flushed yet), and its
//! completion goes to a syncer thread. That thread takes every completion
//! queued since its last round, makes them durable with one WAL `fsync`, and
//! only then tells openraft the entries are flushed. openraft counts an
//! entry towards the commit quorum only once flushed, so nothing is
//! acknowledged before it is durable on a quorum, while the raft loop never
//! waits on the disk and concurrent appends share one `fsync`.
//!
//! RocksDB's WAL is sequential, so the `fsync` of an append also makes every
//! earlier write durable (a truncation before it, the vote).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Weak};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::disk::{CF_LOG, CF_META, Disk};
use crate::{NodeId, TypeConfig};

const META_VOTE: &[u8] = b"vote";
const META_COMMITTED: &[u8] = b"committed";
const META_LAST_PURGED: &[u8] = b"last_purged";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// What the syncer thread completes after its next `fsync`.
enum SyncJob {
    Append(LogFlushed<TypeConfig>),
    Wait(oneshot::Sender<Result<(), String>>),
}

/// The log store of one member. Clones share the database and the syncer.
#[derive(Clone)]
pub struct RocksLogStore {
    disk: Arc<Disk>,
    syncer: std_mpsc::Sender<SyncJob>,
}

impl Debug for RocksLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksLogStore").field("disk", &self.disk).finish_non_exhaustive()
    }
}

impl RocksLogStore {
    /// A log store on `disk`, with its syncer thread (which ends when the
    /// last clone is dropped). The thread does not keep the database open:
    /// it is closed where raft drops it, never behind the process's back at exit.
    pub fn new(disk: Arc<Disk>) -> io::Result<Self> {
        let (tx, rx) = std_mpsc::channel();
        let synced = Arc::downgrade(&disk);
        std::thread::Builder::new().name("raft-log-sync".to_owned()).spawn(move || sync_loop(&synced, &rx))?;
        Ok(Self { disk, syncer: tx })
    }

    /// Waits until everything written so far is durable.
    async fn sync(&self) -> Result<(), StorageIOError<NodeId>> {
        let (tx, rx) = oneshot::channel();
        let stopped = || StorageIOError::write(AnyError::error("the log syncer thread has stopped"));
        self.syncer.send(SyncJob::Wait(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?.map_err(|e| StorageIOError::write(AnyError::error(e)))
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, AnyError> {
        let Some(bytes) = self.disk.db.get_cf(self.disk.cf(CF_META), key).map_err(|e| AnyError::new(&e))? else {
            return Ok(None);
        };
        bincode::deserialize(&bytes).map(Some).map_err(|e| AnyError::new(&*e))
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), AnyError> {
        let bytes = bincode::serialize(value).map_err(|e| AnyError::new(&*e))?;
        self.disk.db.put_cf(self.disk.cf(CF_META), key, bytes).map_err(|e| AnyError::new(&e))
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<NodeId>>, AnyError> {
        let mut it = self.disk.db.iterator_cf(self.disk.cf(CF_LOG), IteratorMode::End);
        let Some(item) = it.next() else { return Ok(None) };
        let (_, value) = item.map_err(|e| AnyError::new(&e))?;
        let entry: Entry<TypeConfig> = bincode::deserialize(&value).map_err(|e| AnyError::new(&*e))?;
        Ok(Some(*entry.get_log_id()))
    }
}

/// Groups the completions queued since the last round behind one `fsync`.
fn sync_loop(disk: &Weak<Disk>, jobs: &std_mpsc::Receiver<SyncJob>) {
    while let Ok(first) = jobs.recv() {
        let mut round = vec![first];
        round.extend(jobs.try_iter());
        let result = match disk.upgrade() {
            Some(disk) => disk.db.flush_wal(true).map_err(|e| {
                error!(error = %e, path = %disk.path.display(), "syncing the raft log failed");
                e.to_string()
            }),
            None => Err("the raft database is closed".to_owned()),
        };
        for job in round {
            match job {
                SyncJob::Append(cb) => cb.log_io_completed(result.clone().map_err(io::Error::other)),
                SyncJob::Wait(tx) => {
                    let _ = tx.send(result.clone());
                }
            }
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for RocksLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let start_key = index_key(start);
        let it = self.disk.db.iterator_cf(self.disk.cf(CF_LOG), IteratorMode::From(&start_key, Direction::Forward));
        let mut entries = Vec::new();
        for item in it {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
            let index = u64::from_be_bytes(
                key.as_ref()
                    .try_into()
                    .map_err(|_| StorageIOError::read_logs(AnyError::error("a log key is not 8 bytes")))?,
            );
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<TypeConfig> = bincode::deserialize(&value)
                .map_err(|e| StorageIOError::read_log_at_index(index, AnyError::new(&*e)))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for RocksLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = self.get_meta(META_LAST_PURGED).map_err(StorageIOError::read_logs)?;
        let last = self.last_entry_log_id().map_err(StorageIOError::read_logs)?.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.put_meta(META_VOTE, vote).map_err(StorageIOError::write_vote)?;
        // A vote must be durable before it is answered.
        self.sync().await?;
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.get_meta(META_VOTE).map_err(StorageIOError::read_vote)?)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // Not synced: losing it only means re-applying from the snapshot.
        self.put_meta(META_COMMITTED, &committed).map_err(StorageIOError::write)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>(META_COMMITTED).map_err(StorageIOError::read)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.disk.cf(CF_LOG);
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = bincode::serialize(&entry)
                .map_err(|e| StorageIOError::write_log_entry(*entry.get_log_id(), AnyError::new(&*e)))?;
            batch.put_cf(cf, index_key(entry.get_log_id().index), bytes);
        }
        self.disk.db.write(batch).map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        if self.syncer.send(SyncJob::Append(callback)).is_err() {
            warn!("the log syncer thread has stopped; the append is not flushed");
            return Err(StorageIOError::write_logs(AnyError::error("the log syncer thread has stopped")).into());
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let cf = self.disk.cf(CF_LOG);
        self.disk
            .db
            .delete_range_cf(cf, index_key(log_id.index), index_key(u64::MAX))
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.put_meta(META_LAST_PURGED, &log_id).map_err(StorageIOError::write_logs)?;
        let cf = self.disk.cf(CF_LOG);
        self.disk
            .db
            .delete_range_cf(cf, index_key(0), index_key(log_id.index + 1))
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        Ok(())
    }
}
