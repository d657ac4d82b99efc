//! Request dispatch: authentication, routing, and one module per verb family.

mod delete;
pub(crate) mod metrics;
mod proxy;
pub(crate) mod read;
mod reviews;
mod table;
mod watch;
mod write;

pub use write::create_object;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::Response;
use waggle_api::{Reason, StatusError};

use crate::authn::User;
use crate::request::Query;
use crate::response::{ApiResult, error};
use crate::routes::{Route, Target, route};
use crate::state::AppRef;
use crate::{discovery, openapi, system};

/// The single entry point of every request.
pub async fn dispatch(State(app): State<AppRef>, req: Request) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    app.metrics.requests.fetch_add(1, Relaxed);
    let resp = handle(app.clone(), req).await;
    if resp.status().is_client_error() || resp.status().is_server_error() {
        app.metrics.errors.fetch_add(1, Relaxed);
    }
    resp
}

async fn handle(app: AppRef, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    // Kept aside for subresources that switch protocols (exec, attach, portforward).
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let user = parts.extensions.get::<User>().cloned().unwrap_or_else(User::anonymous);
    let route = route(parts.uri.path());
    // What upstream lets anyone read (system:public-info-viewer).
    match route {
        Route::Version => return system::version(),
        Route::Health => return system::ok_text("ok"),
        _ => {}
    }
    if user.is_anonymous() {
        return error(&StatusError::new(Reason::Unauthorized, "Unauthorized"));
    }
    let q = Query::parse(parts.uri.query());
    let headers = parts.headers;
    let body = match axum::body::to_bytes(body, app.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return error(&StatusError::new(
                Reason::RequestEntityTooLarge,
                format!("the request body is larger than the limit of {} bytes", app.config.max_body_bytes),
            ));
        }
    };
    let method = parts.method;
    let result: ApiResult = match route {
        Route::Version | Route::Health => unreachable_public(),
        Route::Metrics => Ok(app.metrics.render(app.caches.store_watches.load(std::sync::atomic::Ordering::Relaxed))),
        Route::CoreRoot => Ok(discovery::core_root(&headers)),
        Route::GroupsRoot => Ok(discovery::groups_root(&headers)),
        Route::Group(g) => Ok(discovery::group(&g)),
        Route::ResourceList { group, version } => Ok(discovery::resource_list(&group, &version)),
        Route::OpenApiV3Index => Ok(openapi::index()),
        Route::OpenApiV3(path) => Ok(openapi::group_version(&path)),
        Route::OpenApiV2 => Ok(crate::openapi_v2::serve()),
        Route::NotFound => Ok(discovery::not_found()),
        Route::UnknownResource { plural } => Err(StatusError::new(
            Reason::NotFound,
            format!("the server could not find the requested resource ({plural})"),
        )
        .into()),
        Route::Resource(t)
            if t.subresource.as_deref().and_then(proxy::Streaming::of).is_some()
                && t.subresource.as_deref().is_some_and(|s| t.resource.subresource(s).is_some()) =>
        {
            let kind = t.subresource.as_deref().and_then(proxy::Streaming::of).unwrap_or(proxy::Streaming::Exec);
            proxy::pod_stream(&app, &t, &q, &headers, upgrade, kind).await
        }
        Route::Resource(t) => resource(app, &method, &t, &q, &headers, &body, &user).await,
    };
    match result {
        Ok(resp) => resp,
        Err(e) => error(&e.0),
    }
}

fn unreachable_public() -> ApiResult {
    Ok(system::ok_text("ok"))
}

async fn resource(
    app: AppRef,
    method: &Method,
    t: &Target,
    q: &Query,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    user: &User,
) -> ApiResult {
    let r = t.resource;
    if r.namespaced() && t.namespace.is_none() && (t.name.is_some() || *method != Method::GET) {
        return Err(StatusError::new(Reason::NotFound, "the server could not find the requested resource").into());
    }
    let watching = q.flag("watch");
    if r.group == metrics::GROUP {
        // Read-only, computed from the agents: no watch, no writes.
        return match (method.clone(), t.name.as_deref(), t.subresource.as_deref()) {
            (Method::GET, None, None) if !watching => metrics::list(&app, t, q).await,
            (Method::GET, Some(_), None) if !watching => metrics::get(&app, t).await,
            _ => Err(StatusError::new(
                Reason::MethodNotAllowed,
                format!("the server does not allow this method on the requested resource ({})", r.qualified_plural()),
            )
            .into()),
        };
    }
    match (method.clone(), t.name.as_deref(), t.subresource.as_deref()) {
        (Method::GET, None, None) if watching => watch::watch(app, t, q, headers).await,
        (Method::GET, None, None) => read::list(&app, t, q, headers).await,
        (Method::GET, Some(_), None) if watching => watch::watch(app, t, q, headers).await,
        (Method::GET, Some(_), None | Some("status")) => read::get(&app, t, q, headers).await,
        (Method::GET, Some(_), Some("scale")) if r.subresource("scale").is_some() => write::get_scale(&app, t).await,
        (Method::GET, Some(_), Some("log")) if r.subresource("log").is_some() => proxy::pod_log(&app, t, q).await,
        (Method::POST, _, _) => write::create(&app, t, q, headers, body, user).await,
        (Method::PUT, Some(_), _) => write::update(&app, t, q, headers, body).await,
        (Method::PATCH, Some(_), _) => write::patch(&app, t, q, headers, body).await,
        (Method::DELETE, Some(_), None) => delete::delete(&app, t, q, headers, body).await,
        (Method::DELETE, None, None) => delete::delete_collection(&app, t, q, headers, body).await,
        (m, _, sub) => Err(StatusError::new(
            Reason::MethodNotAllowed,
            format!("{m} is not supported on {}{}", r.plural, sub.map(|s| format!("/{s}")).unwrap_or_default()),
        )
        .into()),
    }
}
