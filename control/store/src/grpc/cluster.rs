//! The `Cluster` service. This member is the whole cluster: MemberList
//! reports it; adding, removing, updating or promoting members needs the
//! replicated store and answers `Unimplemented` until that exists.

use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::{self as pb, cluster_server::Cluster};

use super::Context;
use super::status::to_status;

#[derive(Debug)]
pub(crate) struct ClusterService {
    ctx: Context,
}

impl ClusterService {
    pub(crate) fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    fn members(&self) -> Vec<pb::Member> {
        let m = &self.ctx.info.member;
        vec![pb::Member {
            id: m.id,
            name: m.name.clone(),
            peer_ur_ls: m.peer_urls.clone(),
            client_ur_ls: m.client_urls.clone(),
            is_learner: false,
        }]
    }
}

fn single_member() -> Status {
    Status::unimplemented("waggle store: membership changes need the replicated (raft) store; this member runs alone")
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(&self, _: Request<pb::MemberAddRequest>) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(single_member())
    }

    async fn member_remove(
        &self,
        _: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(single_member())
    }

    async fn member_update(
        &self,
        _: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(single_member())
    }

    async fn member_promote(
        &self,
        _: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(single_member())
    }

    async fn member_list(&self, _: Request<pb::MemberListRequest>) -> Result<Response<pb::MemberListResponse>, Status> {
        let revision = self.ctx.store.current_revision().await.map_err(to_status)?;
        Ok(Response::new(pb::MemberListResponse { header: self.ctx.header(revision), members: self.members() }))
    }
}
