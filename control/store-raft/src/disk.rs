//! One RocksDB database per member, shared by the log store and the state
//! machine, one column family per concern:
//!
//! - `log`: `index (8 bytes BE)` → bincode raft entry;
//! - `meta`: the format marker, the vote, the committed and last purged log IDs;
//! - `snapshot`: the latest snapshot (its meta and the state machine image);
//! - `sm_kv`, `sm_lease`, `sm_meta`: the state machine, in `waggle-store-rocks`'s
//!   [layout](waggle_store_rocks::layout), plus (in `sm_meta`) the last
//!   applied log ID and membership, written in the same batch as the state
//!   they describe.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options};
use tracing::info;
use waggle_store_rocks::layout::Layout;

use crate::error::RaftStoreError;

pub(crate) const CF_LOG: &str = "log";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_SNAPSHOT: &str = "snapshot";
pub(crate) const CF_SM_KV: &str = "sm_kv";
pub(crate) const CF_SM_LEASE: &str = "sm_lease";
pub(crate) const CF_SM_META: &str = "sm_meta";

const META_FORMAT: &[u8] = b"format";

const MAX_TOTAL_WAL_BYTES: u64 = 256 * 1024 * 1024;
const SMALL_WRITE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
const FORMAT: &[u8] = b"waggle-store-raft/1";

/// The open database of one member.
pub struct Disk {
    pub(crate) db: DB,
    pub(crate) path: PathBuf,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Disk {
    /// Opens (or creates) the database in `path`; refuses a database that
    /// another program (or the single-member store) wrote.
    pub fn open(path: &Path) -> Result<Arc<Self>, RaftStoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // A write-ahead log file goes only once every column family with
        // writes in it is flushed; past this size the laggards are flushed.
        opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
        let cfs = [CF_LOG, CF_META, CF_SNAPSHOT, CF_SM_KV, CF_SM_LEASE, CF_SM_META].map(|name| {
            let mut cf = Options::default();
            if ![CF_LOG, CF_SM_KV].contains(&name) {
                // Small, often rewritten records: small memtables.
                cf.set_write_buffer_size(SMALL_WRITE_BUFFER_BYTES);
            }
            ColumnFamilyDescriptor::new(name, cf)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)
            .map_err(|source| RaftStoreError::Open { path: path.to_owned(), source })?;
        let disk = Self { db, path: path.to_owned() };
        disk.check_format()?;
        info!(path = %path.display(), "opened the raft database");
        Ok(Arc::new(disk))
    }

    fn check_format(&self) -> Result<(), RaftStoreError> {
        let meta = self.cf(CF_META);
        let found = self.db.get_cf(meta, META_FORMAT).map_err(|e| self.corrupt(format!("format marker: {e}")))?;
        match found {
            Some(f) if f == FORMAT => Ok(()),
            Some(f) => Err(RaftStoreError::Foreign {
                path: self.path.clone(),
                found: String::from_utf8_lossy(&f).into_owned(),
            }),
            None => {
                let empty = self.db.iterator_cf(self.cf(CF_LOG), rocksdb::IteratorMode::Start).next().is_none();
                if !empty {
                    return Err(RaftStoreError::Foreign { path: self.path.clone(), found: String::new() });
                }
                self.db.put_cf(meta, META_FORMAT, FORMAT).map_err(|e| self.corrupt(format!("format marker: {e}")))
            }
        }
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        // Every column family is created by `open`; a missing one is a bug.
        self.db.cf_handle(name).expect("the column family exists")
    }

    /// The column families of the state machine.
    pub(crate) fn layout(&self) -> Layout<'_> {
        Layout { kv: self.cf(CF_SM_KV), lease: self.cf(CF_SM_LEASE), meta: self.cf(CF_SM_META) }
    }

    pub(crate) fn corrupt(&self, what: String) -> RaftStoreError {
        RaftStoreError::Corrupt { path: self.path.clone(), what }
    }
}
