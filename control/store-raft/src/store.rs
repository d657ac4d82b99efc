//! [`RaftStore`]: one member of a replicated store, serving the [`Store`]
//! trait.
//!
//! - Writes are proposed as [`Command`]s; the call returns once the entry is
//!   committed (durable on a quorum) and applied here. A follower forwards
//!   the write to the leader.
//! - Reads are linearizable through a read index: the leader confirms its
//!   leadership with a quorum of heartbeats and waits until it has applied
//!   up to its commit index (openraft's `ensure_linearizable`); a follower
//!   gets that index from the leader and waits until it has applied it.
//! - Watches are served by this member's state machine as it applies.
//! - Leases: only the leader tracks deadlines (keep-alives go to it, as in
//!   etcd) and proposes a revoke when one expires; a new leader renews every
//!   lease first, so keep-alives sent to the old one are not lost.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use openraft::error::ClientWriteError;
use openraft::{ChangeMembers, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use waggle_store::{
    DeleteRequest, DeleteResponse, LeaseGrant, LeaseId, LeaseTimeToLive, MemStore, MemStoreConfig, PutRequest,
    PutResponse, RangeRequest, RangeResponse, Revision, Store, StoreError, StoreStatus, TxnRequest, TxnResponse,
    WatchId, WatchRequest, Watcher,
};

use crate::command::{Command, Reply, WireError};
use crate::disk::Disk;
use crate::error::RaftStoreError;
use crate::log_store::RocksLogStore;
use crate::network::{ForwardHandler, ForwardReply, Forwarded, Forwarder, PeerNetwork, PeerService};
use crate::removal::{MEMBER_REMOVED, Removal};
use crate::state_machine::{SharedMem, StateMachine};
use crate::{Member, NodeId, Raft};

/// How long a follower waits to apply up to a read index.
const READ_INDEX_WAIT: Duration = Duration::from_secs(10);

/// Raft entries proposed and not yet applied, at most; proposals arriving
/// meanwhile are packed into the next entry ([`Command::Batch`]).
const MAX_ENTRIES_IN_FLIGHT: usize = 4;

/// Most proposals packed into one entry.
const MAX_BATCH: usize = 512;

/// A batch takes no more proposals once it holds this many bytes, so that
/// large values do not make entries too large to replicate in one message.
const MAX_BATCH_BYTES: u64 = 1024 * 1024;

type Proposal = (Command, oneshot::Sender<Result<Reply, WireError>>);

/// Everything one member needs to start.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub id: NodeId,
    /// This member as the cluster sees it; its `peer_url` must reach the peer listener.
    pub member: Member,
    pub data_dir: PathBuf,
    /// The state machine's settings; lease expiry is always left to the leader.
    pub store: MemStoreConfig,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// A snapshot is built after this many applied entries since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind the latest snapshot (for followers slightly behind).
    pub keep_entries_after_snapshot: u64,
    /// How long a write may wait to commit, or a read to confirm leadership,
    /// before the request fails (a member cut off from the quorum answers
    /// errors instead of hanging). A timed-out write may still commit later,
    /// as with etcd's "request timed out".
    pub request_timeout: Duration,
}

impl RaftConfig {
    /// Defaults close to etcd's (100 ms heartbeat, 1 s election timeout).
    pub fn new(id: NodeId, member: Member, data_dir: PathBuf) -> Self {
        Self {
            id,
            member,
            data_dir,
            store: MemStoreConfig::default(),
            heartbeat_interval: Duration::from_millis(100),
            // openraft 0.9 makes followers refuse votes for `election_timeout_max`
            // after the last heartbeat (its leader lease), so a narrow range
            // elects faster than a wide one.
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(1200),
            snapshot_after_entries: 10_000,
            keep_entries_after_snapshot: 1_000,
            request_timeout: Duration::from_secs(5),
        }
    }

    fn openraft(&self) -> Result<openraft::Config, RaftStoreError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: "waggle-store".to_owned(),
            heartbeat_interval: ms(self.heartbeat_interval),
            election_timeout_min: ms(self.election_timeout_min),
            election_timeout_max: ms(self.election_timeout_max),
            install_snapshot_timeout: 5_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_after_entries),
            max_in_snapshot_log_to_keep: self.keep_entries_after_snapshot,
            // openraft purges only once this many entries are purgeable (256
            // by default); keep it proportionate to a small snapshot interval.
            purge_batch_size: (self.snapshot_after_entries / 4).clamp(1, 256),
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| RaftStoreError::Start { id: self.id, reason: format!("raft settings: {e}") })
    }
}

/// One member of the replicated store.
#[derive(Debug)]
pub struct RaftStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft,
    mem: SharedMem,
    pub(crate) forwarder: Forwarder,
    lease_seq: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    lease_check_interval: Duration,
    request_timeout: Duration,
    proposals: mpsc::UnboundedSender<Proposal>,
    removal: Arc<Removal>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftStore").field("id", &self.id).finish_non_exhaustive()
    }
}

pub(crate) fn unavailable(op: &'static str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Internal { op, reason: reason.to_string() }
}

pub(crate) fn unexpected(op: &'static str, reply: impl std::fmt::Debug) -> StoreError {
    StoreError::Internal { op, reason: format!("unexpected reply {reply:?}") }
}

impl RaftStore {
    /// Starts a member serving its peers on `peer_listener` (whose address
    /// `config.member.peer_url` names). A new member waits to be initialized
    /// ([`RaftStore::initialize`]) or added by the leader.
    pub async fn start(config: RaftConfig, peer_listener: TcpListener) -> Result<Self, RaftStoreError> {
        let raft_config = Arc::new(config.openraft()?);
        let disk = Disk::open(&config.data_dir)?;
        let log = RocksLogStore::new(Arc::clone(&disk))
            .map_err(|e| RaftStoreError::Start { id: config.id, reason: format!("starting the log syncer: {e}") })?;
        let store_config = MemStoreConfig { expire_leases: false, ..config.store.clone() };
        let lease_check_interval = store_config.lease_check_interval;
        let removal = Arc::new(Removal::new(config.id));
        let sm = StateMachine::open(disk, store_config, Arc::clone(&removal))?;
        let mem = sm.shared();
        let raft = Raft::new(config.id, raft_config, PeerNetwork::new(Arc::clone(&removal)), log, sm)
            .await
            .map_err(|e| RaftStoreError::Start { id: config.id, reason: e.to_string() })?;
        let (proposals, queue) = mpsc::unbounded_channel();
        let proposer = tokio::spawn(propose_batches(raft.clone(), queue));
        let inner = Arc::new(Inner {
            proposals,
            id: config.id,
            raft: raft.clone(),
            mem,
            forwarder: Forwarder::default(),
            lease_seq: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
            lease_check_interval,
            request_timeout: config.request_timeout,
            removal: Arc::clone(&removal),
        });
        let service = PeerService::new(raft, Arc::clone(&inner)).with_removal(Arc::clone(&removal)).into_server();
        let server = tokio::spawn(async move {
            // With a shutdown signal, tonic closes each open connection when
            // this task ends (its signal sender drops), so that peers
            // reconnect to whatever serves the port next instead of talking
            // to this stopped member; without one, connections outlive it.
            let serve = tonic::transport::Server::builder()
                .add_service(service)
                // Without TCP_NODELAY an append reply waits behind the
                // leader's delayed ACK (40 ms) under Nagle.
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(peer_listener).with_nodelay(Some(true)),
                    std::future::pending(),
                );
            if let Err(e) = serve.await {
                warn!(error = %e, "the peer server stopped");
            }
        });
        let leases = tokio::spawn(drive_leases(Arc::downgrade(&inner)));
        let (removal, stopped) = (Arc::clone(&inner.removal), inner.raft.clone());
        let stop_when_removed = tokio::spawn(async move {
            // A removed member stops campaigning, as etcd's stops.
            removal.wait_me_removed().await;
            if let Err(e) = stopped.shutdown().await {
                warn!(error = %e, "raft did not shut down cleanly");
            }
        });
        if let Ok(mut tasks) = inner.tasks.lock() {
            tasks.extend([server, leases, proposer, stop_when_removed]);
        }
        info!(id = config.id, member = %config.member, data_dir = %config.data_dir.display(), "raft member started");
        Ok(Self { inner })
    }

    /// Makes the first membership of a new cluster. Call it on one member
    /// only; a member that already has a log answers an error, which a
    /// restart may ignore.
    ///
    /// Returns `false` when this member had already joined a cluster (it holds
    /// a log, or it voted for a peer that bootstrapped first): members of a new
    /// cluster all start bootstrapping at once, and one of them wins.
    pub async fn initialize(&self, members: BTreeMap<NodeId, Member>) -> Result<bool, RaftStoreError> {
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.api_error(), Some(openraft::error::InitializeError::NotAllowed(_))) => {
                info!(reason = %e, "a peer bootstrapped the cluster first");
                Ok(false)
            }
            Err(e) => Err(RaftStoreError::Raft { op: "initializing the cluster", reason: e.to_string() }),
        }
    }

    /// Adds a member: it first catches up as a learner, then becomes a voter.
    /// Must be called on the leader.
    pub async fn add_member(&self, id: NodeId, member: Member) -> Result<(), RaftStoreError> {
        let raft = &self.inner.raft;
        raft.add_learner(id, member, true)
            .await
            .map_err(|e| RaftStoreError::Raft { op: "adding a learner", reason: e.to_string() })?;
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| RaftStoreError::Raft { op: "promoting a learner to voter", reason: e.to_string() })?;
        info!(id, "member added");
        Ok(())
    }

    /// Removes a member from the voters (and the cluster). Must be called on the leader.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), RaftStoreError> {
        self.inner
            .raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(|e| RaftStoreError::Raft { op: "removing a member", reason: e.to_string() })?;
        info!(id, "member removed");
        Ok(())
    }

    /// The members of the current membership (voters and learners).
    pub fn members(&self) -> Vec<(NodeId, Member)> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        m.membership_config.nodes().map(|(id, node)| (*id, node.clone())).collect()
    }

    /// The voters of the current membership.
    pub fn voters(&self) -> Vec<NodeId> {
        self.inner.raft.metrics().borrow().membership_config.membership().voter_ids().collect()
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The leader this member knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// Whether this member was removed from the cluster; it then refuses
    /// every request (etcd's member stops).
    pub fn is_removed(&self) -> bool {
        self.inner.removal.me_removed()
    }

    /// Resolves once this member learns it was removed from the cluster.
    pub async fn removed(&self) {
        self.inner.removal.wait_me_removed().await;
    }

    /// The openraft handle, for metrics and waiting on conditions.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Stops the member: its peer server, its lease driver and raft. The
    /// data dir can then be opened again.
    pub async fn shutdown(&self) {
        self.inner.stop_tasks();
        if let Err(e) = self.inner.raft.shutdown().await {
            warn!(error = %e, "raft did not shut down cleanly");
        }
    }
}

impl Drop for RaftStore {
    fn drop(&mut self) {
        self.inner.stop_tasks();
        let raft = self.inner.raft.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }
}

impl Inner {
    fn stop_tasks(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }

    /// The leader, if known, unless it is this member.
    pub(crate) fn remote_leader(&self) -> Result<Option<Member>, StoreError> {
        if self.removal.me_removed() {
            return Err(StoreError::Internal { op: "serving a request", reason: MEMBER_REMOVED.to_owned() });
        }
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        match m.current_leader {
            // Before anything is forwarded or proposed: etcd's retryable
            // `etcdserver: no leader`, and the request was certainly not applied.
            None => Err(StoreError::Unavailable { op: "finding the leader", reason: "no leader".to_owned() }),
            Some(id) if id == self.id => Ok(None),
            Some(id) => m
                .membership_config
                .membership()
                .get_node(&id)
                .cloned()
                .map(Some)
                .ok_or_else(|| unavailable("finding the leader", format!("leader {id} is not in the membership"))),
        }
    }

    /// Proposes a command on the leader and waits until it is applied here.
    async fn propose(&self, command: Command) -> Result<Reply, WireError> {
        let stopped = || WireError::Internal {
            op: "proposing a write".to_owned(),
            reason: "this member is shutting down".to_owned(),
        };
        let (tx, rx) = oneshot::channel();
        self.proposals.send((command, tx)).map_err(|_| stopped())?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Err(_) => Err(WireError::Internal {
                op: "proposing a write".to_owned(),
                reason: format!("not committed within {:?} (no quorum reachable?)", self.request_timeout),
            }),
            Ok(Err(_)) => Err(stopped()),
            Ok(Ok(applied)) => applied,
        }
    }

    /// Writes through the leader, wherever it is.
    async fn write(&self, command: Command) -> Result<Reply, StoreError> {
        let reply = match self.remote_leader()? {
            None => self.propose(command).await,
            Some(leader) => match self.forwarder.forward(&leader, &Forwarded::Write(command)).await? {
                ForwardReply::Written(applied) => applied,
                other => return Err(unexpected("forwarding a write", other)),
            },
        };
        reply.map_err(StoreError::from)
    }

    /// Confirms leadership and returns the index a read must see.
    async fn leader_read_index(&self) -> Result<u64, WireError> {
        let op = "confirming leadership for a read";
        let read_log_id = tokio::time::timeout(self.request_timeout, self.raft.ensure_linearizable())
            .await
            .map_err(|_| WireError::Internal {
                op: op.to_owned(),
                reason: format!("no quorum confirmed within {:?}", self.request_timeout),
            })?
            .map_err(|e| WireError::Internal { op: op.to_owned(), reason: e.to_string() })?;
        Ok(read_log_id.map(|l| l.index).unwrap_or(0))
    }

    /// Waits until a read here is linearizable, then hands out the state machine.
    async fn read(&self) -> Result<MemStore, StoreError> {
        match self.remote_leader()? {
            None => {
                self.leader_read_index().await?;
            }
            Some(leader) => {
                let index = match self.forwarder.forward(&leader, &Forwarded::ReadIndex).await? {
                    ForwardReply::ReadIndex(i) => i,
                    other => return Err(unexpected("asking the leader for a read index", other)),
                };
                self.raft
                    .wait(Some(READ_INDEX_WAIT))
                    .applied_index_at_least(Some(index), "read index")
                    .await
                    .map_err(|e| unavailable("waiting to apply up to the read index", e))?;
            }
        }
        Ok(self.mem.get())
    }

    /// A lease ID no other member or earlier run is likely to pick; a
    /// collision fails the grant with `LeaseExists` and is retried.
    fn fresh_lease_id(&self) -> LeaseId {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let seq = self.lease_seq.fetch_add(1, Ordering::Relaxed);
        let mixed = (u64::try_from(nanos & u128::from(u64::MAX)).unwrap_or(0) ^ self.id.rotate_left(40))
            .wrapping_add(seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        i64::try_from(mixed & 0x7fff_ffff_ffff_ffff).unwrap_or(1).max(1)
    }
}

impl ForwardHandler for Inner {
    async fn handle(&self, req: Forwarded) -> Result<ForwardReply, WireError> {
        match req {
            Forwarded::Write(command) => Ok(ForwardReply::Written(self.propose(command).await)),
            Forwarded::KeepAlive(id) => {
                self.leader_read_index().await?;
                self.mem.get().lease_keep_alive(id).await.map(ForwardReply::KeptAlive).map_err(WireError::from)
            }
            Forwarded::ReadIndex => self.leader_read_index().await.map(ForwardReply::ReadIndex),
            Forwarded::Membership(change) => {
                crate::cluster::apply(&self.raft, change).await.map(|()| ForwardReply::MembershipChanged)
            }
        }
    }
}

/// Packs the proposals queued while earlier entries are in flight into one
/// raft entry, so concurrent writers share entries (and fsyncs).
async fn propose_batches(raft: Raft, mut queue: mpsc::UnboundedReceiver<Proposal>) {
    let in_flight = Arc::new(Semaphore::new(MAX_ENTRIES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else { return };
        let mut bytes = first.0.encoded_len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match queue.try_recv() {
                Ok(p) => {
                    bytes = bytes.saturating_add(p.0.encoded_len());
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let (mut commands, waiters): (Vec<Command>, Vec<_>) = batch.into_iter().unzip();
        let single = commands.len() == 1;
        let command = if single && let Some(c) = commands.pop() { c } else { Command::Batch(commands) };
        let fail = |reason: String| WireError::Internal { op: "proposing a write".to_owned(), reason };
        let responder = match raft.client_write_ff(command).await {
            Ok(r) => r,
            Err(e) => {
                for w in waiters {
                    let _ = w.send(Err(fail(e.to_string())));
                }
                continue;
            }
        };
        tokio::spawn(async move {
            let applied = match responder.await {
                Ok(Ok(resp)) => resp.data,
                Ok(Err(ClientWriteError::ForwardToLeader(f))) => {
                    Err(fail(format!("this member is no longer the leader (leader now: {:?})", f.leader_id)))
                }
                Ok(Err(e)) => Err(fail(e.to_string())),
                Err(_) => Err(fail("raft stopped before the write was applied".to_owned())),
            };
            drop(permit);
            match (single, applied) {
                (true, applied) => {
                    if let Some(w) = waiters.into_iter().next() {
                        let _ = w.send(applied);
                    }
                }
                (false, Ok(Reply::Batch(replies))) if replies.len() == waiters.len() => {
                    for (w, r) in waiters.into_iter().zip(replies) {
                        let _ = w.send(r);
                    }
                }
                (false, other) => {
                    let e = match other {
                        Err(e) => e,
                        Ok(r) => fail(format!("a batch was answered with {r:?}")),
                    };
                    for w in waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// On the leader: renews every lease when leadership is won, and proposes
/// the revoke of each lease whose deadline has passed.
async fn drive_leases(inner: Weak<Inner>) {
    let mut was_leader = false;
    loop {
        let Some(interval) = inner.upgrade().map(|i| i.lease_check_interval) else { return };
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        let leader = inner.raft.metrics().borrow().current_leader == Some(inner.id);
        let mem = inner.mem.get();
        if leader && !was_leader {
            info!(id = inner.id, "became leader: renewing every lease");
            if let Err(e) = mem.renew_all_leases() {
                warn!(error = %e, "renewing leases failed");
            }
        }
        was_leader = leader;
        if !leader {
            continue;
        }
        let expired = match mem.expired_leases() {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "listing expired leases failed");
                continue;
            }
        };
        for id in expired {
            debug!(lease = format_args!("{id:x}"), "lease expired; proposing its revoke");
            match inner.propose(Command::LeaseRevoke(id)).await {
                Ok(_) | Err(WireError::LeaseNotFound { .. }) => {}
                Err(e) => warn!(lease = format_args!("{id:x}"), error = ?e, "revoking an expired lease failed"),
            }
        }
    }
}

#[async_trait]
impl Store for RaftStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.read().await?.current_revision().await
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        if req.range.key.is_empty() {
            return Err(StoreError::EmptyKey { op: "ranging" });
        }
        self.inner.read().await?.range(req).await
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse, StoreError> {
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey { op: "putting" });
        }
        match self.inner.write(Command::Put(req)).await? {
            Reply::Put(r) => Ok(r),
            other => Err(unexpected("putting", other)),
        }
    }

    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse, StoreError> {
        if req.range.key.is_empty() {
            return Err(StoreError::EmptyKey { op: "deleting" });
        }
        match self.inner.write(Command::Delete(req)).await? {
            Reply::Delete(r) => Ok(r),
            other => Err(unexpected("deleting", other)),
        }
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, StoreError> {
        match self.inner.write(Command::Txn(req)).await? {
            Reply::Txn(r) => Ok(r),
            other => Err(unexpected("running a transaction", other)),
        }
    }

    async fn compact(&self, revision: Revision) -> Result<Revision, StoreError> {
        match self.inner.write(Command::Compact(revision)).await? {
            Reply::Revision(r) => Ok(r),
            other => Err(unexpected("compacting", other)),
        }
    }

    async fn watch(&self, req: WatchRequest) -> Result<Watcher, StoreError> {
        self.inner.mem.get().watch(req).await
    }

    async fn request_progress(&self, id: WatchId) -> Result<(), StoreError> {
        self.inner.mem.get().request_progress(id).await
    }

    async fn lease_grant(&self, id: LeaseId, ttl: i64) -> Result<LeaseGrant, StoreError> {
        let chosen = id != 0;
        for _ in 0..3 {
            let lease = if chosen { id } else { self.inner.fresh_lease_id() };
            match self.inner.write(Command::LeaseGrant { id: lease, ttl }).await {
                Ok(Reply::LeaseGrant(g)) => return Ok(g),
                Ok(other) => return Err(unexpected("granting a lease", other)),
                Err(StoreError::LeaseExists { .. }) if !chosen => continue,
                Err(e) => return Err(e),
            }
        }
        Err(unavailable("granting a lease", "three fresh lease IDs collided"))
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision, StoreError> {
        match self.inner.write(Command::LeaseRevoke(id)).await? {
            Reply::Revision(r) => Ok(r),
            other => Err(unexpected("revoking a lease", other)),
        }
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64, StoreError> {
        match self.inner.remote_leader()? {
            None => {
                self.inner.leader_read_index().await?;
                self.inner.mem.get().lease_keep_alive(id).await
            }
            Some(leader) => match self.inner.forwarder.forward(&leader, &Forwarded::KeepAlive(id)).await? {
                ForwardReply::KeptAlive(ttl) => Ok(ttl),
                other => Err(unexpected("renewing a lease", other)),
            },
        }
    }

    async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseTimeToLive, StoreError> {
        self.inner.read().await?.lease_time_to_live(id, keys).await
    }

    async fn lease_list(&self) -> Result<Vec<LeaseId>, StoreError> {
        self.inner.read().await?.lease_list().await
    }

    async fn status(&self) -> Result<StoreStatus, StoreError> {
        let mut status = self.inner.mem.get().status().await?;
        status.applied_index = self.inner.raft.metrics().borrow().last_applied.map(|l| l.index).unwrap_or(0);
        Ok(status)
    }

    async fn snapshot(&self) -> Result<Vec<u8>, StoreError> {
        self.inner.read().await?.snapshot().await
    }
}
