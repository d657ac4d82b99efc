//! `scheduling.k8s.io/v1`: PriorityClass.

use k8s_pb::api::scheduling::v1::PriorityClass;
use serde_json::{Map, Value};

use super::json::{Obj, Result};
use super::message;
use super::meta::object_meta;

pub(super) fn priority_class(raw: &[u8]) -> Result<Map<String, Value>> {
    let PriorityClass { metadata, value, global_default, description, preemption_policy } = message(raw)?;
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .int_always("value", value)
        .bool("globalDefault", global_default)
        .string("description", description)
        .string_ptr("preemptionPolicy", preemption_policy)
        .into_map())
}
