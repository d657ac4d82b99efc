//! `meta/v1` and the apimachinery scalars every kind shares: ObjectMeta,
//! LabelSelector, Time, IntOrString, Quantity, and DeleteOptions.

use std::collections::BTreeMap;

use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1::{
    DeleteOptions, LabelSelector, LabelSelectorRequirement, ManagedFieldsEntry, ObjectMeta, OwnerReference,
    Preconditions, Time,
};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value};

use super::ProtobufError;
use super::json::{Obj, Result, each};

/// `metav1.ObjectMeta`. `creationTimestamp` is a non-pointer `Time`, so it is
/// always written, as `null` when zero (what kubectl's JSON bodies carry).
pub(super) fn object_meta(m: ObjectMeta) -> Result<Value> {
    let ObjectMeta {
        name,
        generate_name,
        namespace,
        self_link,
        uid,
        resource_version,
        generation,
        creation_timestamp,
        deletion_timestamp,
        deletion_grace_period_seconds,
        labels,
        annotations,
        owner_references,
        finalizers,
        managed_fields,
    } = m;
    Ok(Obj::new()
        .string("name", name)
        .string("generateName", generate_name)
        .string("namespace", namespace)
        .string("selfLink", self_link)
        .string("uid", uid)
        .string("resourceVersion", resource_version)
        .int("generation", generation)
        .object("creationTimestamp", time(creation_timestamp)?)
        .object_ptr("deletionTimestamp", deletion_timestamp.map(|t| time(Some(t))).transpose()?)
        .int_ptr("deletionGracePeriodSeconds", deletion_grace_period_seconds)
        .map("labels", labels)
        .map("annotations", annotations)
        .list("ownerReferences", owner_references.into_iter().map(owner_reference).collect())
        .strings("finalizers", finalizers)
        .list("managedFields", each(managed_fields, managed_fields_entry)?)
        .build())
}

fn owner_reference(r: OwnerReference) -> Value {
    let OwnerReference { api_version, kind, name, uid, controller, block_owner_deletion } = r;
    Obj::new()
        .string_always("apiVersion", api_version)
        .string_always("kind", kind)
        .string_always("name", name)
        .string_always("uid", uid)
        .bool_ptr("controller", controller)
        .bool_ptr("blockOwnerDeletion", block_owner_deletion)
        .build()
}

fn managed_fields_entry(e: ManagedFieldsEntry) -> Result<Value> {
    let ManagedFieldsEntry { manager, operation, api_version, time: at, fields_type, fields_v1, subresource } = e;
    // FieldsV1 travels as the raw JSON document in both encodings.
    let fields = match fields_v1.and_then(|f| f.raw) {
        Some(raw) => Some(serde_json::from_slice(&raw).map_err(ProtobufError::FieldsV1)?),
        None => None,
    };
    Ok(Obj::new()
        .string("manager", manager)
        .string("operation", operation)
        .string("apiVersion", api_version)
        .object_ptr("time", at.map(|t| time(Some(t))).transpose()?)
        .string("fieldsType", fields_type)
        .object_ptr("fieldsV1", fields)
        .string("subresource", subresource)
        .build())
}

/// `metav1.Time`: RFC 3339 in UTC with second precision, `null` when zero.
/// Go writes a zero Time as an empty message; a set one always has seconds.
pub(super) fn time(t: Option<Time>) -> Result<Value> {
    let Some(Time { seconds, nanos }) = t else { return Ok(Value::Null) };
    if seconds.is_none() && nanos.is_none() {
        return Ok(Value::Null);
    }
    let (seconds, nanos) = (seconds.unwrap_or(0), i64::from(nanos.unwrap_or(0)));
    // Go's time.Unix normalises nanoseconds outside [0, 1e9) into seconds.
    let whole = seconds.checked_add(nanos.div_euclid(1_000_000_000)).ok_or(ProtobufError::Time(seconds))?;
    let at = chrono::DateTime::from_timestamp(whole, 0).ok_or(ProtobufError::Time(seconds))?;
    Ok(Value::String(at.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

/// `intstr.IntOrString`: a JSON number or string, chosen by `type`.
pub(super) fn int_or_string(v: IntOrString) -> Result<Value> {
    let IntOrString { r#type, int_val, str_val } = v;
    match r#type.unwrap_or(0) {
        0 => Ok(int_val.unwrap_or(0).into()),
        1 => Ok(Value::String(str_val.unwrap_or_default())),
        other => Err(ProtobufError::IntOrString(other)),
    }
}

/// `resource.Quantity`: its canonical string.
pub(super) fn quantity(q: Quantity) -> Value {
    Value::String(q.string.unwrap_or_default())
}

/// `map[ResourceName]Quantity` (resource requests, limits, overhead).
pub(super) fn quantities(m: BTreeMap<String, Quantity>) -> BTreeMap<String, Value> {
    m.into_iter().map(|(k, q)| (k, quantity(q))).collect()
}

/// `metav1.LabelSelector`.
pub(super) fn label_selector(s: LabelSelector) -> Value {
    let LabelSelector { match_labels, match_expressions } = s;
    Obj::new()
        .map("matchLabels", match_labels)
        .list("matchExpressions", match_expressions.into_iter().map(label_selector_requirement).collect())
        .build()
}

pub(super) fn label_selector_requirement(r: LabelSelectorRequirement) -> Value {
    let LabelSelectorRequirement { key, operator, values } = r;
    Obj::new().string_always("key", key).string_always("operator", operator).strings("values", values).build()
}

/// `metav1.DeleteOptions` (its TypeMeta is added by the caller).
pub(super) fn delete_options(o: DeleteOptions) -> Result<Map<String, Value>> {
    let DeleteOptions {
        grace_period_seconds,
        preconditions,
        orphan_dependents,
        propagation_policy,
        dry_run,
        ignore_store_read_error_with_cluster_breaking_potential,
    } = o;
    Ok(Obj::new()
        .int_ptr("gracePeriodSeconds", grace_period_seconds)
        .object_ptr(
            "preconditions",
            preconditions.map(|Preconditions { uid, resource_version }| {
                Obj::new().string_ptr("uid", uid).string_ptr("resourceVersion", resource_version).build()
            }),
        )
        .bool_ptr("orphanDependents", orphan_dependents)
        .string_ptr("propagationPolicy", propagation_policy)
        .strings("dryRun", dry_run)
        .bool_ptr(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            ignore_store_read_error_with_cluster_breaking_potential,
        )
        .into_map())
}
