//! The etcd v3 gRPC API over any [`Store`]: one file per etcd service, plus
//! the conversions and the error mapping they share.
//!
//! Wire compatibility target: etcd 3.4's `etcdserverpb` as spoken by
//! Debian's `etcdctl` 3.4 and `client-go`'s clientv3.

mod cluster;
mod convert;
mod kv;
mod lease;
mod maintenance;
mod status;
mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;

use crate::proto::etcdserverpb::{
    ResponseHeader, cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::store::Store;
use crate::types::Revision;

pub use status::to_status;
/// The error a server ends with (binding, accepting, serving HTTP/2).
pub use tonic::transport::Error as TransportError;

/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// gRPC framing on top of the request limit, as etcd allows (`grpcOverheadBytes`).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The API version reported by `Status`: the etcd release whose API this speaks.
pub const API_VERSION: &str = "3.4.0";

/// One member of the cluster as `MemberList` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    /// A learner receives the log but does not vote.
    pub is_learner: bool,
}

impl MemberInfo {
    /// The member ID is derived from the name and peer URLs, as etcd derives
    /// it from the peer URLs and the cluster token: stable across restarts.
    pub fn new(name: &str, peer_urls: Vec<String>, client_urls: Vec<String>) -> Self {
        let mut hash = Sha256::new();
        hash.update(name.as_bytes());
        for url in &peer_urls {
            hash.update(b"\n");
            hash.update(url.as_bytes());
        }
        Self { id: first_u64(&hash.finalize()), name: name.to_owned(), peer_urls, client_urls, is_learner: false }
    }
}

/// The ID of a replicated member, derived from its peer URLs alone: the
/// member itself (from `--initial-advertise-peer-urls`) and `MemberAdd`
/// (which knows only the peer URLs, as in etcd) compute the same ID.
pub fn member_id(peer_urls: &[String]) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(|u| u.trim_end_matches('/')).collect();
    urls.sort_unstable();
    let mut hash = Sha256::new();
    for url in urls {
        hash.update(url.as_bytes());
        hash.update(b"\n");
    }
    first_u64(&hash.finalize())
}

/// The cluster ID of a replicated cluster: derived from its initial
/// members and the cluster token, so every member computes the same one.
pub fn cluster_id(member_ids: &[u64], cluster_token: &str) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut hash = Sha256::new();
    for id in ids {
        hash.update(id.to_be_bytes());
    }
    hash.update(cluster_token.as_bytes());
    first_u64(&hash.finalize())
}

/// A replicated cluster's membership, as the `Cluster` and `Maintenance`
/// services see it. Without one, the member is a cluster of its own.
#[async_trait::async_trait]
pub trait Membership: Send + Sync + 'static {
    /// Every member, voters and learners.
    fn members(&self) -> Vec<MemberInfo>;

    /// The leader's member ID (0 when none is known).
    fn leader(&self) -> u64;

    /// The current raft term.
    fn term(&self) -> u64;

    /// Adds a member reachable at `peer_urls`; a voter is first brought up
    /// to date as a learner. Returns the new member.
    async fn add(&self, peer_urls: Vec<String>, is_learner: bool) -> Result<MemberInfo, crate::StoreError>;

    /// Removes a member (voter or learner).
    async fn remove(&self, id: u64) -> Result<(), crate::StoreError>;

    /// Makes a learner a voter.
    async fn promote(&self, id: u64) -> Result<(), crate::StoreError>;
}

/// What every response header and the cluster/maintenance services report.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub cluster_id: u64,
    pub member: MemberInfo,
    pub raft_term: u64,
    pub max_request_bytes: usize,
}

impl ServerInfo {
    /// A single-member cluster; the cluster ID is derived from the member
    /// and the cluster token (etcd's `--initial-cluster-token`).
    pub fn single(member: MemberInfo, cluster_token: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(member.id.to_be_bytes());
        hash.update(cluster_token.as_bytes());
        Self {
            cluster_id: first_u64(&hash.finalize()),
            member,
            raft_term: 1,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

/// What each service holds: the store and the member's identity.
#[derive(Clone)]
pub(crate) struct Context {
    store: Arc<dyn Store>,
    info: Arc<ServerInfo>,
    membership: Option<Arc<dyn Membership>>,
}

impl Context {
    pub(crate) fn header(&self, revision: Revision) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.info.cluster_id,
            member_id: self.info.member.id,
            revision,
            raft_term: self.raft_term(),
        })
    }

    pub(crate) fn raft_term(&self) -> u64 {
        self.membership.as_ref().map_or(self.info.raft_term, |m| m.term())
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("info", &self.info).finish_non_exhaustive()
    }
}

/// The gRPC server for one member.
#[derive(Clone, Debug)]
pub struct EtcdServer {
    ctx: Context,
}

impl EtcdServer {
    pub fn new(store: Arc<dyn Store>, info: ServerInfo) -> Self {
        Self { ctx: Context { store, info: Arc::new(info), membership: None } }
    }

    /// Serves a replicated member: `MemberList`, `MemberAdd`,
    /// `MemberRemove`, `MemberPromote` and `Status` go to `membership`.
    pub fn with_membership(mut self, membership: Arc<dyn Membership>) -> Self {
        self.ctx.membership = Some(membership);
        self
    }

    /// The tonic router with every etcd service this API serves.
    pub fn router(&self) -> tonic::transport::server::Router {
        let limit = self.ctx.info.max_request_bytes + GRPC_OVERHEAD_BYTES;
        let ctx = &self.ctx;
        tonic::transport::Server::builder()
            .add_service(KvServer::new(kv::KvService::new(ctx.clone())).max_decoding_message_size(limit))
            .add_service(WatchServer::new(watch::WatchService::new(ctx.clone())).max_decoding_message_size(limit))
            .add_service(LeaseServer::new(lease::LeaseService::new(ctx.clone())).max_decoding_message_size(limit))
            .add_service(ClusterServer::new(cluster::ClusterService::new(ctx.clone())))
            .add_service(MaintenanceServer::new(maintenance::MaintenanceService::new(ctx.clone())))
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        // Small replies must leave at once: without TCP_NODELAY, Nagle holds a
        // reply behind the client's delayed ACK (40 ms).
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        self.router().serve_with_incoming_shutdown(incoming, shutdown).await
    }

    /// Binds `addr` and serves until `shutdown` resolves; returns the bound
    /// address (useful with port 0) and the serving task.
    pub async fn spawn(
        self,
        addr: SocketAddr,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<Result<(), tonic::transport::Error>>)> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok((local, tokio::spawn(self.serve(listener, shutdown))))
    }
}
