//! Kubernetes' WebSocket channel protocol (`v5.channel.k8s.io`, also v4):
//! binary messages whose first byte is the stream — 0 stdin, 1 stdout,
//! 2 stderr, 3 the final Status, 4 resize, 255 close (v5: `[255, 0]` closes
//! stdin). Also the tunnel kubectl ≥ 1.30 uses for port-forward: SPDY's
//! bytes carried in binary messages as they are.

use std::future::Future;

use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::{Channels, Input, Output};

/// The channel subprotocols served, best first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// The subprotocol of port-forward's SPDY tunnel.
pub const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// Chooses the subprotocol from the client's offer among `served`.
pub fn choose_protocol(offered: &str, served: &[&'static str]) -> Option<&'static str> {
    let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
    served.iter().copied().find(|p| offered.contains(p))
}

/// `Sec-WebSocket-Accept` for a client key.
pub fn accept_key(key: &[u8]) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key)
}

/// Runs `op` with its streams on the channel protocol over `io` (already
/// upgraded), then sends its Status and closes.
pub async fn serve_channels<S, F, Fut>(io: S, op: F)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(Channels) -> Fut,
    Fut: Future<Output = serde_json::Value>,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut source) = ws.split();
    let (channels, in_tx, mut out_rx) = super::channels();
    let reader = tokio::spawn(async move {
        while let Some(msg) = source.next().await {
            let input = match msg {
                Ok(Message::Binary(data)) => match data.first() {
                    Some(0) => Input::Stdin(data.slice(1..)),
                    Some(255) if data.get(1) == Some(&0) => Input::CloseStdin,
                    Some(4) => match serde_json::from_slice(&data[1..]) {
                        Ok(size) => Input::Resize(size),
                        Err(_) => continue,
                    },
                    _ => continue,
                },
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            if in_tx.send(input).await.is_err() {
                return;
            }
        }
        let _ = in_tx.send(Input::Gone).await;
    });
    let op = op(channels);
    let mut op = std::pin::pin!(op);
    let mut output_open = true;
    let status = loop {
        tokio::select! {
            out = out_rx.recv(), if output_open => match out {
                Some(o) => send(&mut sink, o).await,
                None => output_open = false,
            },
            status = &mut op => break status,
        }
    };
    while let Ok(o) = out_rx.try_recv() {
        send(&mut sink, o).await;
    }
    let mut frame = vec![3u8];
    frame.extend_from_slice(status.to_string().as_bytes());
    let _ = sink.send(Message::binary(frame)).await;
    // A normal closure (1000), as upstream's kubelet sends: client-go reads a
    // close without a status code (1005) as an error on the error stream.
    let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    let _ = sink.send(Message::Close(Some(normal))).await;
    reader.abort();
}

type Sink<S> = futures::stream::SplitSink<WebSocketStream<S>, Message>;

async fn send<S>(sink: &mut Sink<S>, out: Output)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (channel, data) = match out {
        Output::Stdout(d) => (1u8, d),
        Output::Stderr(d) => (2u8, d),
    };
    let mut frame = Vec::with_capacity(data.len() + 1);
    frame.push(channel);
    frame.extend_from_slice(&data);
    let _ = sink.send(Message::binary(frame)).await;
}

/// Carries a byte stream in binary messages over `io` (already upgraded);
/// returns the other end of that byte stream.
pub async fn tunnel<S>(io: S) -> tokio::io::DuplexStream
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut source) = ws.split();
    let (inner, outer) = tokio::io::duplex(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(outer);
    tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            let data = match msg {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
        let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = sink.send(Message::Close(Some(normal))).await;
    });
    inner
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v5_is_chosen_over_v4_and_unknown_protocols_are_refused() {
        assert_eq!(choose_protocol("v4.channel.k8s.io, v5.channel.k8s.io", PROTOCOLS), Some("v5.channel.k8s.io"));
        assert_eq!(choose_protocol("v4.channel.k8s.io", PROTOCOLS), Some("v4.channel.k8s.io"));
        assert_eq!(choose_protocol("SPDY/3.1+portforward.k8s.io", PROTOCOLS), None);
        assert_eq!(choose_protocol("SPDY/3.1+portforward.k8s.io", &[SPDY_TUNNEL]), Some(SPDY_TUNNEL));
    }

    #[test]
    fn the_accept_key_matches_rfc_6455s_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
