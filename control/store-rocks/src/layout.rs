//! The store's on-disk layout in three column families, shared by
//! [`RocksDisk`](crate::RocksDisk) and the replicated store's state machine
//! (which keeps the same layout in the raft database, next to the log):
//!
//! - `kv`: `revision (8 bytes BE) ‖ sub (4 bytes BE)` → `mvccpb.Event`
//!   (type and key-value; a delete carries only the key);
//! - `lease`: `lease ID (8 bytes BE)` → granted TTL (8 bytes BE);
//! - `meta`: the revision and the compaction revision (the owner may keep
//!   its own keys there too).
//!
//! The functions only fill write batches and read; when and how a batch is
//! written (synced or not) is the owner's choice.

use prost::Message as _;
use rocksdb::{ColumnFamily, DB, IteratorMode, WriteBatch};
use waggle_store::durability::{Batch, Entry, Recovered};
use waggle_store::proto::mvccpb;
use waggle_store::{EventKind, KeyValue};

const META_REVISION: &[u8] = b"revision";
const META_COMPACT: &[u8] = b"compact_revision";

/// The column families holding one store.
#[derive(Clone, Copy)]
pub struct Layout<'a> {
    pub kv: &'a ColumnFamily,
    pub lease: &'a ColumnFamily,
    pub meta: &'a ColumnFamily,
}

impl std::fmt::Debug for Layout<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout").finish_non_exhaustive()
    }
}

/// Why reading a layout failed.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{0}")]
    Read(#[from] rocksdb::Error),
    #[error("{0}")]
    Corrupt(String),
}

impl Layout<'_> {
    /// Adds everything one commit changes to `wb`.
    pub fn put_batch(&self, wb: &mut WriteBatch, batch: &Batch) {
        for e in &batch.entries {
            self.put_entry(wb, e);
        }
        for (id, ttl) in &batch.granted {
            wb.put_cf(self.lease, id.to_be_bytes(), ttl.to_be_bytes());
        }
        for id in &batch.revoked {
            wb.delete_cf(self.lease, id.to_be_bytes());
        }
        if let Some((revision, dropped)) = &batch.compacted {
            for (rev, sub) in dropped {
                wb.delete_cf(self.kv, kv_key(*rev, *sub));
            }
            wb.put_cf(self.meta, META_COMPACT, revision.to_be_bytes());
        }
        wb.put_cf(self.meta, META_REVISION, batch.revision.to_be_bytes());
    }

    fn put_entry(&self, wb: &mut WriteBatch, e: &Entry) {
        let kind = match e.kind {
            EventKind::Put => mvccpb::event::EventType::Put,
            EventKind::Delete => mvccpb::event::EventType::Delete,
        };
        let event = mvccpb::Event { r#type: kind.into(), kv: Some(e.kv.clone().into()), prev_kv: None };
        wb.put_cf(self.kv, kv_key(e.revision, e.sub), event.encode_to_vec());
    }

    /// Replaces the whole store with `image` (its entries, leases and
    /// revisions): what installing a snapshot writes, as one batch.
    pub fn put_image(&self, wb: &mut WriteBatch, image: &Recovered) {
        wb.delete_range_cf(self.kv, &[0u8; 12][..], &[0xffu8; 13][..]);
        wb.delete_range_cf(self.lease, &[0u8; 8][..], &[0xffu8; 9][..]);
        for e in &image.entries {
            self.put_entry(wb, e);
        }
        for (id, ttl) in &image.leases {
            wb.put_cf(self.lease, id.to_be_bytes(), ttl.to_be_bytes());
        }
        wb.put_cf(self.meta, META_COMPACT, image.compact_revision.to_be_bytes());
        wb.put_cf(self.meta, META_REVISION, image.revision.to_be_bytes());
    }

    /// Whether the `kv` column family holds anything.
    pub fn has_versions(&self, db: &DB) -> bool {
        db.iterator_cf(self.kv, IteratorMode::Start).next().is_some()
    }

    /// Reads back everything the store needs to resume.
    pub fn recover(&self, db: &DB) -> Result<Recovered, LayoutError> {
        let corrupt = LayoutError::Corrupt;
        let mut entries = Vec::new();
        for item in db.iterator_cf(self.kv, IteratorMode::Start) {
            let (key, value) = item?;
            let (revision, sub) = split_kv_key(&key).ok_or_else(|| corrupt(format!("kv key {key:?}")))?;
            let event =
                mvccpb::Event::decode(&*value).map_err(|e| corrupt(format!("version at revision {revision}: {e}")))?;
            let kind = match mvccpb::event::EventType::try_from(event.r#type) {
                Ok(mvccpb::event::EventType::Put) => EventKind::Put,
                Ok(mvccpb::event::EventType::Delete) => EventKind::Delete,
                Err(_) => return Err(corrupt(format!("event type {} at revision {revision}", event.r#type))),
            };
            let kv = event.kv.map(KeyValue::from).unwrap_or_default();
            entries.push(Entry { revision, sub, kind, kv });
        }
        let mut leases = Vec::new();
        for item in db.iterator_cf(self.lease, IteratorMode::Start) {
            let (key, value) = item?;
            let id = be_i64(&key).ok_or_else(|| corrupt(format!("lease key {key:?}")))?;
            let ttl = be_i64(&value).ok_or_else(|| corrupt(format!("lease {id:x} TTL")))?;
            leases.push((id, ttl));
        }
        let last = entries.last().map_or(1, |e| e.revision);
        Ok(Recovered {
            revision: self.read_i64(db, META_REVISION)?.max(last),
            compact_revision: self.read_i64(db, META_COMPACT)?,
            entries,
            leases,
        })
    }

    fn read_i64(&self, db: &DB, key: &[u8]) -> Result<i64, LayoutError> {
        match db.get_cf(self.meta, key)? {
            None => Ok(0),
            Some(bytes) => be_i64(&bytes).ok_or_else(|| LayoutError::Corrupt(format!("meta {key:?} is not 8 bytes"))),
        }
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
