//! `authorization.k8s.io/v1`: SelfSubjectAccessReview (`kubectl auth can-i`).

use k8s_pb::api::authorization::v1::{
    FieldSelectorAttributes, LabelSelectorAttributes, NonResourceAttributes, ResourceAttributes,
    SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_pb::apimachinery::pkg::apis::meta::v1::FieldSelectorRequirement;
use serde_json::{Map, Value, json};

use super::json::{Obj, Result};
use super::message;
use super::meta::{label_selector_requirement, object_meta};

pub(super) fn self_subject_access_review(raw: &[u8]) -> Result<Map<String, Value>> {
    let SelfSubjectAccessReview { metadata, spec, status: _ } = message(raw)?;
    let SelfSubjectAccessReviewSpec { resource_attributes, non_resource_attributes } = spec.unwrap_or_default();
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .object(
            "spec",
            Obj::new()
                .object_ptr("resourceAttributes", resource_attributes.map(resource_attributes_json))
                .object_ptr(
                    "nonResourceAttributes",
                    non_resource_attributes.map(|NonResourceAttributes { path, verb }| {
                        Obj::new().string("path", path).string("verb", verb).build()
                    }),
                )
                .build(),
        )
        // SubjectAccessReviewStatus.allowed has no omitempty.
        .object("status", json!({"allowed": false}))
        .into_map())
}

fn resource_attributes_json(a: ResourceAttributes) -> Value {
    let ResourceAttributes {
        namespace,
        verb,
        group,
        version,
        resource,
        subresource,
        name,
        field_selector,
        label_selector,
    } = a;
    Obj::new()
        .string("namespace", namespace)
        .string("verb", verb)
        .string("group", group)
        .string("version", version)
        .string("resource", resource)
        .string("subresource", subresource)
        .string("name", name)
        .object_ptr(
            "fieldSelector",
            field_selector.map(|FieldSelectorAttributes { raw_selector, requirements }| {
                Obj::new()
                    .string("rawSelector", raw_selector)
                    .list(
                        "requirements",
                        requirements
                            .into_iter()
                            .map(|FieldSelectorRequirement { key, operator, values }| {
                                Obj::new()
                                    .string_always("key", key)
                                    .string_always("operator", operator)
                                    .strings("values", values)
                                    .build()
                            })
                            .collect(),
                    )
                    .build()
            }),
        )
        .object_ptr(
            "labelSelector",
            label_selector.map(|LabelSelectorAttributes { raw_selector, requirements }| {
                Obj::new()
                    .string("rawSelector", raw_selector)
                    .list("requirements", requirements.into_iter().map(label_selector_requirement).collect())
                    .build()
            }),
        )
        .build()
}
