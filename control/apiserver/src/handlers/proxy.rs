//! Subresources answered by the pod's node agent: `pods/log` is proxied to
//! the agent's `/containerLogs/<ns>/<pod>/<container>`, streaming (follow);
//! `pods/exec`, `pods/attach` and `pods/portforward` upgrades (WebSocket or
//! SPDY/3.1) to its `/exec/…`, `/attach/…` and `/portForward/…`, after which
//! the bytes are copied both ways untouched: the agent speaks the protocols.

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use waggle_api::registry::lookup;
use waggle_api::{Reason, StatusError};

use crate::request::Query;
use crate::response::ApiResult;
use crate::routes::Target;
use crate::state::App;

/// Query parameters of `pods/log` the agent understands.
const LOG_PARAMS: &[&str] =
    &["follow", "tailLines", "previous", "limitBytes", "timestamps", "sinceSeconds", "sinceTime"];

/// The container a request means: `container=`, or the pod's only one.
fn container_of(pod: &Value, name: &str, q: &Query) -> Result<String, StatusError> {
    if let Some(c) = q.get("container").filter(|c| !c.is_empty()) {
        return Ok(c.to_owned());
    }
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c.get("name")?.as_str()).collect())
        .unwrap_or_default();
    match names.as_slice() {
        [one] => Ok((*one).to_owned()),
        _ => Err(StatusError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            names.join(" ")
        ))),
    }
}

/// The agent's address for `node`: its InternalIP and daemon endpoint port.
async fn agent_address(app: &App, node: &str) -> Result<String, StatusError> {
    let nodes = lookup("", "v1", "nodes").ok_or_else(|| StatusError::internal("nodes not registered"))?;
    let obj = app.objects.get(nodes, None, node).await?;
    let ip = obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
        .and_then(|x| x.get("address")?.as_str())
        .ok_or_else(|| StatusError::new(Reason::ServiceUnavailable, format!("node {node} has no InternalIP")))?
        .to_owned();
    let port = obj.pointer("/status/daemonEndpoints/kubeletEndpoint/Port").and_then(Value::as_u64).unwrap_or(10250);
    Ok(if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") })
}

/// An HTTP/1.1 connection to the agent of the pod's node, and the pod's
/// container as the request names it.
struct AgentConn {
    sender: hyper::client::conn::http1::SendRequest<Body>,
    addr: String,
    node: String,
    namespace: String,
    pod: String,
    container: String,
}

async fn connect(app: &App, t: &Target, q: &Query) -> Result<AgentConn, StatusError> {
    connect_to(app, t, q, true).await
}

/// As [`connect`]; without `needs_container` (port-forward) no container is
/// chosen.
async fn connect_to(app: &App, t: &Target, q: &Query, needs_container: bool) -> Result<AgentConn, StatusError> {
    let name = t.name.as_deref().unwrap_or_default();
    let ns = t.namespace.as_deref().unwrap_or("default");
    let pod = app.objects.get(t.resource, Some(ns), name).await?;
    let container = if needs_container { container_of(&pod, name, q)? } else { String::new() };
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            StatusError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: the pod is not scheduled yet"
            ))
        })?
        .to_owned();
    let (sender, addr) = dial(app, &node).await?;
    Ok(AgentConn { sender, addr, node, namespace: ns.to_owned(), pod: name.to_owned(), container })
}

/// An HTTP/1.1 connection (TLS, the API server's kubelet-client identity) to
/// `node`'s agent, and the agent's address.
async fn dial(app: &App, node: &str) -> Result<(hyper::client::conn::http1::SendRequest<Body>, String), StatusError> {
    let addr = agent_address(app, node).await?;
    let unavailable = |what: String| StatusError::new(Reason::ServiceUnavailable, what);
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| unavailable(format!("connecting to the agent of node {node} at {addr}: {e}")))?;
    let server_name = rustls::pki_types::ServerName::try_from(node.to_owned())
        .unwrap_or_else(|_| rustls::pki_types::ServerName::try_from("agent").expect("a valid DNS name"));
    let tls = tokio_rustls::TlsConnector::from(app.kubelet_tls.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| unavailable(format!("TLS to the agent of node {node}: {e}")))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| unavailable(format!("HTTP to the agent of node {node}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "agent connection ended");
        }
    });
    Ok((sender, addr))
}

/// `GET path` on `node`'s agent: the body of a 200 answer, within 10 s.
pub async fn agent_get(app: &App, node: &str, path: &str) -> Result<bytes::Bytes, StatusError> {
    use http_body_util::BodyExt as _;
    let unavailable = |what: String| StatusError::new(Reason::ServiceUnavailable, what);
    let fetch = async {
        let (mut sender, addr) = dial(app, node).await?;
        let req = Request::get(path)
            .header(header::HOST, addr.as_str())
            .body(Body::empty())
            .map_err(|e| StatusError::internal(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| unavailable(format!("agent of node {node}: {e}")))?;
        if resp.status() != StatusCode::OK {
            return Err(unavailable(format!("agent of node {node} answered {} to {path}", resp.status())));
        }
        let body = resp.into_body().collect().await.map_err(|e| unavailable(format!("agent of node {node}: {e}")))?;
        Ok(body.to_bytes())
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), fetch)
        .await
        .map_err(|_| unavailable(format!("the agent of node {node} did not answer {path} within 10 s")))?
}

pub async fn pod_log(app: &App, t: &Target, q: &Query) -> ApiResult {
    let mut c = connect(app, t, q).await?;
    let mut query: Vec<String> = Vec::new();
    for p in LOG_PARAMS {
        if let Some(v) = q.get(p) {
            query.push(format!("{p}={}", url_escape(v)));
        }
    }
    let path = format!("/containerLogs/{}/{}/{}?{}", c.namespace, c.pod, c.container, query.join("&"));
    let req = Request::get(&path)
        .header(header::HOST, c.addr.as_str())
        .body(Body::empty())
        .map_err(|e| StatusError::internal(format!("building the agent request: {e}")))?;
    let resp = c.sender.send_request(req).await.map_err(|e| {
        StatusError::new(Reason::ServiceUnavailable, format!("asking the agent of node {}: {e}", c.node))
    })?;
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = if parts.status.is_success() { StatusCode::OK } else { parts.status };
    let ct = parts.headers.get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static("text/plain"));
    out.headers_mut().insert(header::CONTENT_TYPE, ct);
    Ok(out)
}

/// Headers of a WebSocket or SPDY handshake passed through in both
/// directions.
const UPGRADE_HEADERS: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-accept",
    "x-stream-protocol-version",
];

/// The pod subresources that switch protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Streaming {
    Exec,
    Attach,
    PortForward,
}

impl Streaming {
    pub fn of(subresource: &str) -> Option<Streaming> {
        match subresource {
            "exec" => Some(Streaming::Exec),
            "attach" => Some(Streaming::Attach),
            "portforward" => Some(Streaming::PortForward),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Streaming::Exec => "exec",
            Streaming::Attach => "attach",
            Streaming::PortForward => "port-forward",
        }
    }
}

/// `pods/exec`, `pods/attach` and `pods/portforward`: the upgrade (WebSocket
/// from kubectl ≥ 1.30, SPDY/3.1 from older ones and every port-forward) is
/// forwarded to the agent, and once both sides switched protocols the bytes
/// are copied both ways.
pub async fn pod_stream(
    app: &App,
    t: &Target,
    q: &Query,
    headers: &axum::http::HeaderMap,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    kind: Streaming,
) -> ApiResult {
    let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let known = upgrade.eq_ignore_ascii_case("websocket") || upgrade.eq_ignore_ascii_case("SPDY/3.1");
    let Some(client_upgrade) = client_upgrade.filter(|_| known) else {
        return Err(StatusError::bad_request(format!(
            "{} needs an upgrade to WebSocket or SPDY/3.1 (Upgrade: {upgrade:?})",
            kind.name()
        ))
        .into());
    };
    let mut c = connect_to(app, t, q, kind != Streaming::PortForward).await?;
    let path = match kind {
        Streaming::Exec => format!("/exec/{}/{}/{}?{}", c.namespace, c.pod, c.container, q.raw),
        Streaming::Attach => format!("/attach/{}/{}/{}?{}", c.namespace, c.pod, c.container, q.raw),
        Streaming::PortForward => format!("/portForward/{}/{}?{}", c.namespace, c.pod, q.raw),
    };
    let mut req = Request::get(&path).header(header::HOST, c.addr.as_str());
    for h in UPGRADE_HEADERS {
        for v in headers.get_all(*h) {
            req = req.header(*h, v);
        }
    }
    let req = req.body(Body::empty()).map_err(|e| StatusError::internal(format!("building the agent request: {e}")))?;
    let mut resp = c.sender.send_request(req).await.map_err(|e| {
        StatusError::new(Reason::ServiceUnavailable, format!("asking the agent of node {}: {e}", c.node))
    })?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let (_, body) = resp.into_parts();
        let mut out = Response::new(Body::new(body));
        *out.status_mut() = status;
        return Ok(out);
    }
    let agent_upgrade = hyper::upgrade::on(&mut resp);
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for h in UPGRADE_HEADERS {
        for v in resp.headers().get_all(*h) {
            out.headers_mut().append(*h, v.clone());
        }
    }
    let name = kind.name();
    tokio::spawn(async move {
        let (client, agent) = match tokio::try_join!(client_upgrade, agent_upgrade) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "{name} upgrade failed");
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut agent = hyper_util::rt::TokioIo::new(agent);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut agent).await {
            tracing::debug!(error = %e, "{name} stream ended");
        }
    });
    Ok(out)
}

/// Percent-escapes a query value.
fn url_escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
