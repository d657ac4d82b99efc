//! Review resources: answered from the request's user, never stored.

use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::authn::User;
use crate::request::decode_object;
use crate::response::{ApiResult, json as respond};

/// `SelfSubjectAccessReview`. Waggle does not enforce RBAC yet: every
/// authenticated user may do everything, and the review says so.
pub fn access_review(headers: &HeaderMap, body: &[u8], user: &User) -> ApiResult {
    let mut review = decode_object(headers, body)?;
    let masters = user.groups.iter().any(|g| g == "system:masters");
    let reason = if masters { "system:masters may do everything" } else { "waggle does not enforce RBAC yet" };
    review["status"] = json!({"allowed": true, "reason": reason});
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    Ok(respond(StatusCode::CREATED, &review))
}

/// `SelfSubjectReview` (`kubectl auth whoami`).
pub fn subject_review(user: &User) -> ApiResult {
    Ok(respond(
        StatusCode::CREATED,
        &json!({
            "kind": "SelfSubjectReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {"username": user.name, "groups": user.groups}},
        }),
    ))
}
