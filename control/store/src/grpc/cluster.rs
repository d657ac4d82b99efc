//! The `Cluster` service. A single member is the whole cluster: MemberList
//! reports it and membership changes answer `Unimplemented`. A replicated
//! member hands MemberList, MemberAdd, MemberRemove and MemberPromote to its
//! [`Membership`](super::Membership).

use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::{self as pb, cluster_server::Cluster};

use super::status::to_status;
use super::{Context, MemberInfo};

#[derive(Debug)]
pub(crate) struct ClusterService {
    ctx: Context,
}

fn to_pb(m: MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

impl ClusterService {
    pub(crate) fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    fn members(&self) -> Vec<pb::Member> {
        match &self.ctx.membership {
            Some(m) => m.members().into_iter().map(to_pb).collect(),
            None => vec![to_pb(self.ctx.info.member.clone())],
        }
    }

    fn membership(&self) -> Result<&dyn super::Membership, Status> {
        self.ctx.membership.as_deref().ok_or_else(|| {
            Status::unimplemented(
                "waggle store: membership changes need the replicated (raft) store; this member runs alone \
                 (start members with --initial-cluster naming several)",
            )
        })
    }

    /// The header at this member's revision: as in etcd, the Cluster
    /// service answers from the member's own state, without a quorum read.
    async fn header(&self) -> Result<Option<pb::ResponseHeader>, Status> {
        let revision = self.ctx.store.status().await.map_err(to_status)?.revision;
        Ok(self.ctx.header(revision))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let membership = self.membership()?;
        let req = request.into_inner();
        if req.peer_ur_ls.is_empty() {
            return Err(Status::invalid_argument("etcdserver: member peer urls not provided"));
        }
        if self.members().iter().any(|m| m.peer_ur_ls.iter().any(|u| req.peer_ur_ls.contains(u))) {
            return Err(Status::failed_precondition("etcdserver: Peer URLs already exists"));
        }
        let added = membership.add(req.peer_ur_ls, req.is_learner).await.map_err(to_status)?;
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header().await?,
            member: Some(to_pb(added)),
            members: self.members(),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let membership = self.membership()?;
        let id = request.into_inner().id;
        if !self.members().iter().any(|m| m.id == id) {
            return Err(Status::not_found("etcdserver: member not found"));
        }
        membership.remove(id).await.map_err(to_status)?;
        Ok(Response::new(pb::MemberRemoveResponse { header: self.header().await?, members: self.members() }))
    }

    async fn member_update(
        &self,
        _: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(Status::unimplemented("waggle store: changing a member's peer URLs is not supported"))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let membership = self.membership()?;
        let id = request.into_inner().id;
        match self.members().iter().find(|m| m.id == id) {
            None => return Err(Status::not_found("etcdserver: member not found")),
            Some(m) if !m.is_learner => {
                return Err(Status::failed_precondition("etcdserver: can only promote a learner member"));
            }
            Some(_) => {}
        }
        membership.promote(id).await.map_err(to_status)?;
        Ok(Response::new(pb::MemberPromoteResponse { header: self.header().await?, members: self.members() }))
    }

    async fn member_list(&self, _: Request<pb::MemberListRequest>) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse { header: self.header().await?, members: self.members() }))
    }
}
