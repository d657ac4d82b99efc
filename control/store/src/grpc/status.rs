//! Store errors as the gRPC statuses etcd sends: clients (clientv3,
//! etcdctl) match on the exact code and message, e.g. to tell a compacted
//! revision from any other failure.

use tonic::Status;
use tracing::debug;

use crate::error::StoreError;

pub fn to_status(e: StoreError) -> Status {
    debug!(error = %e, "request failed");
    match e {
        StoreError::Compacted { .. } => Status::out_of_range("etcdserver: mvcc: required revision has been compacted"),
        StoreError::FutureRevision { .. } => {
            Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
        }
        StoreError::EmptyKey { .. } => Status::invalid_argument("etcdserver: key is not provided"),
        StoreError::KeyNotFound { .. } => Status::invalid_argument("etcdserver: key not found"),
        StoreError::LeaseNotFound { .. } => Status::not_found("etcdserver: requested lease not found"),
        StoreError::LeaseExists { .. } => Status::failed_precondition("etcdserver: lease already exists"),
        StoreError::LeaseTtlTooLarge { .. } => Status::out_of_range("etcdserver: too large lease TTL"),
        StoreError::DuplicateKey { .. } => Status::invalid_argument("etcdserver: duplicate key given in txn request"),
        StoreError::TooManyOps { .. } => Status::invalid_argument("etcdserver: too many operations in txn request"),
        StoreError::BadSnapshot { .. } | StoreError::Internal { .. } => Status::internal(e.to_string()),
        // clientv3 retries Unavailable for reads; etcd words it `etcdserver: no leader`.
        StoreError::Unavailable { reason, .. } => Status::unavailable(format!("etcdserver: {reason}")),
    }
}

pub(crate) fn request_too_large() -> Status {
    Status::invalid_argument("etcdserver: request is too large")
}
