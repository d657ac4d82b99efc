//! DELETE of one object and of a collection: preconditions, graceful pod
//! deletion, finalizers, propagation policies.
//!
//! Dependents are garbage-collected by the controller manager (ownerReferences),
//! and namespaces are emptied by the namespace controller, as upstream splits it:
//! the API server only marks objects (`deletionTimestamp`, the `orphan` and
//! `foregroundDeletion` finalizers, namespace phase `Terminating`).

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use waggle_api::{Reason, ResourceInfo, StatusError, meta};

use super::read::{Selectors, list_objects};
use super::write::{has_spec_finalizers, release_service};
use crate::admission::now_rfc3339;
use crate::objects::parse_rv;
use crate::request::{Query, decode_object};
use crate::response::{ApiResult, json as respond};
use crate::routes::Target;
use crate::state::App;

/// The parts of DeleteOptions waggle honours.
#[derive(Debug, Default)]
struct DeleteOptions {
    grace_period: Option<i64>,
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

fn delete_options(q: &Query, headers: &HeaderMap, body: &[u8]) -> Result<DeleteOptions, StatusError> {
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { decode_object(headers, body)? };
    let mut opts = DeleteOptions {
        grace_period: body.get("gracePeriodSeconds").and_then(Value::as_i64),
        propagation: body.get("propagationPolicy").and_then(Value::as_str).map(str::to_owned),
        uid: body.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_owned),
        resource_version: body.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_owned),
        dry_run: body.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == "All")),
    };
    if let Some(g) = q.int("gracePeriodSeconds")? {
        opts.grace_period = Some(g);
    }
    if let Some(p) = q.get("propagationPolicy") {
        opts.propagation = Some(p.to_owned());
    }
    opts.dry_run |= q.dry_run()?;
    if let Some(p) = &opts.propagation
        && !["Background", "Foreground", "Orphan"].contains(&p.as_str())
    {
        return Err(StatusError::bad_request(format!(
            "propagationPolicy {p:?} is not supported: supported values are \"Background\", \"Foreground\", \"Orphan\""
        )));
    }
    Ok(opts)
}

pub async fn delete(app: &App, t: &Target, q: &Query, headers: &HeaderMap, body: &[u8]) -> ApiResult {
    let r = t.resource;
    if !r.has_verb("delete") {
        return Err(
            StatusError::new(Reason::MethodNotAllowed, format!("delete is not supported on {}", r.plural)).into()
        );
    }
    let opts = delete_options(q, headers, body)?;
    let name = t.name.as_deref().unwrap_or_default();
    let (code, obj) = delete_one(app, r, t.namespace.as_deref(), name, &opts).await?;
    Ok(respond(code, &obj))
}

async fn delete_one(
    app: &App,
    r: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> Result<(StatusCode, Value), StatusError> {
    for _ in 0..5 {
        let current = app.objects.get(r, ns, name).await?;
        let rv = parse_rv(meta::resource_version(&current).unwrap_or("0"))?;
        if let Some(uid) = &opts.uid
            && Some(uid.as_str()) != meta::uid(&current)
        {
            return Err(StatusError::new(
                Reason::Conflict,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta::uid(&current).unwrap_or_default()
                ),
            ));
        }
        if let Some(want) = &opts.resource_version
            && Some(want.as_str()) != meta::resource_version(&current)
        {
            return Err(StatusError::new(
                Reason::Conflict,
                format!(
                    "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}",
                    meta::resource_version(&current).unwrap_or_default()
                ),
            ));
        }
        let mut marked = current.clone();
        let mut must_wait = false;
        let mut finalizers = meta::finalizers(&current);
        match opts.propagation.as_deref() {
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                finalizers.push("orphan".into());
                must_wait = true;
            }
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.push("foregroundDeletion".into());
                must_wait = true;
            }
            _ => {}
        }
        must_wait |= !finalizers.is_empty();
        // Namespaces: Terminating until the namespace controller has emptied them.
        if r.group.is_empty() && r.kind == "Namespace" && has_spec_finalizers(&current) {
            marked["status"]["phase"] = json!("Terminating");
            must_wait = true;
        }
        // Pods on a node end gracefully: the node's agent finishes the delete.
        let grace = pod_grace(r, &current, opts.grace_period);
        if grace > 0 {
            must_wait = true;
        }
        if must_wait {
            if opts.dry_run {
                return Ok((StatusCode::OK, marked));
            }
            if meta::is_deleting(&current) && finalizers == meta::finalizers(&current) && grace == 0 {
                return Ok((StatusCode::OK, current));
            }
            meta::set_meta(&mut marked, "finalizers", Some(json!(finalizers)));
            if !meta::is_deleting(&current) {
                meta::set_meta(&mut marked, "deletionTimestamp", Some(json!(now_rfc3339())));
            }
            meta::set_meta(&mut marked, "deletionGracePeriodSeconds", Some(json!(grace)));
            match app.objects.update(r, ns, name, &marked, rv).await {
                Ok(updated) => return Ok((StatusCode::OK, updated)),
                Err(e) if e.reason == Reason::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        if opts.dry_run {
            return Ok((StatusCode::OK, current));
        }
        match app.objects.delete(r, ns, name, rv).await {
            Ok(_) => {
                release_service(app, r, &current).await;
                return Ok((StatusCode::OK, current));
            }
            Err(e) if e.reason == Reason::Conflict => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StatusError::conflict(r, name))
}

/// Seconds a pod gets to stop: 0 for pods not on a node or already finished.
fn pod_grace(r: &ResourceInfo, pod: &Value, requested: Option<i64>) -> i64 {
    if !(r.group.is_empty() && r.kind == "Pod") {
        return 0;
    }
    let on_node = pod.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    let finished = matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"));
    if !on_node || finished {
        return 0;
    }
    let spec_grace = pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30);
    let current = pod.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
    let g = requested.unwrap_or(spec_grace).max(0);
    // A second delete may shorten the grace period, never lengthen it.
    match current {
        Some(c) if meta::is_deleting(pod) => g.min(c),
        _ => g,
    }
}

pub async fn delete_collection(app: &App, t: &Target, q: &Query, headers: &HeaderMap, body: &[u8]) -> ApiResult {
    let r = t.resource;
    if !r.has_verb("deletecollection") {
        return Err(StatusError::new(
            Reason::MethodNotAllowed,
            format!("deletecollection is not supported on {}", r.plural),
        )
        .into());
    }
    let opts = delete_options(q, headers, body)?;
    let selectors = Selectors::parse(r, q)?;
    let listed = list_objects(app, t, &Query::default(), &selectors).await?;
    let mut items = Vec::new();
    for obj in listed.items {
        match delete_one(app, r, obj.namespace(), obj.name(), &opts).await {
            Ok((_, o)) => items.push(o),
            Err(e) if e.reason == Reason::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(respond(
        StatusCode::OK,
        &json!({"kind": r.list_kind(), "apiVersion": r.api_version(), "metadata": {}, "items": items}),
    ))
}
