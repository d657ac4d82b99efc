//! The etcd v3 wire types and services generated from `proto/`, plus
//! conversions between them and the store's own types.

#[allow(clippy::all, reason = "generated code")]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

#[allow(clippy::all, reason = "generated code")]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

use crate::types::KeyValue;

impl From<KeyValue> for mvccpb::KeyValue {
    fn from(kv: KeyValue) -> Self {
        Self {
            key: kv.key,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: kv.value,
            lease: kv.lease,
        }
    }
}

impl From<mvccpb::KeyValue> for KeyValue {
    fn from(kv: mvccpb::KeyValue) -> Self {
        Self {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}
