//! The `Store` trait: etcd's key-value semantics, whatever keeps the data.

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::types::{
    DeleteRequest, DeleteResponse, LeaseGrant, LeaseId, LeaseTimeToLive, PutRequest, PutResponse, RangeRequest,
    RangeResponse, Revision, StoreStatus, TxnRequest, TxnResponse, WatchId, WatchMessage, WatchRequest,
};

/// A revisioned key-value store with etcd's semantics: one global revision
/// bumped by every write, MVCC history until compaction, transactions,
/// watches from any retained revision, and leases whose expiry deletes keys.
///
/// Every implementation must pass [`crate::conformance`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The revision of the latest write.
    async fn current_revision(&self) -> Result<Revision>;

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse>;

    async fn put(&self, req: PutRequest) -> Result<PutResponse>;

    /// Deletes every key of the range. Deleting nothing leaves the revision as it is.
    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse>;

    /// Evaluates the compares against the current revision and applies
    /// `success` or `failure` atomically; all writes share one revision.
    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse>;

    /// Drops history older than `revision`; reads below it then fail with
    /// [`crate::StoreError::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<Revision>;

    /// Starts a watcher. A start revision older than the compaction still
    /// makes a watcher, whose first message is [`WatchMessage::Compacted`].
    async fn watch(&self, req: WatchRequest) -> Result<Watcher>;

    /// Asks for a [`WatchMessage::Progress`] on the watcher as soon as it has
    /// delivered everything up to the current revision.
    async fn request_progress(&self, id: WatchId) -> Result<()>;

    /// Grants a lease; `id == 0` lets the store choose one.
    async fn lease_grant(&self, id: LeaseId, ttl: i64) -> Result<LeaseGrant>;

    /// Revokes a lease and deletes its keys; returns the store's revision after.
    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision>;

    /// Renews a lease to its granted TTL; returns that TTL.
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64>;

    async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseTimeToLive>;

    async fn lease_list(&self) -> Result<Vec<LeaseId>>;

    async fn status(&self) -> Result<StoreStatus>;

    /// A consistent image of the current state (keys, values, leases), in
    /// the format [`crate::snapshot`] reads back.
    async fn snapshot(&self) -> Result<Vec<u8>>;
}

/// A running watch. Messages arrive in revision order; dropping the watcher
/// cancels it.
pub struct Watcher {
    pub id: WatchId,
    pub messages: mpsc::Receiver<WatchMessage>,
    cancel: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Watcher {
    pub fn new(id: WatchId, messages: mpsc::Receiver<WatchMessage>, cancel: Box<dyn FnOnce() + Send + Sync>) -> Self {
        Self { id, messages, cancel: Some(cancel) }
    }

    /// The next message, or `None` once the watcher has ended.
    pub async fn next(&mut self) -> Option<WatchMessage> {
        self.messages.recv().await
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            cancel();
        }
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").field("id", &self.id).finish_non_exhaustive()
    }
}
