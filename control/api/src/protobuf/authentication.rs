//! `authentication.k8s.io/v1`: SelfSubjectReview (`kubectl auth whoami`) and
//! TokenRequest (`kubectl create token`).

use k8s_pb::api::authentication::v1::{BoundObjectReference, SelfSubjectReview, TokenRequest, TokenRequestSpec};
use serde_json::{Map, Value, json};

use super::json::{Obj, Result};
use super::message;
use super::meta::object_meta;

pub(super) fn self_subject_review(raw: &[u8]) -> Result<Map<String, Value>> {
    let SelfSubjectReview { metadata, status: _ } = message(raw)?;
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        // SelfSubjectReviewStatus.userInfo is a non-pointer struct.
        .object("status", json!({"userInfo": {}}))
        .into_map())
}

pub(super) fn token_request(raw: &[u8]) -> Result<Map<String, Value>> {
    let TokenRequest { metadata, spec, status: _ } = message(raw)?;
    let TokenRequestSpec { audiences, expiration_seconds, bound_object_ref } = spec.unwrap_or_default();
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .object(
            "spec",
            Obj::new()
                .strings_always("audiences", audiences)
                .int_ptr("expirationSeconds", expiration_seconds)
                // `*BoundObjectReference` without omitempty: `null` when unset.
                .object(
                    "boundObjectRef",
                    bound_object_ref.map_or(Value::Null, |BoundObjectReference { kind, api_version, name, u_id }| {
                        Obj::new()
                            .string("kind", kind)
                            .string("apiVersion", api_version)
                            .string("name", name)
                            .string("uid", u_id)
                            .build()
                    }),
                )
                .build(),
        )
        // TokenRequestStatus: `token` and a non-pointer `expirationTimestamp`.
        .object("status", json!({"token": "", "expirationTimestamp": null}))
        .into_map())
}
