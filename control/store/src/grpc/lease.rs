//! The `Lease` service: grant, revoke, keep-alive stream, time-to-live, list.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::error::StoreError;
use crate::proto::etcdserverpb::{self as pb, lease_server::Lease};

use super::Context;
use super::status::to_status;

#[derive(Debug)]
pub(crate) struct LeaseService {
    ctx: Context,
}

impl LeaseService {
    pub(crate) fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        let grant = self.ctx.store.lease_grant(req.id, req.ttl).await.map_err(to_status)?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: self.ctx.header(grant.revision),
            id: grant.id,
            ttl: grant.ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let revision = self.ctx.store.lease_revoke(request.into_inner().id).await.map_err(to_status)?;
        Ok(Response::new(pb::LeaseRevokeResponse { header: self.ctx.header(revision) }))
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<BoxStream<pb::LeaseKeepAliveResponse>>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            loop {
                let req = match inbound.message().await {
                    Ok(Some(req)) => req,
                    Ok(None) => return,
                    Err(status) => {
                        debug!(%status, "lease keep-alive stream ended with an error");
                        return;
                    }
                };
                // etcd answers an unknown lease with TTL 0 rather than an error.
                let ttl = match ctx.store.lease_keep_alive(req.id).await {
                    Ok(ttl) => ttl,
                    Err(StoreError::LeaseNotFound { .. }) => 0,
                    Err(e) => {
                        let _ = tx.send(Err(to_status(e))).await;
                        return;
                    }
                };
                let revision = ctx.store.current_revision().await.unwrap_or_default();
                let resp = pb::LeaseKeepAliveResponse { header: ctx.header(revision), id: req.id, ttl };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let revision = self.ctx.store.current_revision().await.map_err(to_status)?;
        // As etcd: an unknown (or expired) lease is TTL -1, not an error.
        let resp = match self.ctx.store.lease_time_to_live(req.id, req.keys).await {
            Ok(t) => pb::LeaseTimeToLiveResponse {
                header: self.ctx.header(revision),
                id: t.id,
                ttl: t.ttl,
                granted_ttl: t.granted_ttl,
                keys: t.keys,
            },
            Err(StoreError::LeaseNotFound { .. }) => pb::LeaseTimeToLiveResponse {
                header: self.ctx.header(revision),
                id: req.id,
                ttl: -1,
                ..pb::LeaseTimeToLiveResponse::default()
            },
            Err(e) => return Err(to_status(e)),
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let revision = self.ctx.store.current_revision().await.map_err(to_status)?;
        let ids = self.ctx.store.lease_list().await.map_err(to_status)?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.ctx.header(revision),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}
