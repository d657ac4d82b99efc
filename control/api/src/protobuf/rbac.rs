//! `rbac.authorization.k8s.io/v1`: Role, ClusterRole, RoleBinding, ClusterRoleBinding.

use k8s_pb::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use serde_json::{Map, Value};

use super::json::{Obj, Result};
use super::message;
use super::meta::{label_selector, object_meta};

pub(super) fn role(raw: &[u8]) -> Result<Map<String, Value>> {
    let Role { metadata, rules } = message(raw)?;
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .list_always("rules", rules.into_iter().map(policy_rule).collect())
        .into_map())
}

pub(super) fn cluster_role(raw: &[u8]) -> Result<Map<String, Value>> {
    let ClusterRole { metadata, rules, aggregation_rule } = message(raw)?;
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .list_always("rules", rules.into_iter().map(policy_rule).collect())
        .object_ptr(
            "aggregationRule",
            aggregation_rule.map(|AggregationRule { cluster_role_selectors }| {
                Obj::new()
                    .list("clusterRoleSelectors", cluster_role_selectors.into_iter().map(label_selector).collect())
                    .build()
            }),
        )
        .into_map())
}

fn policy_rule(r: PolicyRule) -> Value {
    let PolicyRule { verbs, api_groups, resources, resource_names, non_resource_ur_ls } = r;
    Obj::new()
        .strings_always("verbs", verbs)
        .strings("apiGroups", api_groups)
        .strings("resources", resources)
        .strings("resourceNames", resource_names)
        .strings("nonResourceURLs", non_resource_ur_ls)
        .build()
}

pub(super) fn role_binding(raw: &[u8]) -> Result<Map<String, Value>> {
    let RoleBinding { metadata, subjects, role_ref } = message(raw)?;
    binding(metadata, subjects, role_ref)
}

pub(super) fn cluster_role_binding(raw: &[u8]) -> Result<Map<String, Value>> {
    let ClusterRoleBinding { metadata, subjects, role_ref } = message(raw)?;
    binding(metadata, subjects, role_ref)
}

fn binding(
    metadata: Option<k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    subjects: Vec<Subject>,
    role_ref: Option<RoleRef>,
) -> Result<Map<String, Value>> {
    let RoleRef { api_group, kind, name } = role_ref.unwrap_or_default();
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .list("subjects", subjects.into_iter().map(subject).collect())
        .object(
            "roleRef",
            Obj::new()
                .string_always("apiGroup", api_group)
                .string_always("kind", kind)
                .string_always("name", name)
                .build(),
        )
        .into_map())
}

fn subject(s: Subject) -> Value {
    let Subject { kind, api_group, name, namespace } = s;
    Obj::new()
        .string_always("kind", kind)
        .string("apiGroup", api_group)
        .string_always("name", name)
        .string("namespace", namespace)
        .build()
}
