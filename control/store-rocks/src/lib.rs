//! A durable single-node disk for waggle's store, on RocksDB.
//!
//! [`RocksDisk`] implements [`Durability`]: every commit of the store is in
//! a synced (`fsync`) RocksDB write batch before it is acknowledged;
//! concurrent commits share one ([`Durability::write_group`]). The
//! layout follows etcd's backend, keyed by revision:
//!
//! - column family `kv`: `revision (8 bytes BE) ‖ sub (4 bytes BE)` →
//!   `mvccpb.Event` (type and key-value; a delete carries only the key);
//! - column family `lease`: `lease ID (8 bytes BE)` → granted TTL (8 bytes BE);
//! - column family `meta`: the format marker, the revision and the
//!   compaction revision.
//!
//! At start the store's in-memory index is rebuilt from `kv` ([`RocksDisk::open`]).
//! This is the single-member backend; the raft log is not here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message as _;
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};
use tracing::info;
use waggle_store::durability::{Batch, Durability, Entry, Recovered};
use waggle_store::proto::mvccpb;
use waggle_store::{EventKind, KeyValue, StoreError};

const CF_KV: &str = "kv";
const CF_LEASE: &str = "lease";
const CF_META: &str = "meta";

const META_FORMAT: &[u8] = b"format";
const META_REVISION: &[u8] = b"revision";
const META_COMPACT: &[u8] = b"compact_revision";
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

    fn read_i64(&self, key: &[u8]) -> Result<i64, RocksError> {
        match self.db.get_cf(self.cf(CF_META)?, key).map_err(self.read_err())? {
            None => Ok(0),
            Some(bytes) => be_i64(&bytes).ok_or_else(|| self.corrupt(format!("meta {key:?} is not 8 bytes"))),
        }
    }

    fn recover(&self) -> Result<Recovered, RocksError> {
        let mut entries = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_KV)?, IteratorMode::Start) {
            let (key, value) = item.map_err(self.read_err())?;
            let (revision, sub) = split_kv_key(&key).ok_or_else(|| self.corrupt(format!("kv key {key:?}")))?;
            let event = mvccpb::Event::decode(&*value)
                .map_err(|e| self.corrupt(format!("version at revision {revision}: {e}")))?;
            let kind = match mvccpb::event::EventType::try_from(event.r#type) {
                Ok(mvccpb::event::EventType::Put) => EventKind::Put,
                Ok(mvccpb::event::EventType::Delete) => EventKind::Delete,
                Err(_) => return Err(self.corrupt(format!("event type {} at revision {revision}", event.r#type))),
            };
            let kv = event.kv.map(KeyValue::from).unwrap_or_default();
            entries.push(Entry { revision, sub, kind, kv });
        }
        let mut leases = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_LEASE)?, IteratorMode::Start) {
            let (key, value) = item.map_err(self.read_err())?;
            let id = be_i64(&key).ok_or_else(|| self.corrupt(format!("lease key {key:?}")))?;
            let ttl = be_i64(&value).ok_or_else(|| self.corrupt(format!("lease {id:x} TTL")))?;
            leases.push((id, ttl));
        }
        let last = entries.last().map_or(1, |e| e.revision);
        Ok(Recovered {
            revision: self.read_i64(META_REVISION)?.max(last),
            compact_revision: self.read_i64(META_COMPACT)?,
            entries,
            leases,
        })
    }

    /// Writes the commits as one synced RocksDB write batch.
    fn write_batches(&self, batches: &[Batch]) -> Result<(), RocksError> {
        let mut wb = WriteBatch::default();
        for batch in batches {
            self.add(&mut wb, batch)?;
        }
        let mut opts = WriteOptions::default();
        // Acknowledge only what survives a crash.
        opts.set_sync(true);
        self.db.write_opt(wb, &opts).map_err(self.read_err())
    }

    fn add(&self, wb: &mut WriteBatch, batch: &Batch) -> Result<(), RocksError> {
        let kv = self.cf(CF_KV)?;
        let lease = self.cf(CF_LEASE)?;
        let meta = self.cf(CF_META)?;
        for e in &batch.entries {
            let kind = match e.kind {
                EventKind::Put => mvccpb::event::EventType::Put,
                EventKind::Delete => mvccpb::event::EventType::Delete,
            };
            let event = mvccpb::Event { r#type: kind.into(), kv: Some(e.kv.clone().into()), prev_kv: None };
            wb.put_cf(kv, kv_key(e.revision, e.sub), event.encode_to_vec());
        }
        for (id, ttl) in &batch.granted {
            wb.put_cf(lease, id.to_be_bytes(), ttl.to_be_bytes());
        }
        for id in &batch.revoked {
            wb.delete_cf(lease, id.to_be_bytes());
        }
        if let Some((revision, dropped)) = &batch.compacted {
            for (rev, sub) in dropped {
                wb.delete_cf(kv, kv_key(*rev, *sub));
            }
            wb.put_cf(meta, META_COMPACT, revision.to_be_bytes());
        }
        wb.put_cf(meta, META_REVISION, batch.revision.to_be_bytes());
        Ok(())
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

fn kv_key(revision: i64, sub: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&revision.to_be_bytes());
    key[8..].copy_from_slice(&sub.to_be_bytes());
    key
}

fn split_kv_key(key: &[u8]) -> Option<(i64, u32)> {
    let revision = be_i64(key.get(..8)?)?;
    let sub = u32::from_be_bytes(key.get(8..12)?.try_into().ok()?);
    (key.len() == 12).then_some((revision, sub))
}

fn be_i64(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_keys_sort_by_revision_then_position() {
        assert!(kv_key(2, 5) < kv_key(3, 0));
        assert!(kv_key(3, 0) < kv_key(3, 1));
        assert_eq!(split_kv_key(&kv_key(300, 7)), Some((300, 7)));
        assert_eq!(split_kv_key(b"short"), None);
    }
}
