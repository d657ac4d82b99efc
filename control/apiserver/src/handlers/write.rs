//! Writes: POST (create, binding, reviews), PUT (update) and PATCH, on the
//! main resource and its status and scale subresources.

use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};
use waggle_api::fieldmanager::Operation;
use waggle_api::patch::{self, PatchType};
use waggle_api::registry::lookup;
use waggle_api::{Reason, ResourceInfo, StatusError, meta};

use crate::admission::{WritePart, generate_suffix, prepare_create, prepare_update, unchanged};
use crate::alloc::held_by;
use crate::authn::User;
use crate::objects::parse_rv;
use crate::owners::{self, Writer};
use crate::request::{Query, content_type, decode_object};
use crate::response::{ApiResult, json as respond};
use crate::routes::Target;
use crate::state::App;

/// Attempts at a read-modify-write before giving up with 409.
const MAX_RETRIES: usize = 5;

/// The field manager of a write: `fieldManager`, else the User-Agent's
/// program name, as upstream defaults it.
pub fn field_manager(q: &Query, headers: &HeaderMap) -> String {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.to_owned();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

fn check_type_meta(r: &ResourceInfo, obj: &Value) -> Result<(), StatusError> {
    if let Some(kind) = obj.get("kind").and_then(Value::as_str).filter(|k| !k.is_empty())
        && kind != r.kind
    {
        return Err(StatusError::bad_request(format!(
            "the kind of the provided object ({kind}) does not match the resource ({})",
            r.kind
        )));
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str).filter(|a| !a.is_empty())
        && av != r.api_version()
    {
        return Err(StatusError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            r.api_version()
        )));
    }
    Ok(())
}

/// `fieldValidation`: what to do with fields the type does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    pub fn from_query(q: &Query) -> Result<Self, StatusError> {
        match q.get("fieldValidation") {
            // Upstream's default since 1.23.
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(StatusError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// Decodes `obj` against its built-in type: a type error is a 400; unknown
/// fields are rejected (Strict) or dropped, with a warning each (Warn).
pub fn check_fields(r: &ResourceInfo, mode: FieldValidation, obj: &mut Value) -> Result<Vec<String>, StatusError> {
    let decoded = waggle_api::schema::decode(r.group, r.kind, obj).map_err(StatusError::bad_request)?;
    let Some(decoded) = decoded.filter(|d| !d.unknown.is_empty()) else { return Ok(Vec::new()) };
    let messages: Vec<String> = decoded.unknown.iter().map(|p| format!("unknown field \"{p}\"")).collect();
    match mode {
        FieldValidation::Strict => Err(StatusError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            r.kind,
            r.version,
            r.kind,
            messages.join(", ")
        ))),
        FieldValidation::Warn => {
            waggle_api::schema::drop_fields(obj, &decoded.unknown);
            Ok(messages)
        }
        FieldValidation::Ignore => {
            waggle_api::schema::drop_fields(obj, &decoded.unknown);
            Ok(Vec::new())
        }
    }
}

/// Adds one `Warning: 299 - "…"` header per warning, as kubectl prints them.
pub fn with_warnings(mut resp: axum::response::Response, warnings: &[String]) -> axum::response::Response {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(axum::http::header::WARNING, v);
        }
    }
    resp
}

/// Upstream's answer when a namespaced object names another namespace.
fn check_namespace(r: &ResourceInfo, obj: &mut Value, ns: Option<&str>) -> Result<(), StatusError> {
    if !r.namespaced() {
        return Ok(());
    }
    let ns = ns.unwrap_or("default");
    match meta::namespace(obj) {
        Some(body_ns) if body_ns != ns => Err(StatusError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta::set_meta(obj, "namespace", Some(json!(ns)));
            Ok(())
        }
    }
}

/// The namespace must exist and not be terminating for creates in it.
/// Read from the watch cache, as upstream's NamespaceLifecycle admission
/// reads its informer; what the cache does not show as open (it may be
/// behind: a namespace created a moment ago) is read from the store.
async fn check_namespace_open(app: &App, ns: &str) -> Result<(), StatusError> {
    let Some(namespaces) = lookup("", "v1", "namespaces") else { return Ok(()) };
    let cached = app.caches.get(namespaces).await?.get_key(&crate::objects::key(namespaces, None, ns)).await;
    if cached.is_some_and(|n| n.field("status.phase") != "Terminating") {
        return Ok(());
    }
    match app.objects.try_get(namespaces, None, ns).await? {
        None => Err(StatusError::not_found(namespaces, ns)),
        Some(n) if n.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") => Err(StatusError::new(
            Reason::Forbidden,
            format!("unable to create new content in namespace {ns} because it is being terminated"),
        )),
        Some(_) => Ok(()),
    }
}

pub async fn create(app: &App, t: &Target, q: &Query, headers: &HeaderMap, body: &[u8], user: &User) -> ApiResult {
    let r = t.resource;
    match (r.plural, t.subresource.as_deref()) {
        ("pods", Some("binding")) => return bind(app, t, headers, body).await,
        ("selfsubjectaccessreviews", None) => return super::reviews::access_review(headers, body, user),
        ("selfsubjectreviews", None) => return super::reviews::subject_review(user),
        (_, Some(sub)) => {
            return Err(StatusError::new(
                Reason::MethodNotAllowed,
                format!("POST is not supported on {}/{sub}", r.plural),
            )
            .into());
        }
        _ => {}
    }
    if !r.has_verb("create") {
        return Err(
            StatusError::new(Reason::MethodNotAllowed, format!("create is not supported on {}", r.plural)).into()
        );
    }
    let mut obj = decode_object(headers, body)?;
    check_type_meta(r, &obj)?;
    check_namespace(r, &mut obj, t.namespace.as_deref())?;
    let warnings = check_fields(r, FieldValidation::from_query(q)?, &mut obj)?;
    let dry_run = q.dry_run()?;
    let created = create_object(app, r, obj, &Writer::update(field_manager(q, headers)), dry_run).await?;
    Ok(with_warnings(respond(StatusCode::CREATED, &created), &warnings))
}

/// Creates `obj` (already namespaced): name generation, admission, allocation, store.
pub async fn create_object(
    app: &App,
    r: &ResourceInfo,
    mut obj: Value,
    writer: &Writer,
    dry_run: bool,
) -> Result<Value, StatusError> {
    if meta::name(&obj).is_none() {
        match meta::meta_str(&obj, "generateName").filter(|g| !g.is_empty()) {
            Some(prefix) => {
                let name = format!("{prefix}{}", generate_suffix());
                meta::set_meta(&mut obj, "name", Some(json!(name)));
            }
            None => {
                return Err(StatusError::invalid(
                    r,
                    "",
                    vec![waggle_api::status::Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value: name or generateName is required".into(),
                        field: "metadata.name".into(),
                    }],
                ));
            }
        }
    }
    let name = meta::name(&obj).unwrap_or_default().to_owned();
    let ns = meta::namespace(&obj).map(str::to_owned);
    prepare_create(r, &mut obj)?;
    if writer.operation == Operation::Update {
        owners::record_update(r, None, &mut obj, writer, None)?;
    }
    if r.group.is_empty() && r.kind == "Pod" {
        let classes = priority_classes(app, &obj).await?;
        crate::admission::resolve_pod_priority(&mut obj, &classes)?;
    }
    if let Some(ns) = ns.as_deref().filter(|_| r.namespaced()) {
        check_namespace_open(app, ns).await?;
    }
    let mut held = None;
    if r.group.is_empty() && r.kind == "Service" {
        load_allocator(app).await?;
        match app.allocator.allocate(&mut obj, None).await {
            Ok(h) => held = Some(h),
            Err(causes) => return Err(StatusError::invalid(r, &name, causes)),
        }
    }
    if dry_run {
        if let Some(h) = &held {
            app.allocator.release(h).await;
        }
        return Ok(obj);
    }
    let result = app.objects.create(r, ns.as_deref(), &name, &obj).await;
    if result.is_err()
        && let Some(h) = &held
    {
        app.allocator.release(h).await;
    }
    result
}

/// The PriorityClasses a new pod's priority is resolved from: the watch
/// cache's, as upstream's Priority admission reads its informer, plus the
/// class the pod names when the cache does not have it yet (read from the store).
async fn priority_classes(app: &App, pod: &Value) -> Result<Vec<Value>, StatusError> {
    let Some(pc) = lookup("scheduling.k8s.io", "v1", "priorityclasses") else { return Ok(Vec::new()) };
    let (cached, _) = app.caches.get(pc).await?.list_prefix(&crate::objects::prefix(pc, None)).await;
    let wanted = pod.pointer("/spec/priorityClassName").and_then(Value::as_str).unwrap_or_default();
    let mut classes: Vec<Value> = cached.iter().map(|c| c.value()).collect();
    if !wanted.is_empty()
        && !cached.iter().any(|c| c.name() == wanted)
        && let Some(class) = app.objects.try_get(pc, None, wanted).await?
    {
        classes.push(class);
    }
    Ok(classes)
}

async fn load_allocator(app: &App) -> Result<(), StatusError> {
    let Some(services) = lookup("", "v1", "services") else { return Ok(()) };
    app.allocator
        .load_once(|| async {
            let page = app.objects.list(services, None, 0, 0, None).await?;
            Ok(page.items)
        })
        .await
}

/// `POST pods/<name>/binding`: sets the node once.
async fn bind(app: &App, t: &Target, headers: &HeaderMap, body: &[u8]) -> ApiResult {
    let binding = decode_object(headers, body)?;
    let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or_default().to_owned();
    if node.is_empty() {
        return Err(StatusError::bad_request("binding has no target node").into());
    }
    let r = t.resource;
    let name = t.name.as_deref().unwrap_or_default();
    let ns = t.namespace.as_deref();
    for _ in 0..MAX_RETRIES {
        let mut pod = app.objects.get(r, ns, name).await?;
        let rv = parse_rv(meta::resource_version(&pod).unwrap_or("0"))?;
        if let Some(existing) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            return Err(StatusError::new(
                Reason::Conflict,
                format!("pod {name} is already assigned to node \"{existing}\""),
            )
            .into());
        }
        if meta::is_deleting(&pod) {
            return Err(StatusError::new(
                Reason::Conflict,
                format!("pod {name} is being deleted, cannot be assigned to a host"),
            )
            .into());
        }
        pod["spec"]["nodeName"] = json!(node);
        let conditions = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
        conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": crate::admission::now_rfc3339()}));
        pod["status"]["conditions"] = json!(conditions);
        match app.objects.update(r, ns, name, &pod, rv).await {
            Ok(_) => {
                return Ok(respond(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ));
            }
            Err(e) if e.reason == Reason::Conflict => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StatusError::conflict(r, name).into())
}

/// Which part of the object a request addresses.
enum View {
    Whole(WritePart),
    Scale,
}

fn view_of(t: &Target) -> Result<View, StatusError> {
    match t.subresource.as_deref() {
        None => Ok(View::Whole(WritePart::Main)),
        Some("status") if t.resource.has_status_subresource() => Ok(View::Whole(WritePart::Status)),
        Some("scale") if t.resource.subresource("scale").is_some() => Ok(View::Scale),
        // The namespace controller removes `spec.finalizers` through `finalize`.
        Some("finalize") if t.resource.subresource("finalize").is_some() => Ok(View::Whole(WritePart::Main)),
        Some(other) => Err(StatusError::new(
            Reason::NotFound,
            format!("the server could not find the requested resource ({}/{other})", t.resource.plural),
        )),
    }
}

/// The autoscaling/v1 Scale of a workload.
pub fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .map(|s| {
            let mut parts: Vec<String> = s
                .get("matchLabels")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
                .unwrap_or_default();
            parts.sort();
            parts.join(",")
        })
        .unwrap_or_default();
    let m = obj.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"),
            "namespace": m.get("namespace"),
            "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"),
            "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

pub async fn get_scale(app: &App, t: &Target) -> ApiResult {
    let obj = app.objects.get(t.resource, t.namespace.as_deref(), t.name.as_deref().unwrap_or_default()).await?;
    Ok(respond(StatusCode::OK, &scale_of(&obj)))
}

/// PUT: replace (main resource or status), or set the scale.
pub async fn update(app: &App, t: &Target, q: &Query, headers: &HeaderMap, body: &[u8]) -> ApiResult {
    let view = view_of(t)?;
    let r = t.resource;
    let name = t.name.as_deref().unwrap_or_default().to_owned();
    let incoming = decode_object(headers, body)?;
    if let View::Whole(_) = view {
        check_type_meta(r, &incoming)?;
        if let Some(body_name) = meta::name(&incoming)
            && body_name != name
        {
            return Err(StatusError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            ))
            .into());
        }
    }
    let requested_rv = meta::resource_version(&incoming).map(parse_rv).transpose()?;
    let writer = Writer::update(field_manager(q, headers));
    let dry_run = q.dry_run()?;
    let validation = FieldValidation::from_query(q)?;
    write_loop(app, t, &view, requested_rv, &writer, dry_run, validation, |_current, view_obj| {
        let _ = view_obj;
        Ok(incoming.clone())
    })
    .await
}

/// PATCH: JSON, merge, strategic merge or apply.
pub async fn patch(app: &App, t: &Target, q: &Query, headers: &HeaderMap, body: &[u8]) -> ApiResult {
    let view = view_of(t)?;
    let ty = PatchType::from_content_type(&content_type(headers))
        .map_err(|e| StatusError::new(Reason::UnsupportedMediaType, e.to_string()))?;
    let patch_body: Value =
        serde_json::from_slice(body).map_err(|e| StatusError::bad_request(format!("error decoding patch: {e}")))?;
    let manager = field_manager(q, headers);
    let dry_run = q.dry_run()?;
    let validation = FieldValidation::from_query(q)?;
    let r = t.resource;
    let force = match q.get("force") {
        None | Some("") | Some("false") => false,
        Some("true") if ty == PatchType::Apply => true,
        Some("true") => {
            return Err(StatusError::bad_request(
                "force: Invalid value: true: may not be specified for non-apply patch",
            )
            .into());
        }
        Some(other) => return Err(StatusError::bad_request(format!("invalid force value {other:?}")).into()),
    };
    // A patch that names a resourceVersion makes it a precondition.
    let precondition =
        patch_body.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(parse_rv).transpose()?;
    if ty == PatchType::Apply {
        if q.get("fieldManager").is_none_or(str::is_empty) {
            return Err(StatusError::bad_request(
                "PATCH, application/apply-patch+yaml requires fieldManager to be set",
            )
            .into());
        }
        if !patch_body.is_object() {
            return Err(StatusError::bad_request("an applied configuration must be an object").into());
        }
        check_type_meta(r, &patch_body)?;
        let writer = Writer::apply(manager);
        let name = t.name.clone().unwrap_or_default();
        let exists = app.objects.try_get(r, t.namespace.as_deref(), &name).await?;
        if exists.is_none() && matches!(view, View::Whole(WritePart::Main)) {
            let mut config = patch_body.clone();
            check_namespace(r, &mut config, t.namespace.as_deref())?;
            let warnings = check_fields(r, validation, &mut config)?;
            let mut obj = owners::apply(r, &json!({}), &config, &writer, None, force)?;
            obj["apiVersion"] = json!(r.api_version());
            obj["kind"] = json!(r.kind);
            meta::set_meta(&mut obj, "name", Some(json!(name)));
            check_namespace(r, &mut obj, t.namespace.as_deref())?;
            let created = create_object(app, r, obj, &writer, dry_run).await?;
            return Ok(with_warnings(respond(StatusCode::CREATED, &created), &warnings));
        }
        let subresource = t.subresource.as_deref();
        return write_loop(app, t, &view, precondition, &writer, dry_run, validation, |current, view_obj| match view {
            View::Whole(_) => owners::apply(r, current, &patch_body, &writer, subresource, force),
            View::Scale => {
                let mut target = view_obj.clone();
                patch::strategic_merge_patch(&mut target, &patch_body)
                    .map_err(|e| StatusError::bad_request(e.to_string()))?;
                Ok(target)
            }
        })
        .await;
    }
    let writer = Writer::update(manager);
    write_loop(app, t, &view, precondition, &writer, dry_run, validation, |_current, view_obj| {
        let mut target = view_obj.clone();
        match ty {
            PatchType::Json => patch::json_patch(&mut target, &patch_body)
                .map_err(|e| StatusError::new(Reason::Invalid, e.to_string()))?,
            PatchType::Merge => patch::merge_patch(&mut target, &patch_body),
            PatchType::StrategicMerge | PatchType::Apply => patch::strategic_merge_patch(&mut target, &patch_body)
                .map_err(|e| StatusError::bad_request(e.to_string()))?,
        }
        Ok(target)
    })
    .await
}

/// Read, transform, write with the resourceVersion as guard; retries on a
/// conflict unless the client asked for a specific resourceVersion.
#[expect(clippy::too_many_arguments, reason = "one call site per verb; a struct would only rename them")]
async fn write_loop(
    app: &App,
    t: &Target,
    view: &View,
    precondition: Option<i64>,
    writer: &Writer,
    dry_run: bool,
    validation: FieldValidation,
    transform: impl Fn(&Value, &Value) -> Result<Value, StatusError>,
) -> ApiResult {
    let mut warnings = Vec::new();
    let result =
        write_loop_inner(app, t, view, precondition, writer, dry_run, validation, &mut warnings, transform).await;
    result.map(|resp| with_warnings(resp, &warnings))
}

#[expect(clippy::too_many_arguments, reason = "the body of write_loop")]
async fn write_loop_inner(
    app: &App,
    t: &Target,
    view: &View,
    precondition: Option<i64>,
    writer: &Writer,
    dry_run: bool,
    validation: FieldValidation,
    warnings: &mut Vec<String>,
    transform: impl Fn(&Value, &Value) -> Result<Value, StatusError>,
) -> ApiResult {
    let r = t.resource;
    let ns = t.namespace.as_deref();
    let name = t.name.as_deref().unwrap_or_default();
    for _ in 0..MAX_RETRIES {
        let current = app.objects.get(r, ns, name).await?;
        let current_rv = parse_rv(meta::resource_version(&current).unwrap_or("0"))?;
        let view_obj = match view {
            View::Scale => scale_of(&current),
            View::Whole(_) => current.clone(),
        };
        let mut changed = transform(&current, &view_obj)?;
        if let View::Whole(_) = view {
            *warnings = check_fields(r, validation, &mut changed)?;
        }
        // A resourceVersion in the result (from the body or the patch) is a precondition.
        let wanted_rv = match meta::resource_version(&changed) {
            Some(rv) if Some(rv) != meta::resource_version(&view_obj) => Some(parse_rv(rv)?),
            _ => precondition,
        };
        if let Some(rv) = wanted_rv
            && rv != current_rv
        {
            return Err(StatusError::conflict(r, name).into());
        }
        let new = match view {
            View::Scale => {
                let replicas = changed.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
                if replicas.as_i64().is_none_or(|n| n < 0) {
                    return Err(StatusError::invalid(
                        r,
                        name,
                        vec![waggle_api::status::Cause {
                            reason: "FieldValueInvalid".into(),
                            message: format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                            field: "spec.replicas".into(),
                        }],
                    )
                    .into());
                }
                let mut obj = current.clone();
                obj["spec"]["replicas"] = replicas;
                prepare_update(r, &current, obj, WritePart::Main)?
            }
            View::Whole(part) => prepare_update(r, &current, changed, *part)?,
        };
        let mut new = new;
        if writer.operation == Operation::Update || matches!(view, View::Scale) {
            owners::record_update(r, Some(&current), &mut new, writer, t.subresource.as_deref())?;
        }
        let render = |obj: &Value| match view {
            View::Scale => scale_of(obj),
            View::Whole(_) => obj.clone(),
        };
        if unchanged(&current, &new) || dry_run {
            return Ok(respond(StatusCode::OK, &render(if dry_run { &new } else { &current })));
        }
        // Finalizers all removed from an object being deleted: it goes now.
        if meta::is_deleting(&new) && meta::finalizers(&new).is_empty() && !has_spec_finalizers(&new) {
            match app.objects.delete(r, ns, name, current_rv).await {
                Ok(_) => {
                    release_service(app, r, &current).await;
                    return Ok(respond(StatusCode::OK, &render(&new)));
                }
                Err(e) if e.reason == Reason::Conflict && wanted_rv.is_none() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        match app.objects.update(r, ns, name, &new, current_rv).await {
            Ok(updated) => return Ok(respond(StatusCode::OK, &render(&updated))),
            Err(e) if e.reason == Reason::Conflict && wanted_rv.is_none() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StatusError::conflict(r, name).into())
}

/// Namespaces keep `spec.finalizers` until the namespace controller is done.
pub fn has_spec_finalizers(obj: &Value) -> bool {
    obj.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty())
}

/// Gives back a deleted Service's ClusterIP and NodePorts.
pub async fn release_service(app: &App, r: &ResourceInfo, obj: &Value) {
    if r.group.is_empty() && r.kind == "Service" {
        app.allocator.release(&held_by(obj)).await;
    }
}
