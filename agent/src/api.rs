//! The agent's HTTPS API, at the kubelet's paths:
//! - `GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&previous=&limitBytes=`
//!   (the API server proxies `pods/{name}/log` here);
//! - `/exec/{namespace}/{pod}/{container}?command=…&stdin=&stdout=&stderr=&tty=` and
//!   `/attach/{namespace}/{pod}/{container}?stdin=&stdout=&stderr=&tty=`, upgraded to a WebSocket
//!   (`v5.channel.k8s.io` or `v4.channel.k8s.io`) or to SPDY/3.1 (`v4.channel.k8s.io`);
//! - `/portForward/{namespace}/{pod}` upgraded to SPDY/3.1 (`portforward.k8s.io`) or to a
//!   WebSocket tunnelling it (`SPDY/3.1+portforward.k8s.io`).
//! - `GET /stats/summary`: CPU and memory of the node and its pods (the API server's metrics.k8s.io).
//! - `GET /metrics`: the Service proxy's Prometheus metrics (when it runs).

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::cri::{ContainerRuntime, ContainerState};
use crate::network::PodNetwork;
use crate::pod::attempts;
use crate::streaming::Wanted;
use crate::streaming::attach::AttachTarget;

type Body = BoxBody<Bytes, Infallible>;

/// What the agent API serves from.
#[derive(Debug)]
pub struct Sources {
    pub store: Store<Pod>,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub node: String,
    /// containerd itself, for streaming exec.
    pub exec: Option<(waggle_runtime::Runtime, PathBuf)>,
    /// Pods' network namespaces, for port-forward.
    pub network: Option<Arc<dyn PodNetwork>>,
    /// Resource usage, for `/stats/summary`.
    pub stats: crate::stats::Stats,
    /// The Service proxy's metrics, when it runs.
    pub proxy_metrics: Option<Arc<crate::proxy::ProxyMetrics>>,
}

type Ctx = Sources;

/// Serves until the listener fails. With `tls`, every connection must
/// present a client certificate of the cluster CA, and only allowed names get
/// an answer (others get 403).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<(Arc<rustls::ServerConfig>, crate::tls::TlsSettings)>,
    sources: Sources,
) -> Result<(), crate::Error> {
    let addr = listener.local_addr().map_err(crate::Error::io("reading the agent API's address"))?;
    tracing::info!(%addr, https = tls.is_some(), "agent API listening");
    let ctx = Arc::new(sources);
    let acceptor = tls.as_ref().map(|(c, _)| tokio_rustls::TlsAcceptor::from(c.clone()));
    let settings = tls.map(|(_, s)| Arc::new(s));
    loop {
        let (stream, peer) = listener.accept().await.map_err(crate::Error::io("accepting a connection"))?;
        let (ctx, acceptor, settings) = (ctx.clone(), acceptor.clone(), settings.clone());
        tokio::spawn(async move {
            match (acceptor, settings) {
                (Some(acceptor), Some(settings)) => {
                    let tls = match acceptor.accept(stream).await {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake with an agent API client failed");
                            return;
                        }
                    };
                    let who =
                        tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(crate::tls::identity);
                    let permitted = who.as_ref().is_some_and(|(cn, orgs)| crate::tls::allowed(&settings, cn, orgs));
                    let user = who.map(|(cn, _)| cn).unwrap_or_default();
                    serve_connection(tls, ctx, permitted, user).await;
                }
                _ => serve_connection(stream, ctx, true, String::new()).await,
            }
        });
    }
}

async fn serve_connection<S>(stream: S, ctx: Arc<Ctx>, permitted: bool, user: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        let user = user.clone();
        async move {
            if !permitted {
                return Ok::<_, Infallible>(text(
                    StatusCode::FORBIDDEN,
                    format!("user {user:?} may not use the agent API"),
                ));
            }
            Ok::<_, Infallible>(handle(&ctx, req).await)
        }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).with_upgrades().await {
        tracing::debug!(error = %e, "agent API connection ended");
    }
}

fn text(code: StatusCode, msg: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(msg)).boxed());
    *r.status_mut() = code;
    r
}

/// Every `key=value` of the query, decoded as Go's url.ParseQuery does.
fn query_pairs(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (!k.is_empty()).then(|| (percent_decode(k), percent_decode(v)))
        })
        .collect()
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    query_pairs(req).into_iter().collect()
}

/// `%XX` escapes and `+` as space.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Streaming upgrades come as POST (SPDY, as upstream's kubelet takes
    // them) or GET (WebSocket); everything else is GET.
    let streaming = matches!(parts.first(), Some(&"exec" | &"attach" | &"portForward"));
    if req.method() != hyper::Method::GET && !(streaming && req.method() == hyper::Method::POST) {
        return text(StatusCode::METHOD_NOT_ALLOWED, format!("{} is not served on {path}", req.method()));
    }
    match parts.as_slice() {
        ["healthz"] => text(StatusCode::OK, "ok".into()),
        ["stats", "summary"] => match serde_json::to_vec(&ctx.stats.summary()) {
            Ok(body) => {
                let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
                r.headers_mut()
                    .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
                r
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        ["metrics"] => match &ctx.proxy_metrics {
            Some(m) => {
                let mut r = text(StatusCode::OK, m.render());
                if let Ok(v) = hyper::header::HeaderValue::from_str(crate::proxy::metrics::CONTENT_TYPE) {
                    r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                }
                r
            }
            None => text(StatusCode::NOT_FOUND, "the Service proxy does not run on this node".into()),
        },
        ["containerLogs", ns, pod, container] => {
            let q = query(&req);
            logs(ctx, ns, pod, container, &q).await
        }
        ["exec", ns, pod, container] => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            exec(ctx, req, &ns, &pod, &container).await
        }
        ["attach", ns, pod, container] => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            attach(ctx, req, &ns, &pod, &container).await
        }
        ["portForward", ns, pod] => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            port_forward(ctx, req, &ns, &pod).await
        }
        _ => text(StatusCode::NOT_FOUND, format!("{path} is not served by the waggle agent")),
    }
}

/// The protocol an upgrade request settled on.
enum Transport {
    /// WebSocket with this subprotocol; the `Sec-WebSocket-Accept` value.
    WebSocket(&'static str, String),
    /// SPDY/3.1 with this `X-Stream-Protocol-Version`.
    Spdy(&'static str),
}

impl Transport {
    /// `websocket:<subprotocol>` or `SPDY/3.1:<protocol>`, for the logs.
    fn protocol(&self) -> String {
        match self {
            Transport::WebSocket(p, _) => format!("websocket:{p}"),
            Transport::Spdy(p) => format!("{}:{p}", crate::spdy::UPGRADE),
        }
    }
}

/// Picks the transport from the upgrade request's headers.
fn negotiate(
    req: &Request<Incoming>,
    websocket: &[&'static str],
    spdy: &[&'static str],
) -> Result<Transport, Box<Response<Body>>> {
    let header = |k: &str| req.headers().get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let upgrade = header("upgrade");
    if upgrade.eq_ignore_ascii_case("websocket") {
        let offered = header("sec-websocket-protocol");
        let Some(p) = crate::streaming::websocket::choose_protocol(&offered, websocket) else {
            return Err(Box::new(text(
                StatusCode::BAD_REQUEST,
                format!("none of the WebSocket subprotocols {offered:?} is served (served: {})", websocket.join(", ")),
            )));
        };
        return Ok(Transport::WebSocket(
            p,
            crate::streaming::websocket::accept_key(header("sec-websocket-key").as_bytes()),
        ));
    }
    if upgrade.eq_ignore_ascii_case(crate::spdy::UPGRADE) {
        let offers = req.headers().get_all(crate::spdy::PROTOCOL_HEADER).iter().filter_map(|v| v.to_str().ok());
        let Some(p) = crate::spdy::choose_protocol(offers, spdy) else {
            return Err(Box::new(text(
                StatusCode::FORBIDDEN,
                format!("unable to upgrade: unable to negotiate protocol: the server serves {}", spdy.join(", ")),
            )));
        };
        return Ok(Transport::Spdy(p));
    }
    Err(Box::new(text(
        StatusCode::BAD_REQUEST,
        format!("upgrade {upgrade:?} is not supported (websocket or SPDY/3.1)"),
    )))
}

/// The 101 answer for `t`.
fn switching(t: &Transport) -> Response<Body> {
    use hyper::header::HeaderValue;
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("connection", HeaderValue::from_static("Upgrade"));
    match t {
        Transport::WebSocket(protocol, accept) => {
            h.insert("upgrade", HeaderValue::from_static("websocket"));
            if let Ok(v) = HeaderValue::from_str(accept) {
                h.insert("sec-websocket-accept", v);
            }
            h.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
        }
        Transport::Spdy(protocol) => {
            h.insert("upgrade", HeaderValue::from_static(crate::spdy::UPGRADE));
            h.insert(crate::spdy::PROTOCOL_HEADER, HeaderValue::from_static(protocol));
        }
    }
    r
}

/// Runs `serve` on the connection once it has switched protocols.
fn on_upgrade<F, Fut>(req: Request<Incoming>, serve: F)
where
    F: FnOnce(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => serve(hyper_util::rt::TokioIo::new(upgraded)).await,
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
}

/// The pod, and the running attempt of its container `container`.
async fn running_container(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    container: &str,
) -> Result<(Pod, crate::cri::ContainerRecord), Box<Response<Body>>> {
    let Some(pod) = ctx.store.get(&ObjectRef::new(name).within(ns)) else {
        return Err(Box::new(text(StatusCode::NOT_FOUND, format!("pod {ns}/{name} is not on node {}", ctx.node))));
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let records = ctx
        .runtime
        .list(&ctx.node, Some(&uid))
        .await
        .map_err(|e| Box::new(text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())))?;
    let running =
        attempts(&records, container, false).current.filter(|r| matches!(r.state, ContainerState::Running { .. }));
    match running {
        Some(r) => Ok(((*pod).clone(), r.clone())),
        None => {
            Err(Box::new(text(StatusCode::BAD_REQUEST, format!("container {container} is not running in pod {name}"))))
        }
    }
}

fn wanted(pairs: &[(String, String)]) -> Wanted {
    let flag = |k: &str| pairs.iter().any(|(key, v)| key == k && (v == "true" || v == "1"));
    Wanted { stdin: flag("stdin"), stdout: flag("stdout"), stderr: flag("stderr"), tty: flag("tty") }
}

async fn exec(ctx: &Ctx, req: Request<Incoming>, ns: &str, name: &str, container: &str) -> Response<Body> {
    let Some((runtime, scratch)) = ctx.exec.clone() else {
        return text(StatusCode::NOT_IMPLEMENTED, "exec is not available on this node".into());
    };
    let pairs = query_pairs(&req);
    let command: Vec<String> = pairs.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
    if command.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify at least 1 command".into());
    }
    let record = match running_container(ctx, ns, name, container).await {
        Ok((_, r)) => r,
        Err(resp) => return *resp,
    };
    let transport = match negotiate(&req, crate::streaming::websocket::PROTOCOLS, crate::streaming::spdy::PROTOCOLS) {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    let wanted = wanted(&pairs);
    let request = crate::exec::ExecRequest {
        container_id: record.id,
        command,
        stdin: wanted.stdin,
        stdout: wanted.stdout,
        stderr: wanted.stderr && !wanted.tty,
        tty: wanted.tty,
    };
    tracing::info!(pod = %format!("{ns}/{name}"), container, command = ?request.command, protocol = transport.protocol(), "exec");
    let response = switching(&transport);
    let op = move |ch| crate::exec::run(request, runtime, scratch, ch);
    match transport {
        Transport::WebSocket(..) => on_upgrade(req, move |io| crate::streaming::websocket::serve_channels(io, op)),
        Transport::Spdy(_) => on_upgrade(req, move |io| crate::streaming::spdy::serve_channels(io, wanted, op)),
    }
    response
}

async fn attach(ctx: &Ctx, req: Request<Incoming>, ns: &str, name: &str, container: &str) -> Response<Body> {
    let pairs = query_pairs(&req);
    let (pod, record) = match running_container(ctx, ns, name, container).await {
        Ok(found) => found,
        Err(resp) => return *resp,
    };
    let transport = match negotiate(&req, crate::streaming::websocket::PROTOCOLS, crate::streaming::spdy::PROTOCOLS) {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    let target = AttachTarget {
        node: ctx.node.clone(),
        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        container_id: record.id,
        log_path: record.log_path,
        stdin: record.stdin,
        stdin_once: record.stdin_once,
    };
    tracing::info!(pod = %format!("{ns}/{name}"), container, protocol = transport.protocol(), "attach");
    let wanted = wanted(&pairs);
    let response = switching(&transport);
    let runtime = ctx.runtime.clone();
    let op = move |ch| crate::streaming::attach::run(target, wanted, runtime, ch);
    match transport {
        Transport::WebSocket(..) => on_upgrade(req, move |io| crate::streaming::websocket::serve_channels(io, op)),
        Transport::Spdy(_) => on_upgrade(req, move |io| crate::streaming::spdy::serve_channels(io, wanted, op)),
    }
    response
}

async fn port_forward(ctx: &Ctx, req: Request<Incoming>, ns: &str, name: &str) -> Response<Body> {
    let Some(pod) = ctx.store.get(&ObjectRef::new(name).within(ns)) else {
        return text(StatusCode::NOT_FOUND, format!("pod {ns}/{name} is not on node {}", ctx.node));
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let netns = match &ctx.network {
        Some(network) => match network.get(&uid).await {
            Ok(Some(net)) => net.netns,
            Ok(None) => return text(StatusCode::BAD_REQUEST, format!("pod {ns}/{name} has no network sandbox yet")),
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        None => return text(StatusCode::NOT_IMPLEMENTED, "port-forward is not available on this node".into()),
    };
    let spdy = [crate::streaming::portforward::PROTOCOL];
    let transport = match negotiate(&req, &[crate::streaming::websocket::SPDY_TUNNEL], &spdy) {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    tracing::info!(pod = %format!("{ns}/{name}"), protocol = transport.protocol(), "port-forward");
    let response = switching(&transport);
    let pod = format!("{ns}/{name}");
    match transport {
        Transport::WebSocket(..) => on_upgrade(req, move |io| async move {
            let inner = crate::streaming::websocket::tunnel(io).await;
            crate::streaming::portforward::serve(inner, pod, netns).await
        }),
        Transport::Spdy(_) => on_upgrade(req, move |io| crate::streaming::portforward::serve(io, pod, netns)),
    }
    response
}

async fn logs(ctx: &Ctx, ns: &str, name: &str, container: &str, q: &HashMap<String, String>) -> Response<Body> {
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1" || v.is_empty() && q.contains_key(k));
    let Some(pod) = ctx.store.get(&ObjectRef::new(name).within(ns)) else {
        return text(StatusCode::NOT_FOUND, format!("pod {ns}/{name} is not on node {}", ctx.node));
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let records = match ctx.runtime.list(&ctx.node, Some(&uid)).await {
        Ok(r) => r,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let regular = attempts(&records, container, false);
    let a = if regular.current.is_some() { regular } else { attempts(&records, container, true) };
    let chosen = if flag("previous") { a.previous } else { a.current };
    let Some(record) = chosen else {
        let what = if flag("previous") { "previous terminated container" } else { "container" };
        return text(
            StatusCode::BAD_REQUEST,
            format!("{what} \"{container}\" in pod \"{name}\" not found (it may not have started yet)"),
        );
    };
    let opts = match log_options(q) {
        Ok(o) => o,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let path = record.log_path.clone();
    let raw = tokio::fs::read(&path).await.unwrap_or_default();
    // Whole lines only: a line being written is sent when it is complete.
    let whole = raw.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let offset = whole as u64;
    let content = crate::logs::select(&raw[..whole], &opts);
    let follow = flag("follow") && matches!(record.state, ContainerState::Running { .. });
    let remaining = opts.limit_bytes.map(|l| l.saturating_sub(content.len()));
    if !follow || remaining == Some(0) {
        let mut r = Response::new(Full::new(Bytes::from(content)).boxed());
        r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/plain"));
        return r;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let (runtime, node, id) = (ctx.runtime.clone(), ctx.node.clone(), record.id.clone());
    tokio::spawn(async move {
        if !content.is_empty() && tx.send(Ok(Frame::data(Bytes::from(content)))).await.is_err() {
            return;
        }
        let opts = crate::logs::LogOptions { tail_lines: None, limit_bytes: remaining, ..opts };
        follow_file(path, offset, opts, tx, runtime, node, uid, id).await;
    });
    let body = StreamBody::new(tokio_stream_from(rx)).boxed();
    let mut r = Response::new(body);
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/plain"));
    r
}

/// `timestamps`, `sinceSeconds`/`sinceTime`, `tailLines` and `limitBytes`.
fn log_options(q: &HashMap<String, String>) -> Result<crate::logs::LogOptions, String> {
    let number = |k: &str| -> Result<Option<i64>, String> {
        q.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| v.parse::<i64>().map_err(|_| format!("{k}={v:?} is not a number")))
            .transpose()
    };
    let positive = |k: &str| -> Result<Option<usize>, String> {
        match number(k)? {
            Some(n) if n < 0 => Err(format!("{k} must be greater than or equal to 0")),
            n => Ok(n.map(|n| n as usize)),
        }
    };
    let since = match (number("sinceSeconds")?, q.get("sinceTime").filter(|v| !v.is_empty())) {
        (Some(s), _) if s < 1 => return Err("sinceSeconds must be greater than 0".into()),
        (Some(s), _) => Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(s)),
        (None, Some(t)) => Some(t.parse::<jiff::Timestamp>().map_err(|e| format!("sinceTime {t:?}: {e}"))?),
        (None, None) => None,
    };
    Ok(crate::logs::LogOptions {
        timestamps: q.get("timestamps").is_some_and(|v| v == "true" || v == "1"),
        since,
        tail_lines: positive("tailLines")?,
        limit_bytes: positive("limitBytes")?,
    })
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Sends what is appended to the file until the container stops, the
/// client leaves or `opts.limit_bytes` are sent.
#[expect(clippy::too_many_arguments, reason = "one call site; the pieces of one request")]
async fn follow_file(
    path: PathBuf,
    mut offset: u64,
    opts: crate::logs::LogOptions,
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    runtime: Arc<dyn ContainerRuntime>,
    node: String,
    uid: String,
    id: String,
) {
    let mut ticks = 0u32;
    let mut left = opts.limit_bytes;
    let mut stopped = false;
    loop {
        if let Ok(mut f) = tokio::fs::File::open(&path).await
            && f.seek(std::io::SeekFrom::Start(offset)).await.is_ok()
        {
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).await.is_ok() {
                let whole = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                offset += whole as u64;
                let mut out = crate::logs::render(&buf[..whole], &opts);
                if let Some(l) = left.as_mut() {
                    out.truncate(*l);
                    *l -= out.len();
                }
                if !out.is_empty() && tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
                    return;
                }
            }
        }
        if tx.is_closed() || left == Some(0) || stopped {
            return;
        }
        ticks += 1;
        if ticks.is_multiple_of(5) {
            let running = runtime
                .list(&node, Some(&uid))
                .await
                .map(|rs| rs.iter().any(|r| r.id == id && matches!(r.state, ContainerState::Running { .. })))
                .unwrap_or(false);
            // One more read for what was written just before the end.
            stopped = !running;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_and_plus_decoded() {
        assert_eq!(percent_decode("echo%20hi+there%2F"), "echo hi there/");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
