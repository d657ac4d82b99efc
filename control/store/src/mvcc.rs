//! The MVCC index: every key's versions until compaction.
//!
//! Keys live in a `BTreeMap` (ordered ranges); each holds its own list of
//! versions in revision order, so a write touches one key's list and a read
//! at a past revision is a binary search in each key it visits.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::durability::Entry;
use crate::types::{Event, EventKind, KeyRange, KeyValue, LeaseId, Revision};

/// One version of a key; `value == None` is a deletion (tombstone).
#[derive(Clone, Debug)]
struct Version {
    mod_revision: Revision,
    /// Position within the revision (a transaction writes several keys at one revision).
    sub: u32,
    create_revision: Revision,
    version: i64,
    value: Option<Vec<u8>>,
    lease: LeaseId,
}

#[derive(Debug, Default)]
struct History {
    versions: Vec<Version>,
}

impl History {
    /// Index of the newest version at or before `at`.
    fn position_at(&self, at: Revision) -> Option<usize> {
        let n = self.versions.partition_point(|v| v.mod_revision <= at);
        n.checked_sub(1)
    }

    fn live_at(&self, key: &[u8], at: Revision) -> Option<KeyValue> {
        let v = &self.versions[self.position_at(at)?];
        v.value.as_ref().map(|value| to_kv(key, v, value))
    }

    fn latest_live(&self, key: &[u8]) -> Option<KeyValue> {
        let v = self.versions.last()?;
        v.value.as_ref().map(|value| to_kv(key, v, value))
    }
}

fn to_kv(key: &[u8], v: &Version, value: &[u8]) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        value: value.to_vec(),
        create_revision: v.create_revision,
        mod_revision: v.mod_revision,
        version: v.version,
        lease: v.lease,
    }
}

fn version_size(key: &[u8], v: &Version) -> i64 {
    let value = v.value.as_ref().map_or(0, Vec::len);
    // Key, value and the fixed fields, roughly what a backend would store.
    i64::try_from(key.len() + value + 40).unwrap_or(i64::MAX)
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    keys: BTreeMap<Vec<u8>, History>,
    size_bytes: i64,
}

impl Index {
    pub(crate) fn size_bytes(&self) -> i64 {
        self.size_bytes
    }

    /// The live value of `key` at revision `at`.
    pub(crate) fn get(&self, key: &[u8], at: Revision) -> Option<KeyValue> {
        self.keys.get(key)?.live_at(key, at)
    }

    /// The live values of the range at revision `at`, in key order; `visit`
    /// returns `false` to stop early.
    pub(crate) fn range_at(&self, range: &KeyRange, at: Revision, mut visit: impl FnMut(KeyValue) -> bool) {
        if range.is_single() {
            if let Some(kv) = self.get(&range.key, at) {
                visit(kv);
            }
            return;
        }
        for (key, history) in self.histories(range) {
            if let Some(kv) = history.live_at(key, at)
                && !visit(kv)
            {
                return;
            }
        }
    }

    /// The live keys of the range now (for deletes), in key order.
    pub(crate) fn live_keys(&self, range: &KeyRange) -> Vec<KeyValue> {
        if range.is_single() {
            return self.keys.get(&range.key).and_then(|h| h.latest_live(&range.key)).into_iter().collect();
        }
        self.histories(range).filter_map(|(key, h)| h.latest_live(key)).collect()
    }

    fn histories<'a>(&'a self, range: &'a KeyRange) -> Box<dyn Iterator<Item = (&'a Vec<u8>, &'a History)> + 'a> {
        let lower = range.lower();
        match range.upper() {
            None => Box::new(self.keys.range::<[u8], _>((Bound::Included(lower), Bound::Unbounded))),
            Some(upper) if upper > lower => {
                Box::new(self.keys.range::<[u8], _>((Bound::Included(lower), Bound::Excluded(upper))))
            }
            Some(_) => Box::new(std::iter::empty()),
        }
    }

    /// Writes a new version of `key`; returns the version it replaces, if live.
    pub(crate) fn put(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: LeaseId,
        revision: Revision,
        sub: u32,
    ) -> (KeyValue, Option<KeyValue>) {
        let history = self.keys.entry(key.to_vec()).or_default();
        let prev = history.latest_live(key);
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (revision, 1),
        };
        let v = Version { mod_revision: revision, sub, create_revision, version, value: Some(value), lease };
        self.size_bytes += version_size(key, &v);
        let kv = v.value.as_deref().map(|value| to_kv(key, &v, value)).unwrap_or_default();
        history.versions.push(v);
        (kv, prev)
    }

    /// Deletes `key` if it is live; returns the deleted version.
    pub(crate) fn delete(&mut self, key: &[u8], revision: Revision, sub: u32) -> Option<KeyValue> {
        let history = self.keys.get_mut(key)?;
        let prev = history.latest_live(key)?;
        let v = Version { mod_revision: revision, sub, create_revision: 0, version: 0, value: None, lease: 0 };
        self.size_bytes += version_size(key, &v);
        history.versions.push(v);
        Some(prev)
    }

    /// Drops every version that no read at or after `revision` can see.
    /// A tombstone written exactly at `revision` is kept so that the events
    /// of that revision stay complete for watchers starting there.
    /// Returns the (revision, sub) of every dropped version.
    pub(crate) fn compact(&mut self, revision: Revision) -> Vec<(Revision, u32)> {
        let mut freed = 0;
        let mut dropped = Vec::new();
        self.keys.retain(|key, history| {
            let Some(pos) = history.position_at(revision) else { return true };
            let keep_from = match &history.versions[pos] {
                v if v.value.is_none() && v.mod_revision < revision => pos + 1,
                _ => pos,
            };
            for v in history.versions.drain(..keep_from) {
                freed += version_size(key, &v);
                dropped.push((v.mod_revision, v.sub));
            }
            !history.versions.is_empty()
        });
        self.size_bytes -= freed;
        dropped
    }

    /// Re-applies a version read back from disk; entries come in (revision, sub) order.
    pub(crate) fn replay(&mut self, entry: &Entry) {
        let kv = &entry.kv;
        let v = Version {
            mod_revision: entry.revision,
            sub: entry.sub,
            create_revision: kv.create_revision,
            version: kv.version,
            value: match entry.kind {
                EventKind::Put => Some(kv.value.clone()),
                EventKind::Delete => None,
            },
            lease: kv.lease,
        };
        self.size_bytes += version_size(&kv.key, &v);
        self.keys.entry(kv.key.clone()).or_default().versions.push(v);
    }

    /// Every event in `[from, to]` on keys of `range`, grouped by revision
    /// and in write order. `prev_kv` is filled when asked and still retained.
    pub(crate) fn events(
        &self,
        range: &KeyRange,
        from: Revision,
        to: Revision,
        prev_kv: bool,
    ) -> Vec<(Revision, Vec<Event>)> {
        let mut found: Vec<(Revision, u32, Event)> = Vec::new();
        let mut collect = |key: &[u8], history: &History| {
            let start = history.versions.partition_point(|v| v.mod_revision < from);
            for i in start..history.versions.len() {
                let v = &history.versions[i];
                if v.mod_revision > to {
                    break;
                }
                let prev = if prev_kv && i > 0 {
                    let p = &history.versions[i - 1];
                    p.value.as_ref().map(|value| to_kv(key, p, value))
                } else {
                    None
                };
                let event = match &v.value {
                    Some(value) => Event { kind: EventKind::Put, kv: to_kv(key, v, value), prev_kv: prev },
                    None => Event {
                        kind: EventKind::Delete,
                        kv: KeyValue { key: key.to_vec(), mod_revision: v.mod_revision, ..KeyValue::default() },
                        prev_kv: prev,
                    },
                };
                found.push((v.mod_revision, v.sub, event));
            }
        };
        if range.is_single() {
            if let Some(h) = self.keys.get(&range.key) {
                collect(&range.key, h);
            }
        } else {
            for (key, h) in self.histories(range) {
                collect(key, h);
            }
        }
        found.sort_by_key(|(rev, sub, _)| (*rev, *sub));
        let mut grouped: Vec<(Revision, Vec<Event>)> = Vec::new();
        for (rev, _, event) in found {
            match grouped.last_mut() {
                Some((r, events)) if *r == rev => events.push(event),
                _ => grouped.push((rev, vec![event])),
            }
        }
        grouped
    }

    /// Every live key at the newest revision.
    pub(crate) fn all_live(&self) -> Vec<KeyValue> {
        self.keys.iter().filter_map(|(k, h)| h.latest_live(k)).collect()
    }

    /// Every live key at revision `at`, for snapshots.
    pub(crate) fn all_live_at(&self, at: Revision) -> Vec<KeyValue> {
        self.keys.iter().filter_map(|(k, h)| h.live_at(k, at)).collect()
    }

    /// Loads a key as it was at a snapshot: a single version.
    pub(crate) fn restore(&mut self, kv: KeyValue) {
        let v = Version {
            mod_revision: kv.mod_revision,
            sub: 0,
            create_revision: kv.create_revision,
            version: kv.version,
            value: Some(kv.value),
            lease: kv.lease,
        };
        self.size_bytes += version_size(&kv.key, &v);
        self.keys.insert(kv.key, History { versions: vec![v] });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(index: &mut Index, key: &str, value: &str, rev: Revision) {
        index.put(key.as_bytes(), value.as_bytes().to_vec(), 0, rev, 0);
    }

    #[test]
    fn reads_at_a_past_revision_see_the_value_of_that_time() {
        let mut index = Index::default();
        put(&mut index, "a", "1", 2);
        put(&mut index, "a", "2", 3);
        index.delete(b"a", 4, 0);
        assert_eq!(index.get(b"a", 2).map(|kv| kv.value), Some(b"1".to_vec()));
        assert_eq!(index.get(b"a", 3).map(|kv| kv.version), Some(2));
        assert_eq!(index.get(b"a", 4), None);
        assert_eq!(index.get(b"a", 1), None);
    }

    #[test]
    fn compaction_keeps_the_version_visible_at_the_compaction_revision() {
        let mut index = Index::default();
        put(&mut index, "a", "1", 2);
        put(&mut index, "a", "2", 3);
        put(&mut index, "b", "1", 4);
        index.delete(b"b", 5, 0);
        index.compact(5);
        assert_eq!(index.get(b"a", 5).map(|kv| kv.value), Some(b"2".to_vec()));
        assert_eq!(index.events(&KeyRange::all(), 0, 10, false).len(), 2, "a@3 and the tombstone of b@5");
        index.compact(6);
        assert!(!index.keys.contains_key(b"b".as_slice()), "tombstones below the compaction go");
    }

    #[test]
    fn a_range_whose_end_is_below_its_start_is_empty() {
        let mut index = Index::default();
        put(&mut index, "m", "1", 2);
        let mut n = 0;
        index.range_at(&KeyRange { key: b"z".to_vec(), range_end: b"a".to_vec() }, 2, |_| {
            n += 1;
            true
        });
        assert_eq!(n, 0);
    }
}
