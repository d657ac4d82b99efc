//! The store's request and response values, shaped like etcd's v3 API but free
//! of wire concerns (the gRPC layer converts them).

use std::fmt;

/// A point in the store's history. Revision 0 means "the current one" in
/// requests; the first write makes revision 2 (revision 1 is the empty store),
/// as in etcd.
pub type Revision = i64;

/// A lease identifier; 0 means "no lease".
pub type LeaseId = i64;

/// A watcher identifier, unique within one store.
pub type WatchId = i64;

/// One version of a key.
#[derive(Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct KeyValue {
    #[cfg_attr(feature = "serde", serde(with = "crate::wire_bytes"))]
    pub key: Vec<u8>,
    #[cfg_attr(feature = "serde", serde(with = "crate::wire_bytes"))]
    pub value: Vec<u8>,
    /// Revision of the put that created the key (in its current life).
    pub create_revision: Revision,
    /// Revision of the last put or delete of the key.
    pub mod_revision: Revision,
    /// Number of puts since the key was created; a delete resets it to 0.
    pub version: i64,
    pub lease: LeaseId,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("value", &String::from_utf8_lossy(&self.value))
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .field("lease", &self.lease)
            .finish()
    }
}

/// A key range with etcd's `range_end` conventions:
/// - empty `range_end`: only `key`;
/// - `range_end == [0]`: every key `>= key` (and with `key == [0]` too, every key);
/// - otherwise the half-open interval `[key, range_end)`.
#[derive(Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct KeyRange {
    #[cfg_attr(feature = "serde", serde(with = "crate::wire_bytes"))]
    pub key: Vec<u8>,
    #[cfg_attr(feature = "serde", serde(with = "crate::wire_bytes"))]
    pub range_end: Vec<u8>,
}

impl KeyRange {
    /// Exactly one key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into(), range_end: Vec::new() }
    }

    /// Every key that starts with `prefix` (every key when `prefix` is empty).
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        if key.is_empty() {
            return Self::all();
        }
        let range_end = prefix_end(&key);
        Self { key, range_end }
    }

    /// Every key `>= key`.
    pub fn from_key(key: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into(), range_end: vec![0] }
    }

    /// Every key.
    pub fn all() -> Self {
        Self { key: vec![0], range_end: vec![0] }
    }

    /// Whether the range names a single key.
    pub fn is_single(&self) -> bool {
        self.range_end.is_empty()
    }

    /// The exclusive upper bound, or `None` when the range is unbounded above.
    pub fn upper(&self) -> Option<&[u8]> {
        if self.range_end == [0] { None } else { Some(&self.range_end) }
    }

    /// The inclusive lower bound (`[0]` as key with an unbounded end means "from the first key").
    pub fn lower(&self) -> &[u8] {
        if self.key == [0] && self.range_end == [0] { &[] } else { &self.key }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        if self.is_single() {
            return k == self.key.as_slice();
        }
        k >= self.lower() && self.upper().is_none_or(|end| k < end)
    }
}

impl fmt::Debug for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.key))?;
        if !self.range_end.is_empty() {
            write!(f, "..{:?}", String::from_utf8_lossy(&self.range_end))?;
        }
        Ok(())
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The end of the range holding every key with this prefix: the prefix with
/// its last byte below 0xff incremented and the rest cut; `[0]` (no end)
/// when every byte is 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RangeRequest {
    pub range: KeyRange,
    /// 0 = the current revision.
    pub revision: Revision,
    /// 0 = no limit.
    pub limit: i64,
    pub keys_only: bool,
    pub count_only: bool,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Filters on the returned keys; 0 = no bound.
    pub min_mod_revision: Revision,
    pub max_mod_revision: Revision,
    pub min_create_revision: Revision,
    pub max_create_revision: Revision,
}

impl RangeRequest {
    pub fn new(range: KeyRange) -> Self {
        Self { range, ..Self::default() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RangeResponse {
    /// The store's current revision when the range was served.
    pub revision: Revision,
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` allowed to return.
    pub more: bool,
    /// How many keys matched (before `limit`).
    pub count: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PutRequest {
    #[cfg_attr(feature = "serde", serde(with = "crate::wire_bytes"))]
    pub key: Vec<u8>,
    #[cfg_attr(feature = "serde", serde(with = "crate::wire_bytes"))]
    pub value: Vec<u8>,
    pub lease: LeaseId,
    pub prev_kv: bool,
    /// Keep the key's current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the key's current lease (the key must exist).
    pub ignore_lease: bool,
}

impl PutRequest {
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into(), value: value.into(), ..Self::default() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PutResponse {
    pub revision: Revision,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DeleteRequest {
    pub range: KeyRange,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DeleteResponse {
    pub revision: Revision,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// What a compare looks at, with the operand.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CompareTarget {
    Version(i64),
    CreateRevision(Revision),
    ModRevision(Revision),
    Value(#[cfg_attr(feature = "serde", serde(with = "crate::wire_bytes"))] Vec<u8>),
    Lease(LeaseId),
}

/// One guard of a transaction. A missing key compares as version 0,
/// create/mod revision 0 and lease 0; a value compare on a missing key fails.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Compare {
    pub range: KeyRange,
    pub result: CompareResult,
    pub target: CompareTarget,
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TxnOp {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRequest),
    Txn(TxnRequest),
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TxnOpResponse {
    Range(RangeResponse),
    Put(PutResponse),
    Delete(DeleteResponse),
    Txn(TxnResponse),
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TxnResponse {
    pub revision: Revision,
    pub succeeded: bool,
    pub responses: Vec<TxnOpResponse>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum EventKind {
    Put,
    Delete,
}

/// One change. For a delete, `kv` holds the key and the deleting revision
/// as `mod_revision`, everything else zero (as etcd sends it).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WatchRequest {
    pub range: KeyRange,
    /// First revision to report (inclusive); 0 = the next write.
    pub start_revision: Revision,
    pub prev_kv: bool,
    /// Send periodic progress messages while no events flow.
    pub progress_notify: bool,
    pub filter_puts: bool,
    pub filter_deletes: bool,
}

/// What a watcher receives, in revision order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum WatchMessage {
    /// The events of one revision that fall in the watched range.
    Events { revision: Revision, events: Vec<Event> },
    /// Every event up to `revision` has been delivered.
    Progress { revision: Revision },
    /// The watcher needed history older than the compaction; it is cancelled.
    Compacted { compact_revision: Revision },
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LeaseGrant {
    pub id: LeaseId,
    /// The TTL granted, which may be raised to the store's minimum.
    pub ttl: i64,
    pub revision: Revision,
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LeaseTimeToLive {
    pub id: LeaseId,
    /// Remaining seconds.
    pub ttl: i64,
    pub granted_ttl: i64,
    #[cfg_attr(feature = "serde", serde(with = "crate::wire_bytes::list"))]
    pub keys: Vec<Vec<u8>>,
}

/// What a member reports about itself.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StoreStatus {
    pub revision: Revision,
    pub compact_revision: Revision,
    /// Bytes of keys and values held, history included.
    pub size_bytes: i64,
    /// Number of state changes applied (writes, lease changes, compactions).
    pub applied_index: u64,
}
