//! The `Maintenance` service: Status, Snapshot and an always-empty Alarm
//! list (`etcdctl endpoint health` asks for alarms). Defragment, Hash,
//! HashKV and MoveLeader answer `Unimplemented`.

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::{self as pb, maintenance_server::Maintenance};

use super::status::to_status;
use super::{API_VERSION, Context};

/// Snapshot bytes per stream message (etcd sends 32 KiB chunks).
const SNAPSHOT_CHUNK: usize = 32 * 1024;

#[derive(Debug)]
pub(crate) struct MaintenanceService {
    ctx: Context,
}

impl MaintenanceService {
    pub(crate) fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, request: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        let revision = self.ctx.store.current_revision().await.map_err(to_status)?;
        match AlarmAction::try_from(request.into_inner().action) {
            Ok(AlarmAction::Get) | Ok(AlarmAction::Deactivate) => {
                Ok(Response::new(pb::AlarmResponse { header: self.ctx.header(revision), alarms: Vec::new() }))
            }
            _ => Err(Status::unimplemented("waggle store: raising alarms is not supported")),
        }
    }

    async fn status(&self, _request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let status = self.ctx.store.status().await.map_err(to_status)?;
        let info = &self.ctx.info;
        Ok(Response::new(pb::StatusResponse {
            header: self.ctx.header(status.revision),
            version: API_VERSION.to_owned(),
            db_size: status.size_bytes,
            // A single member is always its own leader.
            leader: self.ctx.membership.as_ref().map_or(info.member.id, |m| m.leader()),
            raft_index: status.applied_index,
            raft_term: self.ctx.raft_term(),
            raft_applied_index: status.applied_index,
            errors: Vec::new(),
            db_size_in_use: status.size_bytes,
            is_learner: self
                .ctx
                .membership
                .as_ref()
                .is_some_and(|m| m.members().iter().any(|x| x.id == info.member.id && x.is_learner)),
        }))
    }

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<BoxStream<pb::SnapshotResponse>>, Status> {
        let revision = self.ctx.store.current_revision().await.map_err(to_status)?;
        let bytes = self.ctx.store.snapshot().await.map_err(to_status)?;
        let header = self.ctx.header(revision);
        let total = bytes.len();
        let chunks: Vec<_> = bytes
            .chunks(SNAPSHOT_CHUNK)
            .scan(0usize, |sent, chunk| {
                *sent += chunk.len();
                Some(Ok(pb::SnapshotResponse {
                    header,
                    remaining_bytes: u64::try_from(total - *sent).unwrap_or(0),
                    blob: chunk.to_vec(),
                }))
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}
