//! A durable single-node disk for waggle's store, on RocksDB.
//!
//! [`RocksDisk`] implements [`Durability`]: every commit of the store is in
//! a synced (`fsync`) RocksDB write batch before it is acknowledged;
//! concurrent commits share one ([`Durability::write_group`]). The
//! layout follows etcd's backend, keyed by revision (see [`layout`]: column
//! families `kv`, `lease` and `meta`, which also holds the format marker).
//!
//! At start the store's in-memory index is rebuilt from `kv` ([`RocksDisk::open`]).
//! This is the single-member backend; the raft log is not here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};
use tracing::info;
use waggle_store::StoreError;
use waggle_store::durability::{Batch, Durability, Recovered};

pub mod layout;

use layout::{Layout, LayoutError};

const CF_KV: &str = "kv";
const CF_LEASE: &str = "lease";
const CF_META: &str = "meta";

const META_FORMAT: &[u8] = b"format";
const FORMAT: &[u8] = b"waggle-store-rocks/1";

#[derive(Debug, thiserror::Error)]
pub enum RocksError {
    #[error("opening the store database in {path}: {source}")]
    Open { path: PathBuf, source: rocksdb::Error },
    #[error("store database {path} is not a waggle store (format marker {found:?})")]
    Foreign { path: PathBuf, found: String },
    #[error("reading the store database {path}: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("reading the store database {path}: {source}")]
    Read { path: PathBuf, source: rocksdb::Error },
}

/// The RocksDB database of one member.
pub struct RocksDisk {
    db: DB,
    path: PathBuf,
}

impl std::fmt::Debug for RocksDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDisk").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RocksDisk {
    /// Opens (or creates) the database in `path` and reads back everything
    /// the store needs to resume.
    pub fn open(path: &Path) -> Result<(Arc<Self>, Recovered), RocksError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [CF_KV, CF_LEASE, CF_META].map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)
            .map_err(|source| RocksError::Open { path: path.to_owned(), source })?;
        let disk = Self { db, path: path.to_owned() };
        disk.check_format()?;
        let recovered = disk.recover()?;
        info!(
            path = %path.display(),
            revision = recovered.revision,
            versions = recovered.entries.len(),
            leases = recovered.leases.len(),
            "opened the store database"
        );
        Ok((Arc::new(disk), recovered))
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, RocksError> {
        self.db.cf_handle(name).ok_or_else(|| self.corrupt(format!("column family {name} is missing")))
    }

    fn corrupt(&self, what: String) -> RocksError {
        RocksError::Corrupt { path: self.path.clone(), what }
    }

    fn read_err(&self) -> impl Fn(rocksdb::Error) -> RocksError + '_ {
        |source| RocksError::Read { path: self.path.clone(), source }
    }

    /// A new database gets the marker; an existing one must carry ours.
    fn check_format(&self) -> Result<(), RocksError> {
        let meta = self.cf(CF_META)?;
        match self.db.get_cf(meta, META_FORMAT).map_err(self.read_err())? {
            Some(found) if found == FORMAT => Ok(()),
            Some(found) => Err(RocksError::Foreign {
                path: self.path.clone(),
                found: String::from_utf8_lossy(&found).into_owned(),
            }),
            None => {
                // Data without our marker (in ours or in RocksDB's default column family) is someone else's.
                let any_kv = self.db.iterator_cf(self.cf(CF_KV)?, IteratorMode::Start).next().is_some();
                let any_default = self.db.iterator(IteratorMode::Start).next().is_some();
                if any_kv || any_default {
                    return Err(RocksError::Foreign { path: self.path.clone(), found: String::new() });
                }
                let mut opts = WriteOptions::default();
                opts.set_sync(true);
                let mut wb = WriteBatch::default();
                wb.put_cf(meta, META_FORMAT, FORMAT);
                self.db.write_opt(wb, &opts).map_err(self.read_err())
            }
        }
    }

    fn layout(&self) -> Result<Layout<'_>, RocksError> {
        Ok(Layout { kv: self.cf(CF_KV)?, lease: self.cf(CF_LEASE)?, meta: self.cf(CF_META)? })
    }

    fn recover(&self) -> Result<Recovered, RocksError> {
        self.layout()?.recover(&self.db).map_err(|e| match e {
            LayoutError::Read(source) => RocksError::Read { path: self.path.clone(), source },
            LayoutError::Corrupt(what) => self.corrupt(what),
        })
    }

    /// Writes the commits as one synced RocksDB write batch.
    fn write_batches(&self, batches: &[Batch]) -> Result<(), RocksError> {
        let mut wb = WriteBatch::default();
        let layout = self.layout()?;
        for batch in batches {
            layout.put_batch(&mut wb, batch);
        }
        let mut opts = WriteOptions::default();
        // Acknowledge only what survives a crash.
        opts.set_sync(true);
        self.db.write_opt(wb, &opts).map_err(self.read_err())
    }
}

impl Durability for RocksDisk {
    fn write(&self, batch: &Batch) -> waggle_store::Result<()> {
        self.write_group(std::slice::from_ref(batch))
    }

    fn write_group(&self, batches: &[Batch]) -> waggle_store::Result<()> {
        let (first, last) = match (batches.first(), batches.last()) {
            (Some(f), Some(l)) => (f.revision, l.revision),
            _ => return Ok(()),
        };
        self.write_batches(batches).map_err(|e| StoreError::Internal {
            op: "writing commits to RocksDB",
            reason: format!("revisions {first}..={last}: {e}"),
        })
    }
}
