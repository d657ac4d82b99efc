//! The `KV` service: Range, Put, DeleteRange, Txn, Compact.

use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::{self as pb, kv_server::Kv};

use super::status::{request_too_large, to_status};
use super::{Context, convert};

#[derive(Debug)]
pub(crate) struct KvService {
    ctx: Context,
}

impl KvService {
    pub(crate) fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    fn check_size(&self, len: usize) -> Result<(), Status> {
        if len > self.ctx.info.max_request_bytes { Err(request_too_large()) } else { Ok(()) }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let req = convert::range_request(request.into_inner())?;
        let resp = self.ctx.store.range(req).await.map_err(to_status)?;
        Ok(Response::new(convert::range_response(&self.ctx, resp)))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let req = request.into_inner();
        self.check_size(req.encoded_len())?;
        let resp = self.ctx.store.put(convert::put_request(req)?).await.map_err(to_status)?;
        Ok(Response::new(convert::put_response(&self.ctx, resp)))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let req = convert::delete_request(request.into_inner());
        let resp = self.ctx.store.delete(req).await.map_err(to_status)?;
        Ok(Response::new(convert::delete_response(&self.ctx, resp)))
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let req = request.into_inner();
        self.check_size(req.encoded_len())?;
        let resp = self.ctx.store.txn(convert::txn_request(req)?).await.map_err(to_status)?;
        Ok(Response::new(convert::txn_response(&self.ctx, resp)))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let revision = self.ctx.store.compact(request.into_inner().revision).await.map_err(to_status)?;
        Ok(Response::new(pb::CompactionResponse { header: self.ctx.header(revision) }))
    }
}
