//! Peer traffic over gRPC (`proto/raft.proto`): the client openraft uses to
//! reach other members ([`PeerNetwork`]), the server that hands their
//! messages to the local raft ([`PeerService`]), and the forwarding of
//! client requests from a follower to the leader ([`Forwarded`]).
//!
//! openraft's messages travel as bincode inside `Payload.data`; a reply is
//! the bincode of `Result<response, openraft error>`, so a remote raft error
//! reaches the caller as itself.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::command::{Applied, Command, WireError};
use crate::proto::Payload;
use crate::proto::raft_client::RaftClient;
use crate::proto::raft_server::Raft as RaftRpc;
use crate::removal::{MEMBER_REMOVED, Removal};
use crate::{Member, NodeId, Raft, TypeConfig};

/// Largest peer message (a snapshot chunk or a run of entries).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Most bytes of entries sent in one AppendEntries (etcd sends 1 MiB per
/// message): openraft gives an AppendEntries one heartbeat interval to
/// complete, so a long run of large entries goes in several messages. A
/// single larger entry goes alone.
pub const MAX_APPEND_BYTES: u64 = 2 * 1024 * 1024;

/// How long a forwarded client request may take at the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// A client request a follower hands to the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Forwarded {
    /// Propose and wait until committed and applied.
    Write(Command),
    /// Renew a lease on the leader, which alone tracks lease deadlines.
    KeepAlive(waggle_store::LeaseId),
    /// Confirm leadership and return the log index a linearizable read must see.
    ReadIndex,
    /// Change the membership (only the leader can).
    Membership(crate::cluster::MembershipChange),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardReply {
    Written(Applied),
    KeptAlive(i64),
    ReadIndex(u64),
    MembershipChanged,
}

/// What serves forwarded requests on the leader (the [`crate::RaftStore`]).
pub trait ForwardHandler: Send + Sync + 'static {
    fn handle(&self, req: Forwarded) -> impl Future<Output = Result<ForwardReply, WireError>> + Send;
}

fn encode<T: Serialize>(value: &T) -> Result<Payload, Status> {
    bincode::serialize(value)
        .map(|data| Payload { data })
        .map_err(|e| Status::internal(format!("encoding a peer message: {e}")))
}

fn decode<T: DeserializeOwned>(payload: &Payload) -> Result<T, Status> {
    bincode::deserialize(&payload.data).map_err(|e| Status::invalid_argument(format!("decoding a peer message: {e}")))
}

/// Connects lazily to `url`, with the peer message limits.
fn connect(url: &str) -> Result<RaftClient<Channel>, tonic::transport::Error> {
    let channel =
        Endpoint::from_shared(url.to_owned())?.connect_timeout(Duration::from_secs(1)).tcp_nodelay(true).connect_lazy();
    Ok(RaftClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// How many of `entries` entries to send in one message when together they
/// encode to `bytes`; `None` when they all go ([`MAX_APPEND_BYTES`]), or
/// when there is a single entry, which cannot be split.
fn entries_hint(entries: usize, bytes: u64) -> Option<u64> {
    let limit = MAX_APPEND_BYTES;
    let n = u64::try_from(entries).unwrap_or(u64::MAX);
    if bytes <= limit || n <= 1 {
        return None;
    }
    // Proportionally fewer, with room for entries larger than the average.
    Some((n.saturating_mul(limit) / bytes / 2).clamp(1, n - 1))
}

/// Makes the clients openraft uses to reach each member.
#[derive(Clone, Debug, Default)]
pub struct PeerNetwork {
    /// Told when a peer answers that this member was removed.
    removal: Option<Arc<Removal>>,
}

impl PeerNetwork {
    pub fn new(removal: Arc<Removal>) -> Self {
        Self { removal: Some(removal) }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            target,
            url: node.peer_url.clone(),
            client: connect(&node.peer_url).map_err(|e| e.to_string()),
            removal: self.removal.clone(),
        }
    }
}

/// The connection to one member.
#[derive(Debug)]
pub struct PeerClient {
    target: NodeId,
    url: String,
    client: Result<RaftClient<Channel>, String>,
    removal: Option<Arc<Removal>>,
}

#[derive(Debug, thiserror::Error)]
#[error("peer {url}: {reason}")]
struct PeerError {
    url: String,
    reason: String,
}

type Rpc = fn(
    RaftClient<Channel>,
    Payload,
) -> std::pin::Pin<Box<dyn Future<Output = Result<Response<Payload>, Status>> + Send>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Member, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: StdError + DeserializeOwned,
    {
        let fail = |reason: String| PeerError { url: self.url.clone(), reason };
        let client = self.client.clone().map_err(|e| RPCError::Unreachable(Unreachable::new(&fail(e))))?;
        let payload = encode(req).map_err(|s| RPCError::Network(NetworkError::new(&fail(s.message().to_owned()))))?;
        let reply = match tokio::time::timeout(option.hard_ttl(), rpc(client, payload)).await {
            Err(_) => {
                return Err(RPCError::Network(NetworkError::new(&fail(format!(
                    "no answer within {:?}",
                    option.hard_ttl()
                )))));
            }
            Ok(Err(status)) if is_member_removed(&status) => {
                if let Some(removal) = &self.removal {
                    removal.mark_me_removed(&format!("peer {} says so", self.url));
                }
                return Err(RPCError::Network(NetworkError::new(&fail(MEMBER_REMOVED.to_owned()))));
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                return Err(RPCError::Unreachable(Unreachable::new(&fail(status.message().to_owned()))));
            }
            Ok(Err(status)) => return Err(RPCError::Network(NetworkError::new(&fail(status.to_string())))),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, E> =
            decode(&reply).map_err(|s| RPCError::Network(NetworkError::new(&fail(s.message().to_owned()))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        // Too many bytes of entries for one message: openraft sends fewer at once.
        let bytes = bincode::serialized_size(&rpc).unwrap_or(0);
        if let Some(hint) = entries_hint(rpc.entries.len(), bytes) {
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)));
        }
        self.call(|mut c, p| Box::pin(async move { c.append_entries(p).await }), &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(|mut c, p| Box::pin(async move { c.install_snapshot(p).await }), &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(|mut c, p| Box::pin(async move { c.vote(p).await }), &rpc, &option).await
    }
}

/// Forwards client requests to the leader, keeping one channel per member.
#[derive(Clone, Debug, Default)]
pub struct Forwarder {
    clients: Arc<Mutex<HashMap<String, RaftClient<Channel>>>>,
}

impl Forwarder {
    pub async fn forward(&self, leader: &Member, req: &Forwarded) -> Result<ForwardReply, WireError> {
        let unavailable = |reason: String| WireError::Internal {
            op: "forwarding a request to the leader".to_owned(),
            reason: format!("leader {leader}: {reason}"),
        };
        let client = {
            let mut clients = self.clients.lock().map_err(|_| unavailable("the channel cache is poisoned".into()))?;
            match clients.get(&leader.peer_url) {
                Some(c) => c.clone(),
                None => {
                    let c = connect(&leader.peer_url).map_err(|e| unavailable(e.to_string()))?;
                    clients.insert(leader.peer_url.clone(), c.clone());
                    c
                }
            }
        };
        let payload = encode(req).map_err(|s| unavailable(s.message().to_owned()))?;
        let mut client = client;
        let reply = tokio::time::timeout(FORWARD_TIMEOUT, client.forward(payload))
            .await
            .map_err(|_| unavailable(format!("no answer within {FORWARD_TIMEOUT:?}")))?
            .map_err(|s| unavailable(s.to_string()))?
            .into_inner();
        decode::<Result<ForwardReply, WireError>>(&reply).map_err(|s| unavailable(s.message().to_owned()))?
    }
}

/// The answer to a member that was removed from the cluster.
fn member_removed() -> Status {
    Status::failed_precondition(MEMBER_REMOVED)
}

fn is_member_removed(status: &Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition && status.message() == MEMBER_REMOVED
}

/// Serves the peer RPCs of one member.
pub struct PeerService<H> {
    raft: Raft,
    handler: Arc<H>,
    removal: Option<Arc<Removal>>,
}

impl<H> PeerService<H> {
    pub fn new(raft: Raft, handler: Arc<H>) -> Self {
        Self { raft, handler, removal: None }
    }

    /// Answers vote requests of removed members with [`MEMBER_REMOVED`].
    pub fn with_removal(mut self, removal: Arc<Removal>) -> Self {
        self.removal = Some(removal);
        self
    }

    pub fn into_server(self) -> crate::proto::raft_server::RaftServer<Self>
    where
        H: ForwardHandler,
    {
        crate::proto::raft_server::RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

impl<H> std::fmt::Debug for PeerService<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerService").finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl<H: ForwardHandler> RaftRpc for PeerService<H> {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req.get_ref())?;
        encode(&self.raft.append_entries(rpc).await).map(Response::new)
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: VoteRequest<NodeId> = decode(req.get_ref())?;
        if let (Some(removal), Some(candidate)) = (&self.removal, rpc.vote.leader_id().voted_for())
            && removal.is_removed(candidate)
        {
            return Err(member_removed());
        }
        encode(&self.raft.vote(rpc).await).map(Response::new)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req.get_ref())?;
        encode(&self.raft.install_snapshot(rpc).await).map(Response::new)
    }

    async fn forward(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let forwarded: Forwarded = decode(req.get_ref())?;
        encode(&self.handler.handle(forwarded).await).map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_over_the_message_limit_are_sent_in_smaller_runs() {
        let limit = MAX_APPEND_BYTES;
        assert_eq!(entries_hint(100, limit), None, "fits");
        assert_eq!(entries_hint(1, limit * 3), None, "one entry cannot be split");
        assert_eq!(entries_hint(100, limit * 2), Some(25));
        assert_eq!(entries_hint(2, limit * 100), Some(1));
    }
}
