//! `exec` into a running container over WebSocket with Kubernetes'
//! channel protocol (`v5.channel.k8s.io`, also v4): binary messages whose
//! first byte is the stream — 0 stdin, 1 stdout, 2 stderr, 3 the final
//! Status, 4 resize, 255 close (v5: `[255, 0]` closes stdin).
//!
//! The process runs through containerd (Tasks.Exec) with its stdio on FIFOs
//! the agent creates. TTYs are not supported: `tty=true` runs without one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::unix::pipe;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

/// The subprotocols served, best first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// What the client asked for.
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    pub container_id: String,
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

fn mkfifo(path: &Path) -> std::io::Result<()> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(std::io::Error::from)
}

/// Runs the session on an upgraded connection until the process exits.
pub async fn session<S>(io: S, req: ExecRequest, runtime: waggle_runtime::Runtime, scratch: PathBuf)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut source) = ws.split();
    let exec_id = format!("exec-{}", unique());
    let dir = scratch.join(&exec_id);
    let status = run(&req, &runtime, &exec_id, &dir, &mut sink, &mut source).await;
    let _ = std::fs::remove_dir_all(&dir);
    let json = match status {
        Ok(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Ok(code) => serde_json::json!({
            "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", req.command.join(" ")),
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(msg) => serde_json::json!({"metadata": {}, "status": "Failure", "reason": "InternalError", "message": msg}),
    };
    let mut frame = vec![3u8];
    frame.extend_from_slice(json.to_string().as_bytes());
    let _ = sink.send(Message::binary(frame)).await;
    // A normal closure (1000), as upstream's kubelet sends: client-go reads a
    // close without a status code (1005) as an error on the error stream.
    let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    let _ = sink.send(Message::Close(Some(normal))).await;
}

type Sink<S> = futures::stream::SplitSink<WebSocketStream<S>, Message>;
type Source<S> = futures::stream::SplitStream<WebSocketStream<S>>;

async fn run<S>(
    req: &ExecRequest,
    runtime: &waggle_runtime::Runtime,
    exec_id: &str,
    dir: &Path,
    sink: &mut Sink<S>,
    source: &mut Source<S>,
) -> Result<u32, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let (inp, out, err) = (dir.join("stdin"), dir.join("stdout"), dir.join("stderr"));
    for p in [&inp, &out, &err] {
        mkfifo(p).map_err(|e| format!("mkfifo {}: {e}", p.display()))?;
    }
    // Read ends opened read-write so they never see EOF before the process
    // writes; the end is told by the process's exit instead.
    let open_rx = |p: &Path| pipe::OpenOptions::new().read_write(true).open_receiver(p);
    let mut stdout = open_rx(&out).map_err(|e| format!("opening {}: {e}", out.display()))?;
    let mut stderr = open_rx(&err).map_err(|e| format!("opening {}: {e}", err.display()))?;
    let mut stdin = if req.stdin {
        Some(pipe::OpenOptions::new().read_write(true).open_sender(&inp).map_err(|e| format!("opening stdin: {e}"))?)
    } else {
        None
    };
    let path = |p: &Path, on: bool| if on { p.to_string_lossy().into_owned() } else { String::new() };
    runtime
        .start_exec(
            &req.container_id,
            exec_id,
            &req.command,
            &path(&inp, req.stdin),
            &out.to_string_lossy(),
            &err.to_string_lossy(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let waiter = {
        let (runtime, id, exec) = (runtime.clone(), req.container_id.clone(), exec_id.to_owned());
        tokio::spawn(async move { runtime.wait_exec(&id, &exec).await })
    };
    let mut waiter = std::pin::pin!(waiter);
    // kubectl registers its streams just after the upgrade: output sent at
    // once can be dropped (see KUBECTL_API.md §8.3).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (mut obuf, mut ebuf) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
    let code = loop {
        tokio::select! {
            n = stdout.read(&mut obuf) => if let Ok(n @ 1..) = n { send(sink, 1, &obuf[..n], req.stdout).await },
            n = stderr.read(&mut ebuf) => if let Ok(n @ 1..) = n { send(sink, 2, &ebuf[..n], req.stderr).await },
            msg = source.next() => match msg {
                Some(Ok(Message::Binary(data))) => match data.first() {
                    Some(0) => if let Some(s) = stdin.as_mut() { let _ = s.write_all(&data[1..]).await; },
                    Some(255) if data.get(1) == Some(&0) => {
                        close_stdin(&mut stdin, runtime, &req.container_id, exec_id).await;
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The client left: stop the process rather than leak it.
                    stdin = None;
                    runtime.kill_exec(&req.container_id, exec_id).await;
                }
                Some(Ok(_)) => {}
            },
            exit = &mut waiter => break exit.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?,
        }
    };
    // Drain what the process wrote just before it exited.
    drain(&mut stdout, sink, 1, req.stdout).await;
    drain(&mut stderr, sink, 2, req.stderr).await;
    runtime.delete_exec(&req.container_id, exec_id).await;
    Ok(code)
}

/// Drops our end of stdin and has the shim close the process's.
async fn close_stdin(stdin: &mut Option<pipe::Sender>, runtime: &waggle_runtime::Runtime, id: &str, exec_id: &str) {
    if stdin.take().is_some() {
        runtime.close_exec_stdin(id, exec_id).await;
    }
}

async fn drain<S>(rx: &mut pipe::Receiver, sink: &mut Sink<S>, channel: u8, wanted: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = vec![0u8; 32 * 1024];
    while let Ok(Ok(n @ 1..)) = tokio::time::timeout(Duration::from_millis(20), rx.read(&mut buf)).await {
        send(sink, channel, &buf[..n], wanted).await;
    }
}

async fn send<S>(sink: &mut Sink<S>, channel: u8, data: &[u8], wanted: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if !wanted {
        return;
    }
    let mut frame = Vec::with_capacity(data.len() + 1);
    frame.push(channel);
    frame.extend_from_slice(data);
    let _ = sink.send(Message::binary(frame)).await;
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{:x}{nanos:x}", N.fetch_add(1, Ordering::Relaxed))
}

/// `Sec-WebSocket-Accept` for a client key.
pub fn accept_key(key: &[u8]) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key)
}

/// Chooses the subprotocol from the client's offer.
pub fn choose_protocol(offered: &str) -> Option<&'static str> {
    let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
    PROTOCOLS.iter().copied().find(|p| offered.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v5_is_chosen_over_v4_and_unknown_protocols_are_refused() {
        assert_eq!(choose_protocol("v4.channel.k8s.io, v5.channel.k8s.io"), Some("v5.channel.k8s.io"));
        assert_eq!(choose_protocol("v4.channel.k8s.io"), Some("v4.channel.k8s.io"));
        assert_eq!(choose_protocol("SPDY/3.1+portforward.k8s.io"), None);
    }

    #[test]
    fn the_accept_key_matches_rfc_6455s_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
