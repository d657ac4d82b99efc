//! Wire messages to store values and back. Validation that etcd does at its
//! API boundary (before a request reaches the store) lives here too.

use tonic::Status;

use crate::proto::{etcdserverpb as pb, mvccpb};
use crate::types::{
    Compare, CompareResult, CompareTarget, DeleteRequest, DeleteResponse, Event, EventKind, KeyRange, PutRequest,
    PutResponse, RangeRequest, RangeResponse, SortOrder, SortTarget, TxnOp, TxnOpResponse, TxnRequest, TxnResponse,
};

use super::Context;

pub(crate) fn range_request(r: pb::RangeRequest) -> Result<RangeRequest, Status> {
    use pb::range_request::{SortOrder as O, SortTarget as T};
    let sort_order = match O::try_from(r.sort_order) {
        Ok(O::None) => SortOrder::None,
        Ok(O::Ascend) => SortOrder::Ascend,
        Ok(O::Descend) => SortOrder::Descend,
        Err(_) => return Err(Status::invalid_argument(format!("unknown sort order {}", r.sort_order))),
    };
    let sort_target = match T::try_from(r.sort_target) {
        Ok(T::Key) => SortTarget::Key,
        Ok(T::Version) => SortTarget::Version,
        Ok(T::Create) => SortTarget::Create,
        Ok(T::Mod) => SortTarget::Mod,
        Ok(T::Value) => SortTarget::Value,
        Err(_) => return Err(Status::invalid_argument(format!("unknown sort target {}", r.sort_target))),
    };
    Ok(RangeRequest {
        range: KeyRange { key: r.key, range_end: r.range_end },
        revision: r.revision,
        limit: r.limit,
        keys_only: r.keys_only,
        count_only: r.count_only,
        sort_order,
        sort_target,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub(crate) fn put_request(p: pb::PutRequest) -> Result<PutRequest, Status> {
    if p.ignore_value && !p.value.is_empty() {
        return Err(Status::invalid_argument("etcdserver: value is provided"));
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(Status::invalid_argument("etcdserver: lease is provided"));
    }
    Ok(PutRequest {
        key: p.key,
        value: p.value,
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    })
}

pub(crate) fn delete_request(d: pb::DeleteRangeRequest) -> DeleteRequest {
    DeleteRequest { range: KeyRange { key: d.key, range_end: d.range_end }, prev_kv: d.prev_kv }
}

fn compare(c: pb::Compare) -> Result<Compare, Status> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => CompareResult::Equal,
        Ok(R::Greater) => CompareResult::Greater,
        Ok(R::Less) => CompareResult::Less,
        Ok(R::NotEqual) => CompareResult::NotEqual,
        Err(_) => return Err(Status::invalid_argument(format!("unknown compare result {}", c.result))),
    };
    // proto3 omits zero values, so a missing operand is the target's zero.
    let target = match (T::try_from(c.target), c.target_union) {
        (Ok(T::Version), Some(U::Version(v))) => CompareTarget::Version(v),
        (Ok(T::Version), _) => CompareTarget::Version(0),
        (Ok(T::Create), Some(U::CreateRevision(v))) => CompareTarget::CreateRevision(v),
        (Ok(T::Create), _) => CompareTarget::CreateRevision(0),
        (Ok(T::Mod), Some(U::ModRevision(v))) => CompareTarget::ModRevision(v),
        (Ok(T::Mod), _) => CompareTarget::ModRevision(0),
        (Ok(T::Value), Some(U::Value(v))) => CompareTarget::Value(v),
        (Ok(T::Value), _) => CompareTarget::Value(Vec::new()),
        (Ok(T::Lease), Some(U::Lease(v))) => CompareTarget::Lease(v),
        (Ok(T::Lease), _) => CompareTarget::Lease(0),
        (Err(_), _) => return Err(Status::invalid_argument(format!("unknown compare target {}", c.target))),
    };
    Ok(Compare { range: KeyRange { key: c.key, range_end: c.range_end }, result, target })
}

fn op(o: pb::RequestOp) -> Result<TxnOp, Status> {
    use pb::request_op::Request;
    Ok(match o.request {
        Some(Request::RequestRange(r)) => TxnOp::Range(range_request(r)?),
        Some(Request::RequestPut(p)) => TxnOp::Put(put_request(p)?),
        Some(Request::RequestDeleteRange(d)) => TxnOp::Delete(delete_request(d)),
        Some(Request::RequestTxn(t)) => TxnOp::Txn(txn_request(t)?),
        None => return Err(Status::invalid_argument("etcdserver: a transaction operation has no request")),
    })
}

pub(crate) fn txn_request(t: pb::TxnRequest) -> Result<TxnRequest, Status> {
    Ok(TxnRequest {
        compare: t.compare.into_iter().map(compare).collect::<Result<_, _>>()?,
        success: t.success.into_iter().map(op).collect::<Result<_, _>>()?,
        failure: t.failure.into_iter().map(op).collect::<Result<_, _>>()?,
    })
}

pub(crate) fn range_response(ctx: &Context, r: RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: ctx.header(r.revision),
        kvs: r.kvs.into_iter().map(mvccpb::KeyValue::from).collect(),
        more: r.more,
        count: r.count,
    }
}

pub(crate) fn put_response(ctx: &Context, r: PutResponse) -> pb::PutResponse {
    pb::PutResponse { header: ctx.header(r.revision), prev_kv: r.prev_kv.map(mvccpb::KeyValue::from) }
}

pub(crate) fn delete_response(ctx: &Context, r: DeleteResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: ctx.header(r.revision),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(mvccpb::KeyValue::from).collect(),
    }
}

pub(crate) fn txn_response(ctx: &Context, r: TxnResponse) -> pb::TxnResponse {
    use pb::response_op::Response;
    let responses = r
        .responses
        .into_iter()
        .map(|resp| pb::ResponseOp {
            response: Some(match resp {
                TxnOpResponse::Range(x) => Response::ResponseRange(range_response(ctx, x)),
                TxnOpResponse::Put(x) => Response::ResponsePut(put_response(ctx, x)),
                TxnOpResponse::Delete(x) => Response::ResponseDeleteRange(delete_response(ctx, x)),
                TxnOpResponse::Txn(x) => Response::ResponseTxn(txn_response(ctx, x)),
            }),
        })
        .collect();
    pb::TxnResponse { header: ctx.header(r.revision), succeeded: r.succeeded, responses }
}

pub(crate) fn event(e: Event) -> mvccpb::Event {
    let kind = match e.kind {
        EventKind::Put => mvccpb::event::EventType::Put,
        EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event { r#type: kind.into(), kv: Some(e.kv.into()), prev_kv: e.prev_kv.map(mvccpb::KeyValue::from) }
}
