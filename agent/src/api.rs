//! The agent's HTTPS API, at the kubelet's paths:
//! - `GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&previous=&limitBytes=`
//!   (the API server proxies `pods/{name}/log` here);
//! - `GET /exec/{namespace}/{pod}/{container}?command=…&stdin=&stdout=&stderr=&tty=` upgraded to a
//!   WebSocket with subprotocol `v5.channel.k8s.io` or `v4.channel.k8s.io` (`pods/{name}/exec`);
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
use crate::pod::attempts;

type Body = BoxBody<Bytes, Infallible>;

struct Ctx {
    store: Store<Pod>,
    runtime: Arc<dyn ContainerRuntime>,
    node: String,
    /// containerd itself, for streaming exec.
    exec: Option<(waggle_runtime::Runtime, PathBuf)>,
    metrics: Option<Arc<crate::proxy::ProxyMetrics>>,
}

/// Serves until the listener fails. With `tls`, every connection must
/// present a client certificate of the cluster CA, and only allowed names get
/// an answer (others get 403).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<(Arc<rustls::ServerConfig>, crate::tls::TlsSettings)>,
    store: Store<Pod>,
    runtime: Arc<dyn ContainerRuntime>,
    node: String,
    exec: Option<(waggle_runtime::Runtime, PathBuf)>,
    metrics: Option<Arc<crate::proxy::ProxyMetrics>>,
) -> Result<(), crate::Error> {
    let addr = listener.local_addr().map_err(crate::Error::io("reading the agent API's address"))?;
    tracing::info!(%addr, https = tls.is_some(), "agent API listening");
    let ctx = Arc::new(Ctx { store, runtime, node, exec, metrics });
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
    if req.method() != hyper::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served".into());
    }
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["healthz"] => text(StatusCode::OK, "ok".into()),
        ["metrics"] => match &ctx.metrics {
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
        _ => text(StatusCode::NOT_FOUND, format!("{path} is not served by the waggle agent")),
    }
}

async fn exec(ctx: &Ctx, req: Request<Incoming>, ns: &str, name: &str, container: &str) -> Response<Body> {
    let Some((runtime, scratch)) = ctx.exec.clone() else {
        return text(StatusCode::NOT_IMPLEMENTED, "exec is not available on this node".into());
    };
    let pairs = query_pairs(&req);
    let flag = |k: &str| pairs.iter().any(|(key, v)| key == k && (v == "true" || v == "1"));
    let command: Vec<String> = pairs.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
    if command.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify at least 1 command".into());
    }
    let Some(pod) = ctx.store.get(&ObjectRef::new(name).within(ns)) else {
        return text(StatusCode::NOT_FOUND, format!("pod {ns}/{name} is not on node {}", ctx.node));
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let records = match ctx.runtime.list(&ctx.node, Some(&uid)).await {
        Ok(r) => r,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let running = attempts(&records, container, false)
        .current
        .filter(|r| matches!(r.state, ContainerState::Running { .. }))
        .map(|r| r.id.clone());
    let Some(container_id) = running else {
        return text(StatusCode::BAD_REQUEST, format!("container {container} is not running in pod {name}"));
    };
    let header = |k: &str| req.headers().get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let upgrade = header("upgrade");
    let Some(protocol) = crate::exec::choose_protocol(&header("sec-websocket-protocol")) else {
        return text(
            StatusCode::BAD_REQUEST,
            "exec needs a WebSocket upgrade with v5.channel.k8s.io or v4.channel.k8s.io".into(),
        );
    };
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return text(StatusCode::BAD_REQUEST, format!("upgrade {upgrade:?} is not supported (only websocket)"));
    }
    let accept = crate::exec::accept_key(header("sec-websocket-key").as_bytes());
    let request = crate::exec::ExecRequest {
        container_id,
        command,
        stdin: flag("stdin"),
        stdout: flag("stdout"),
        stderr: flag("stderr") || flag("tty"),
    };
    tracing::info!(pod = %format!("{ns}/{name}"), container, command = ?request.command, "exec");
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                crate::exec::session(hyper_util::rt::TokioIo::new(upgraded), request, runtime, scratch).await
            }
            Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("upgrade", hyper::header::HeaderValue::from_static("websocket"));
    h.insert("connection", hyper::header::HeaderValue::from_static("Upgrade"));
    if let Ok(v) = hyper::header::HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    h.insert("sec-websocket-protocol", hyper::header::HeaderValue::from_static(protocol));
    r
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
    let path = record.log_path.clone();
    let mut content = tokio::fs::read(&path).await.unwrap_or_default();
    let offset = content.len() as u64;
    if let Some(n) = q.get("tailLines").and_then(|v| v.parse::<usize>().ok()) {
        content = tail(&content, n);
    }
    let limit = q.get("limitBytes").and_then(|v| v.parse::<usize>().ok());
    if let Some(l) = limit {
        content.truncate(l);
    }
    let follow = flag("follow") && matches!(record.state, ContainerState::Running { .. }) && limit.is_none();
    if !follow {
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
        follow_file(path, offset, tx, runtime, node, uid, id).await;
    });
    let body = StreamBody::new(tokio_stream_from(rx)).boxed();
    let mut r = Response::new(body);
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/plain"));
    r
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Sends what is appended to the file until the container stops or the client leaves.
async fn follow_file(
    path: PathBuf,
    mut offset: u64,
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    runtime: Arc<dyn ContainerRuntime>,
    node: String,
    uid: String,
    id: String,
) {
    let mut ticks = 0u32;
    loop {
        if let Ok(mut f) = tokio::fs::File::open(&path).await
            && f.seek(std::io::SeekFrom::Start(offset)).await.is_ok()
        {
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).await.is_ok() && !buf.is_empty() {
                offset += buf.len() as u64;
                if tx.send(Ok(Frame::data(Bytes::from(buf)))).await.is_err() {
                    return;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        ticks += 1;
        if ticks.is_multiple_of(5) {
            let running = runtime
                .list(&node, Some(&uid))
                .await
                .map(|rs| rs.iter().any(|r| r.id == id && matches!(r.state, ContainerState::Running { .. })))
                .unwrap_or(false);
            if !running {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The last `n` lines.
pub fn tail(content: &[u8], n: usize) -> Vec<u8> {
    if n == 0 {
        return Vec::new();
    }
    let body = content.strip_suffix(b"\n").unwrap_or(content);
    let mut count = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return content[i + 1..].to_vec();
            }
        }
    }
    content.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_and_plus_decoded() {
        assert_eq!(percent_decode("echo%20hi+there%2F"), "echo hi there/");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn tail_keeps_the_last_lines_with_their_newlines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n".to_vec());
        assert_eq!(tail(b"a\nb\nc", 1), b"c".to_vec());
        assert_eq!(tail(b"a\n", 5), b"a\n".to_vec());
        assert_eq!(tail(b"a\n", 0), Vec::<u8>::new());
    }
}
