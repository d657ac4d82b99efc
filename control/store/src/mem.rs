//! `MemStore`: the in-memory [`Store`], with full MVCC history until compaction.
//!
//! All state sits behind one mutex that is never held across an `.await`;
//! watchers are fed by `try_send` under it, and fall back to catch-up tasks
//! (see [`crate::watch`]) so that a slow reader never stalls a writer.
//!
//! With a disk ([`MemStore::durable`]) commits are grouped, as etcd's
//! backend batches them: a write is applied in memory under the lock and
//! queued; a disk thread makes everything queued since its last round
//! durable with one synced write ([`Durability::write_group`]), then
//! publishes those revisions in order (readers' revision, watchers) and
//! wakes their writers. Later writes build on queued ones (a queued commit
//! that fails to reach the disk stops the store), but nothing is
//! acknowledged, read or watched before it is durable: reads are served at
//! the durable revision from the MVCC history.
//!
//! A raft state machine ([`MemStore::replica`]) applies commits that its
//! log already made durable: each is staged with its disk as it is made and
//! shown at once, with no disk thread in between.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, Weak, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::durability::{Batch, Durability, Entry, Recovered};
use crate::error::{Result, StoreError};
use crate::lease::{Leases, MAX_LEASE_TTL};
use crate::mvcc::Index;
use crate::snapshot::{self, Image, LeaseImage};
use crate::store::{Store, Watcher};
use crate::types::{
    Compare, CompareResult, CompareTarget, DeleteRequest, DeleteResponse, Event, EventKind, KeyRange, KeyValue,
    LeaseGrant, LeaseId, LeaseTimeToLive, PutRequest, PutResponse, RangeRequest, RangeResponse, Revision, SortOrder,
    SortTarget, StoreStatus, TxnOp, TxnOpResponse, TxnRequest, TxnResponse, WatchId, WatchMessage, WatchRequest,
};
use crate::watch::{CatchUp, Hub};

#[derive(Clone, Debug)]
pub struct MemStoreConfig {
    /// Smallest TTL a lease gets, in seconds (etcd derives 2 s from its election timeout).
    pub min_lease_ttl: i64,
    /// Messages buffered per watcher before it falls back to catching up from history.
    pub watch_channel_capacity: usize,
    /// How often watchers that asked for progress notifications get one (etcd: 10 minutes).
    pub progress_notify_interval: Duration,
    /// How often lease deadlines are checked.
    pub lease_check_interval: Duration,
    /// Most operations in one branch of a transaction (etcd's `--max-txn-ops`).
    pub max_txn_ops: usize,
    /// Seeds lease IDs (etcd uses the member ID).
    pub id_seed: u64,
    /// Whether the store revokes expired leases itself. A replicated store
    /// turns this off: there only the leader decides that a lease expired,
    /// and proposes the revoke (see [`MemStore::expired_leases`]).
    pub expire_leases: bool,
}

impl Default for MemStoreConfig {
    fn default() -> Self {
        Self {
            min_lease_ttl: 2,
            watch_channel_capacity: 1024,
            progress_notify_interval: Duration::from_secs(600),
            lease_check_interval: Duration::from_millis(200),
            max_txn_ops: 128,
            id_seed: 0x5741_4747,
            expire_leases: true,
        }
    }
}

#[derive(Debug)]
struct State {
    index: Index,
    /// The revision readers and watchers see: the newest durable one.
    revision: Revision,
    /// The newest revision applied in memory, which writes build on. Ahead
    /// of `revision` only while commits wait for the disk.
    head: Revision,
    /// Commits applied in memory and waiting for the disk, in order.
    unsynced: Vec<Unsynced>,
    /// Sequence number of the last commit queued for the disk.
    queued: u64,
    compact_revision: Revision,
    leases: Leases,
    hub: Hub,
    applied_index: u64,
    durability: Option<Arc<dyn Durability>>,
    /// Whether `durability` stages commits that are durable already (a
    /// raft state machine's): each is handed to it as it commits, under
    /// the lock, and shown at once, with no disk thread.
    staged: bool,
    /// Set when a disk write failed: memory is then ahead of the disk, so
    /// the store refuses every request until it is restarted (and recovers
    /// from the disk), as etcd stops on a backend failure.
    failed: Option<String>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    config: MemStoreConfig,
    /// Wakes the disk thread (with a disk only).
    wake_syncer: Option<std_mpsc::Sender<()>>,
    /// How far the disk thread got.
    synced: Arc<watch::Sender<Synced>>,
}

/// A commit applied in memory, waiting for the disk.
#[derive(Debug)]
struct Unsynced {
    seq: u64,
    batch: Batch,
    /// What the watchers hear once it is durable (empty: no new revision).
    events: Vec<Event>,
}

/// The disk thread's progress: every commit up to `seq` is durable, or a
/// disk write failed.
#[derive(Clone, Debug, Default)]
struct Synced {
    seq: u64,
    failed: Option<String>,
}

/// The in-memory store. Cheap to clone; clones share the data.
#[derive(Clone, Debug)]
pub struct MemStore {
    inner: Arc<Inner>,
}

/// The writes of one revision while it is being applied.
#[derive(Debug)]
struct Pending {
    revision: Revision,
    sub: u32,
    events: Vec<Event>,
}

impl Pending {
    fn next_sub(&mut self) -> u32 {
        let s = self.sub;
        self.sub += 1;
        s
    }
}

impl MemStore {
    /// An empty store at revision 1. Must be called inside a tokio runtime:
    /// lease expiry and progress notifications run as background tasks,
    /// which end when the last clone of the store is dropped.
    pub fn new(config: MemStoreConfig) -> Result<Self> {
        Self::from_parts(config, Index::default(), 1, 0, Vec::new(), None)
    }

    /// A store that hands every commit to `durability` before acknowledging
    /// it, starting from what that disk held.
    pub fn durable(config: MemStoreConfig, durability: Arc<dyn Durability>, recovered: Recovered) -> Result<Self> {
        Self::durable_or_replica(config, durability, recovered, false)
    }

    fn durable_or_replica(
        config: MemStoreConfig,
        durability: Arc<dyn Durability>,
        recovered: Recovered,
        staged: bool,
    ) -> Result<Self> {
        let mut index = Index::default();
        for entry in &recovered.entries {
            index.replay(entry);
        }
        let leases = recovered
            .leases
            .iter()
            .map(|&(id, granted_ttl)| LeaseImage { id, granted_ttl, remaining_ttl: granted_ttl })
            .collect();
        let revision = recovered.revision.max(1);
        Self::from_parts(config, index, revision, recovered.compact_revision, leases, Some((durability, staged)))
    }

    /// A store whose commits are durable before they are made: a state
    /// machine applying a replicated log, which is the durable record (a
    /// crash replays the log after what `durability` last recorded). Each
    /// commit is handed to `durability.write` as it is made, under the
    /// store's lock, and is readable and watched at once; `write` only
    /// stages it (the owner writes the staged batches with the log position
    /// they reach, without fsync), so it must not block on the disk.
    pub fn replica(config: MemStoreConfig, durability: Arc<dyn Durability>, recovered: Recovered) -> Result<Self> {
        Self::durable_or_replica(config, durability, recovered, true)
    }

    /// A store holding the state of a snapshot made by [`Store::snapshot`].
    pub fn from_snapshot(config: MemStoreConfig, bytes: &[u8]) -> Result<Self> {
        let image = snapshot::decode(bytes)?;
        let mut index = Index::default();
        for kv in image.kvs {
            index.restore(kv);
        }
        Self::from_parts(config, index, image.revision, image.compact_revision, image.leases, None)
    }

    fn from_parts(
        config: MemStoreConfig,
        index: Index,
        revision: Revision,
        compact_revision: Revision,
        leases: Vec<LeaseImage>,
        durability: Option<(Arc<dyn Durability>, bool)>,
    ) -> Result<Self> {
        let handle = tokio::runtime::Handle::try_current().map_err(|e| StoreError::Internal {
            op: "starting the in-memory store",
            reason: format!("no tokio runtime: {e}"),
        })?;
        let now = Instant::now();
        // Only grouped commits need the disk thread.
        let staged = durability.as_ref().is_some_and(|(_, staged)| *staged);
        let durable = durability.is_some() && !staged;
        let durability = durability.map(|(d, _)| d);
        let mut lease_table = Leases::new(config.min_lease_ttl, config.id_seed);
        for l in &leases {
            lease_table.grant(l.id, l.granted_ttl, now);
        }
        for kv in index.all_live() {
            if kv.lease != 0 {
                lease_table.attach(kv.lease, &kv.key);
            }
        }
        let state = State {
            index,
            revision,
            head: revision,
            unsynced: Vec::new(),
            queued: 0,
            compact_revision,
            leases: lease_table,
            hub: Hub::new(config.watch_channel_capacity),
            applied_index: 0,
            durability,
            staged,
            failed: None,
        };
        let expire = config.expire_leases;
        let (wake_syncer, woken) = if durable {
            let (tx, rx) = std_mpsc::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let synced = Arc::new(watch::Sender::new(Synced::default()));
        let inner = Arc::new(Inner { state: Mutex::new(state), config, wake_syncer, synced });
        if let Some(woken) = woken {
            let weak = Arc::downgrade(&inner);
            let synced = Arc::clone(&inner.synced);
            let handle = handle.clone();
            std::thread::Builder::new()
                .name("store-sync".to_owned())
                .spawn(move || sync_loop(&weak, &woken, &synced, &handle))
                .map_err(|e| StoreError::Internal { op: "starting the store's disk thread", reason: e.to_string() })?;
        }
        if expire {
            handle.spawn(expire_leases(Arc::downgrade(&inner)));
        }
        handle.spawn(notify_progress(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }
}

impl MemStore {
    /// Leases whose deadline has passed and that are not revoked yet. For a
    /// store built with `expire_leases: false`, whose owner revokes them.
    pub fn expired_leases(&self) -> Result<Vec<LeaseId>> {
        Ok(self.inner.lock("listing expired leases")?.leases.expired(Instant::now()))
    }

    /// Renews every lease to its granted TTL from now: a new raft leader
    /// does this, as etcd's lessor does on promotion, so that a lease is not
    /// expired for keep-alives the old leader received.
    pub fn renew_all_leases(&self) -> Result<()> {
        let mut state = self.inner.lock("renewing every lease")?;
        let now = Instant::now();
        for id in state.leases.ids() {
            state.leases.renew(id, now);
        }
        Ok(())
    }
}

impl Inner {
    /// Waits until the commit with sequence number `seq` (and every one
    /// before it) is durable. Without a disk there is nothing to wait for.
    async fn durable(&self, op: &'static str, seq: u64) -> Result<()> {
        if seq == 0 || self.synced.borrow().seq >= seq {
            return Ok(());
        }
        let mut rx = self.synced.subscribe();
        let synced = rx
            .wait_for(|s| s.seq >= seq || s.failed.is_some())
            .await
            .map_err(|_| StoreError::Internal { op, reason: "the store's disk thread stopped".to_owned() })?;
        if synced.seq >= seq {
            return Ok(());
        }
        let reason = synced.failed.clone().unwrap_or_default();
        Err(StoreError::Internal { op, reason: format!("the store stopped after a failed disk write: {reason}") })
    }

    /// Tells the disk thread that a commit is queued.
    fn wake_syncer(&self) {
        if let Some(tx) = &self.wake_syncer {
            let _ = tx.send(());
        }
    }

    fn lock(&self, op: &'static str) -> Result<MutexGuard<'_, State>> {
        let state = self
            .state
            .lock()
            .map_err(|_| StoreError::Internal { op, reason: "the store's state lock is poisoned".to_owned() })?;
        if let Some(reason) = &state.failed {
            return Err(StoreError::Internal {
                op,
                reason: format!("the store stopped after a failed disk write: {reason}"),
            });
        }
        Ok(state)
    }
}

/// Revokes leases whose deadline passed, each as its own write.
async fn expire_leases(inner: Weak<Inner>) {
    loop {
        let Some(interval) = inner.upgrade().map(|i| i.config.lease_check_interval) else { return };
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        let Ok(mut state) = inner.lock("expiring leases") else { return };
        for id in state.leases.expired(Instant::now()) {
            debug!(lease = format_args!("{id:x}"), "lease expired");
            match state.revoke(id) {
                Ok(behind) => spawn_catch_ups(&inner, behind),
                Err(e) => {
                    warn!(error = %e, "expiring a lease failed");
                    return;
                }
            }
        }
        drop(state);
        inner.wake_syncer();
    }
}

async fn notify_progress(inner: Weak<Inner>) {
    loop {
        let Some(interval) = inner.upgrade().map(|i| i.config.progress_notify_interval) else { return };
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        let Ok(mut state) = inner.lock("notifying watch progress") else { return };
        let current = state.revision;
        state.hub.progress_tick(current);
    }
}

fn spawn_catch_ups(inner: &Arc<Inner>, ids: Vec<WatchId>) {
    for id in ids {
        tokio::spawn(catch_up(Arc::downgrade(inner), id));
    }
}

/// The disk thread: each round makes every commit queued since the last
/// one durable with one synced write, then publishes them in order. It
/// holds the store only while it works, so the store (and its database)
/// closes when its last user drops it.
fn sync_loop(
    inner: &Weak<Inner>,
    woken: &std_mpsc::Receiver<()>,
    synced: &watch::Sender<Synced>,
    handle: &tokio::runtime::Handle,
) {
    while woken.recv().is_ok() {
        while woken.try_recv().is_ok() {}
        let Some(store) = inner.upgrade() else { return };
        let (group, durability) = {
            let Ok(mut state) = store.state.lock() else { return };
            (std::mem::take(&mut state.unsynced), state.durability.clone())
        };
        let (Some(last), Some(durability)) = (group.last().map(|u| u.seq), durability) else { continue };
        let (batches, events): (Vec<Batch>, Vec<(Revision, Vec<Event>)>) = group
            .into_iter()
            .map(|u| {
                let r = u.batch.revision;
                (u.batch, (r, u.events))
            })
            .unzip();
        let result = durability.write_group(&batches);
        drop(durability);
        let failed = {
            let Ok(mut state) = store.state.lock() else { return };
            match result {
                Ok(()) => {
                    let mut behind = Vec::new();
                    for (revision, events) in &events {
                        behind.extend(state.publish(*revision, events));
                    }
                    drop(state);
                    let _guard = handle.enter();
                    spawn_catch_ups(&store, behind);
                    None
                }
                Err(e) => {
                    tracing::error!(error = %e, revision = batches[0].revision, "a disk write failed; the store stops serving");
                    state.failed = Some(e.to_string());
                    Some(e.to_string())
                }
            }
        };
        drop(store);
        match failed {
            None => {
                synced.send_modify(|s| s.seq = last);
            }
            Some(reason) => {
                synced.send_modify(|s| s.failed = Some(reason));
                return;
            }
        }
    }
}

/// Feeds an unsynced watcher from the history until it is synced.
async fn catch_up(inner: Weak<Inner>, id: WatchId) {
    loop {
        let step = {
            let Some(inner) = inner.upgrade() else { return };
            let Ok(mut state) = inner.lock("catching up a watcher") else { return };
            let State { hub, index, revision, compact_revision, .. } = &mut *state;
            hub.catch_up_step(id, index, *revision, *compact_revision)
        };
        match step {
            CatchUp::Gone | CatchUp::Synced => return,
            CatchUp::Compacted(tx, compact_revision) => {
                let _ = tx.send(WatchMessage::Compacted { compact_revision }).await;
                return;
            }
            CatchUp::Send(tx, messages) => {
                for message in messages {
                    if tx.send(message).await.is_err() {
                        if let Some(inner) = inner.upgrade()
                            && let Ok(mut state) = inner.lock("removing a closed watcher")
                        {
                            state.hub.remove(id);
                        }
                        return;
                    }
                }
            }
        }
    }
}

impl State {
    /// The revision a read at `requested` (0 = now) is served at, if still readable.
    /// Reads see `current`: the durable revision, or the head inside a transaction.
    fn read_revision(&self, op: &'static str, requested: Revision, current: Revision) -> Result<Revision> {
        if requested <= 0 {
            return Ok(current);
        }
        if requested > current {
            return Err(StoreError::FutureRevision { op, requested, current });
        }
        if requested < self.compact_revision {
            return Err(StoreError::Compacted { op, requested, compact_revision: self.compact_revision });
        }
        Ok(requested)
    }

    /// Serves a range; a request without a revision reads at `now` (which,
    /// inside a transaction, includes the transaction's own writes).
    fn range(&self, req: &RangeRequest, now: Revision) -> Result<RangeResponse> {
        if req.range.key.is_empty() {
            return Err(StoreError::EmptyKey { op: "ranging" });
        }
        let at = if req.revision > 0 { self.read_revision("ranging", req.revision, now)? } else { now };
        let keep = |kv: &KeyValue| {
            (req.min_mod_revision <= 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_mod_revision <= 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_create_revision <= 0 || kv.create_revision >= req.min_create_revision)
                && (req.max_create_revision <= 0 || kv.create_revision <= req.max_create_revision)
        };
        let (order, target) = match (req.sort_order, req.sort_target) {
            (SortOrder::None, SortTarget::Key) => (SortOrder::Ascend, SortTarget::Key),
            (SortOrder::None, t) => (SortOrder::Ascend, t),
            other => other,
        };
        let in_key_order = target == SortTarget::Key && order == SortOrder::Ascend;
        let limit = usize::try_from(req.limit).unwrap_or(0);
        let mut count = 0i64;
        let mut matched = 0usize;
        let mut kvs = Vec::new();
        self.index.range_at(&req.range, at, |kv| {
            count += 1;
            if !keep(&kv) {
                return true;
            }
            matched += 1;
            // In key order, only the first `limit` are needed; the rest are counted.
            if !req.count_only && (!in_key_order || limit == 0 || kvs.len() < limit) {
                kvs.push(kv);
            }
            true
        });
        if !in_key_order {
            sort(&mut kvs, target, order);
        }
        let more = limit > 0 && matched > limit;
        if limit > 0 {
            kvs.truncate(limit);
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse { revision: now, kvs, more, count })
    }

    fn put(&mut self, req: &PutRequest, pending: &mut Pending) -> PutResponse {
        let current = self.index.get(&req.key, pending.revision);
        let value = match (&current, req.ignore_value) {
            (Some(kv), true) => kv.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&current, req.ignore_lease) {
            (Some(kv), true) => kv.lease,
            _ => req.lease,
        };
        let sub = pending.next_sub();
        let (kv, prev) = self.index.put(&req.key, value, lease, pending.revision, sub);
        if let Some(p) = &prev
            && p.lease != 0
            && p.lease != lease
        {
            self.leases.detach(p.lease, &req.key);
        }
        if lease != 0 {
            self.leases.attach(lease, &req.key);
        }
        pending.events.push(Event { kind: EventKind::Put, kv, prev_kv: prev.clone() });
        PutResponse { revision: pending.revision, prev_kv: if req.prev_kv { prev } else { None } }
    }

    fn delete(&mut self, range: &KeyRange, prev_kv: bool, pending: &mut Pending) -> DeleteResponse {
        let victims = self.index.live_keys(range);
        let mut prev_kvs = Vec::new();
        for victim in &victims {
            let sub = pending.next_sub();
            if let Some(prev) = self.index.delete(&victim.key, pending.revision, sub) {
                if prev.lease != 0 {
                    self.leases.detach(prev.lease, &prev.key);
                }
                let tombstone =
                    KeyValue { key: prev.key.clone(), mod_revision: pending.revision, ..KeyValue::default() };
                pending.events.push(Event { kind: EventKind::Delete, kv: tombstone, prev_kv: Some(prev.clone()) });
                if prev_kv {
                    prev_kvs.push(prev);
                }
            }
        }
        let deleted = i64::try_from(victims.len()).unwrap_or(i64::MAX);
        DeleteResponse { revision: pending.revision, deleted, prev_kvs }
    }

    fn compare(&self, c: &Compare) -> bool {
        let mut kvs = Vec::new();
        self.index.range_at(&c.range, self.head, |kv| {
            kvs.push(kv);
            true
        });
        if kvs.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                // A missing key has no value to compare, not an empty one.
                return false;
            }
            kvs.push(KeyValue::default());
        }
        kvs.iter().all(|kv| {
            let ordering = match &c.target {
                CompareTarget::Version(v) => kv.version.cmp(v),
                CompareTarget::CreateRevision(r) => kv.create_revision.cmp(r),
                CompareTarget::ModRevision(r) => kv.mod_revision.cmp(r),
                CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
                CompareTarget::Lease(l) => kv.lease.cmp(l),
            };
            match c.result {
                CompareResult::Equal => ordering.is_eq(),
                CompareResult::Greater => ordering.is_gt(),
                CompareResult::Less => ordering.is_lt(),
                CompareResult::NotEqual => ordering.is_ne(),
            }
        })
    }

    /// Checks every operation a transaction will run, before it writes
    /// anything, so that a transaction either applies whole or fails whole.
    fn validate(
        &self,
        ops: &[TxnOp],
        max_ops: usize,
        puts: &mut HashSet<Vec<u8>>,
        deletes: &mut Vec<KeyRange>,
    ) -> Result<()> {
        if ops.len() > max_ops {
            return Err(StoreError::TooManyOps { count: ops.len(), limit: max_ops });
        }
        for op in ops {
            match op {
                TxnOp::Range(r) => {
                    if r.range.key.is_empty() {
                        return Err(StoreError::EmptyKey { op: "ranging" });
                    }
                    if r.revision > 0 {
                        self.read_revision("ranging", r.revision, self.head)?;
                    }
                }
                TxnOp::Put(p) => {
                    self.validate_put(p)?;
                    if !puts.insert(p.key.clone()) {
                        return Err(StoreError::DuplicateKey { key: String::from_utf8_lossy(&p.key).into_owned() });
                    }
                }
                TxnOp::Delete(d) => {
                    if d.range.key.is_empty() {
                        return Err(StoreError::EmptyKey { op: "deleting" });
                    }
                    deletes.push(d.range.clone());
                }
                TxnOp::Txn(t) => {
                    let branch = if t.compare.iter().all(|c| self.compare(c)) { &t.success } else { &t.failure };
                    self.validate(branch, max_ops, puts, deletes)?;
                }
            }
        }
        if let Some(key) = puts.iter().find(|k| deletes.iter().any(|d| d.contains(k))) {
            return Err(StoreError::DuplicateKey { key: String::from_utf8_lossy(key).into_owned() });
        }
        Ok(())
    }

    fn validate_put(&self, p: &PutRequest) -> Result<()> {
        if p.key.is_empty() {
            return Err(StoreError::EmptyKey { op: "putting" });
        }
        if (p.ignore_value || p.ignore_lease) && self.index.get(&p.key, self.head).is_none() {
            return Err(StoreError::KeyNotFound { key: String::from_utf8_lossy(&p.key).into_owned() });
        }
        if p.lease != 0 && !p.ignore_lease && !self.leases.contains(p.lease) {
            return Err(StoreError::LeaseNotFound { op: "putting a key", id: p.lease });
        }
        Ok(())
    }

    /// Runs already validated operations.
    fn apply(&mut self, ops: &[TxnOp], pending: &mut Pending) -> Result<Vec<TxnOpResponse>> {
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                TxnOp::Range(r) => {
                    // Reads inside the transaction see its earlier writes.
                    let mut resp = self.range(r, pending.revision)?;
                    resp.revision = pending.revision;
                    TxnOpResponse::Range(resp)
                }
                TxnOp::Put(p) => TxnOpResponse::Put(self.put(p, pending)),
                TxnOp::Delete(d) => TxnOpResponse::Delete(self.delete(&d.range, d.prev_kv, pending)),
                TxnOp::Txn(t) => {
                    let succeeded = t.compare.iter().all(|c| self.compare(c));
                    let branch = if succeeded { &t.success } else { &t.failure };
                    let responses = self.apply(branch, pending)?;
                    TxnOpResponse::Txn(TxnResponse { revision: pending.revision, succeeded, responses })
                }
            });
        }
        Ok(responses)
    }

    /// Makes the pending writes the new revision and tells the watchers.
    /// Returns the watchers that need a catch-up task.
    /// Makes the pending writes the new head revision and hands them to the
    /// disk. Returns the head revision and the watchers that need a catch-up task.
    fn commit(&mut self, pending: Pending, revoked: Option<LeaseId>) -> (Revision, Vec<WatchId>) {
        if pending.events.is_empty() && revoked.is_none() {
            return (self.head, Vec::new());
        }
        let revision = if pending.events.is_empty() { self.head } else { pending.revision };
        let entries = pending
            .events
            .iter()
            .zip(0u32..)
            .map(|(e, sub)| Entry { revision: pending.revision, sub, kind: e.kind, kv: e.kv.clone() })
            .collect();
        self.head = revision;
        let behind = self.persist(
            Batch { revision, entries, revoked: revoked.into_iter().collect(), ..Batch::default() },
            pending.events,
        );
        (revision, behind)
    }

    /// Commits a batch: without a disk it is published at once; with one it
    /// is queued for the disk thread, which publishes it once durable (the
    /// caller then waits for `self.queued`). Returns the watchers that need
    /// a catch-up task.
    fn persist(&mut self, batch: Batch, events: Vec<Event>) -> Vec<WatchId> {
        self.applied_index += 1;
        let Some(durability) = &self.durability else { return self.publish(batch.revision, &events) };
        if self.staged {
            if let Err(e) = durability.write(&batch) {
                // The caller's `settle` reports it; the owner's next write of
                // the staged batches fails too, so the log replays this one.
                tracing::error!(error = %e, revision = batch.revision, "staging a commit failed; the store stops serving");
                self.failed = Some(e.to_string());
            }
            return self.publish(batch.revision, &events);
        }
        self.queued += 1;
        self.unsynced.push(Unsynced { seq: self.queued, batch, events });
        Vec::new()
    }

    /// Shows a durable revision to readers and watchers.
    fn publish(&mut self, revision: Revision, events: &[Event]) -> Vec<WatchId> {
        if events.is_empty() {
            return Vec::new();
        }
        self.revision = revision;
        self.hub.notify(revision, events)
    }

    fn pending(&self) -> Pending {
        Pending { revision: self.head + 1, sub: 0, events: Vec::new() }
    }

    fn txn(&mut self, req: &TxnRequest, max_ops: usize) -> Result<(TxnResponse, Vec<WatchId>)> {
        let succeeded = req.compare.iter().all(|c| self.compare(c));
        let branch = if succeeded { &req.success } else { &req.failure };
        let other = if succeeded { &req.failure } else { &req.success };
        if other.len() > max_ops {
            return Err(StoreError::TooManyOps { count: other.len(), limit: max_ops });
        }
        self.validate(branch, max_ops, &mut HashSet::new(), &mut Vec::new())?;
        let mut pending = self.pending();
        let mut responses = self.apply(branch, &mut pending)?;
        let (revision, behind) = self.commit(pending, None);
        fix_revisions(&mut responses, revision);
        Ok((TxnResponse { revision, succeeded, responses }, behind))
    }

    /// Removes a lease and deletes its keys in one revision.
    fn revoke(&mut self, id: LeaseId) -> Result<Vec<WatchId>> {
        let Some(keys) = self.leases.remove(id) else { return Ok(Vec::new()) };
        let mut pending = self.pending();
        for key in keys {
            self.delete(&KeyRange::key(key), false, &mut pending);
        }
        Ok(self.commit(pending, Some(id)).1)
    }
}

/// Read-only transactions report the current revision, not the unused next one.
fn fix_revisions(responses: &mut [TxnOpResponse], revision: Revision) {
    for r in responses {
        match r {
            TxnOpResponse::Range(x) => x.revision = revision,
            TxnOpResponse::Put(x) => x.revision = revision,
            TxnOpResponse::Delete(x) => x.revision = revision,
            TxnOpResponse::Txn(x) => {
                x.revision = revision;
                fix_revisions(&mut x.responses, revision);
            }
        }
    }
}

fn sort(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    match target {
        SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
        SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
        SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
        SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
        SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
    if order == SortOrder::Descend {
        kvs.reverse();
    }
}

impl MemStore {
    /// Starts the catch-ups a commit needs, wakes the disk thread, and
    /// waits until commit `seq` is durable.
    async fn settle(&self, op: &'static str, behind: Vec<WatchId>, seq: u64) -> Result<()> {
        spawn_catch_ups(&self.inner, behind);
        if seq == 0 {
            // Nothing waits for the disk thread; a staged commit may have failed.
            return self.inner.lock(op).map(drop);
        }
        self.inner.wake_syncer();
        self.inner.durable(op, seq).await
    }

    fn compact_now(&self, revision: Revision) -> Result<(Revision, u64)> {
        let mut state = self.inner.lock("compacting")?;
        if revision > state.revision {
            return Err(StoreError::FutureRevision { op: "compacting", requested: revision, current: state.revision });
        }
        if revision <= state.compact_revision {
            return Err(StoreError::Compacted {
                op: "compacting",
                requested: revision,
                compact_revision: state.compact_revision,
            });
        }
        let dropped = state.index.compact(revision);
        let head = state.head;
        state.persist(Batch { revision: head, compacted: Some((revision, dropped)), ..Batch::default() }, Vec::new());
        state.compact_revision = revision;
        debug!(revision, "compacted");
        Ok((state.revision, state.queued))
    }

    fn watch_now(&self, req: WatchRequest) -> Result<Watcher> {
        let (id, rx, needs_catch_up) = {
            let mut state = self.inner.lock("starting a watch")?;
            let current = state.revision;
            state.hub.add(req, current)
        };
        if needs_catch_up {
            spawn_catch_ups(&self.inner, vec![id]);
        }
        let inner = Arc::downgrade(&self.inner);
        let cancel = Box::new(move || {
            if let Some(inner) = inner.upgrade() {
                match inner.lock("cancelling a watch") {
                    Ok(mut state) => state.hub.remove(id),
                    Err(e) => warn!(error = %e, watch = id, "could not cancel the watch"),
                }
            }
        });
        Ok(Watcher::new(id, rx, cancel))
    }

    fn lease_grant_now(&self, id: LeaseId, ttl: i64) -> Result<(LeaseGrant, u64)> {
        if ttl > MAX_LEASE_TTL {
            return Err(StoreError::LeaseTtlTooLarge { ttl, max: MAX_LEASE_TTL });
        }
        let mut state = self.inner.lock("granting a lease")?;
        let id = match id {
            0 => state.leases.fresh_id(),
            id if state.leases.contains(id) => return Err(StoreError::LeaseExists { id }),
            id => id,
        };
        let ttl = state.leases.grant(id, ttl, Instant::now());
        let head = state.head;
        state.persist(Batch { revision: head, granted: vec![(id, ttl)], ..Batch::default() }, Vec::new());
        Ok((LeaseGrant { id, ttl, revision: head }, state.queued))
    }
}

#[async_trait]
impl Store for MemStore {
    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.inner.lock("reading the revision")?.revision)
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let state = self.inner.lock("ranging")?;
        let now = state.revision;
        state.range(&req, now)
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        let (resp, behind, seq) = {
            let mut state = self.inner.lock("putting")?;
            state.validate_put(&req)?;
            let mut pending = state.pending();
            let resp = state.put(&req, &mut pending);
            let (_, behind) = state.commit(pending, None);
            (resp, behind, state.queued)
        };
        self.settle("putting", behind, seq).await?;
        Ok(resp)
    }

    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        if req.range.key.is_empty() {
            return Err(StoreError::EmptyKey { op: "deleting" });
        }
        let (mut resp, revision, behind, seq) = {
            let mut state = self.inner.lock("deleting")?;
            let mut pending = state.pending();
            let resp = state.delete(&req.range, req.prev_kv, &mut pending);
            let (revision, behind) = state.commit(pending, None);
            (resp, revision, behind, state.queued)
        };
        resp.revision = revision;
        self.settle("deleting", behind, seq).await?;
        Ok(resp)
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        // A read-only transaction still waits for the commits it read.
        let (resp, behind, seq) = {
            let mut state = self.inner.lock("running a transaction")?;
            let (resp, behind) = state.txn(&req, self.inner.config.max_txn_ops)?;
            (resp, behind, state.queued)
        };
        self.settle("running a transaction", behind, seq).await?;
        Ok(resp)
    }

    async fn compact(&self, revision: Revision) -> Result<Revision> {
        let (current, seq) = self.compact_now(revision)?;
        self.settle("compacting", Vec::new(), seq).await?;
        Ok(current)
    }

    async fn watch(&self, req: WatchRequest) -> Result<Watcher> {
        self.watch_now(req)
    }

    async fn request_progress(&self, id: WatchId) -> Result<()> {
        let behind = {
            let mut state = self.inner.lock("requesting watch progress")?;
            if !state.hub.contains(id) {
                return Ok(());
            }
            let current = state.revision;
            state.hub.request_progress(id, current)
        };
        if behind {
            spawn_catch_ups(&self.inner, vec![id]);
        }
        Ok(())
    }

    async fn lease_grant(&self, id: LeaseId, ttl: i64) -> Result<LeaseGrant> {
        let (grant, seq) = self.lease_grant_now(id, ttl)?;
        self.settle("granting a lease", Vec::new(), seq).await?;
        Ok(grant)
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        let (revision, behind, seq) = {
            let mut state = self.inner.lock("revoking a lease")?;
            if !state.leases.contains(id) {
                return Err(StoreError::LeaseNotFound { op: "revoking a lease", id });
            }
            let behind = state.revoke(id)?;
            (state.head, behind, state.queued)
        };
        self.settle("revoking a lease", behind, seq).await?;
        Ok(revision)
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        let mut state = self.inner.lock("renewing a lease")?;
        state.leases.renew(id, Instant::now()).ok_or(StoreError::LeaseNotFound { op: "renewing a lease", id })
    }

    async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseTimeToLive> {
        let state = self.inner.lock("reading a lease's time to live")?;
        let (ttl, granted_ttl, attached) = state
            .leases
            .time_to_live(id, Instant::now())
            .ok_or(StoreError::LeaseNotFound { op: "reading a lease's time to live", id })?;
        Ok(LeaseTimeToLive { id, ttl, granted_ttl, keys: if keys { attached } else { Vec::new() } })
    }

    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        Ok(self.inner.lock("listing leases")?.leases.ids())
    }

    async fn status(&self) -> Result<StoreStatus> {
        let state = self.inner.lock("reading the status")?;
        Ok(StoreStatus {
            revision: state.revision,
            compact_revision: state.compact_revision,
            size_bytes: state.index.size_bytes(),
            applied_index: state.applied_index,
        })
    }

    async fn snapshot(&self) -> Result<Vec<u8>> {
        let image = {
            let state = self.inner.lock("taking a snapshot")?;
            Image {
                revision: state.revision,
                compact_revision: state.revision,
                kvs: state.index.all_live_at(state.revision),
                leases: state
                    .leases
                    .export(Instant::now())
                    .into_iter()
                    .map(|(id, granted_ttl, remaining_ttl)| LeaseImage { id, granted_ttl, remaining_ttl })
                    .collect(),
            }
        };
        Ok(snapshot::encode(&image))
    }
}
