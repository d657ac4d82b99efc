//! port-forward over SPDY (`portforward.k8s.io`): for each connection the
//! client opens an `error` and a `data` stream with the same `requestID`
//! and the pod's `port`; the agent dials that port on the pod's loopback,
//! inside the pod's network namespace, and copies bytes both ways.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::spdy::{Session, Stream, header};

/// The sub-protocol served.
pub const PROTOCOL: &str = "portforward.k8s.io";

/// How long a connection may wait for its second stream.
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves a SPDY session over `io` (already upgraded) for the pod whose
/// network namespace is `netns`, until the client closes it.
pub async fn serve<S>(io: S, pod: String, netns: PathBuf)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let mut session = Session::start(io);
    // Streams waiting for their partner, by request id.
    let mut pending: HashMap<String, (Option<Stream>, Option<Stream>, tokio::time::Instant)> = HashMap::new();
    while let Some(stream) = session.streams.recv().await {
        let id = header(&stream.headers, "requestid").unwrap_or("").to_owned();
        let kind = header(&stream.headers, "streamtype").unwrap_or("").to_owned();
        let now = tokio::time::Instant::now();
        pending.retain(|_, (_, _, since)| now.duration_since(*since) < PAIR_TIMEOUT);
        let entry = pending.entry(id.clone()).or_insert((None, None, now));
        match kind.as_str() {
            "error" => entry.0 = Some(stream),
            "data" => entry.1 = Some(stream),
            other => {
                tracing::debug!(stream_type = other, "port-forward: unexpected stream type");
                stream.writer.reset(crate::spdy::frame::RST_PROTOCOL_ERROR).await;
                continue;
            }
        }
        if matches!(pending.get(&id), Some((Some(_), Some(_), _)))
            && let Some((Some(error), Some(data), _)) = pending.remove(&id)
        {
            tokio::spawn(forward(error, data, pod.clone(), netns.clone()));
        }
    }
    session.close().await;
}

/// One forwarded connection.
async fn forward(error: Stream, mut data: Stream, pod: String, netns: PathBuf) {
    let port = header(&data.headers, "port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
    let (ew, dw) = (error.writer.clone(), data.writer.clone());
    let fail = |msg: String| async move {
        tracing::debug!(error = %msg, "port-forward connection failed");
        ew.write(msg.as_bytes()).await;
        ew.finish().await;
        dw.finish().await;
    };
    let Some(port) = port else {
        return fail(format!("invalid port in the request for pod {pod}")).await;
    };
    let dialled = crate::network::enter_and_run(&netns, move || {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        })
    })
    .await;
    let tcp = match dialled.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
        Ok(s) => s,
        Err(e) => return fail(format!("error forwarding port {port} to pod {pod}: {e}")).await,
    };
    let tcp = match tokio::net::TcpStream::from_std(tcp) {
        Ok(t) => t,
        Err(e) => return fail(format!("error forwarding port {port} to pod {pod}: {e}")).await,
    };
    tracing::debug!(pod, port, "port-forward connection");
    let (mut rd, mut wr) = tcp.into_split();
    let mut inbound = std::mem::replace(&mut data.data, tokio::sync::mpsc::channel(1).1);
    let to_pod = async move {
        while let Some(b) = inbound.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let writer = data.writer.clone();
    let from_pod = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !writer.write(&buf[..n]).await {
                        break;
                    }
                }
            }
        }
        writer.finish().await;
    };
    // The client waits for the error stream to end before it closes its
    // side: the pod closing its side ends the connection (as upstream's
    // runtimes do), while the client closing only its side half-closes.
    let to_pod = tokio::spawn(to_pod);
    from_pod.await;
    error.writer.finish().await;
    to_pod.abort();
}
