//! `exec` into a running container: the process runs through containerd
//! (Tasks.Exec) with its stdio on FIFOs the agent creates, and its streams
//! go to the client over the WebSocket channel protocol or SPDY (see
//! [`crate::streaming`]). With `tty=true` the process runs on the shim's pty
//! (one output stream; the client's size changes resize it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::unix::pipe;

use crate::streaming::{Channels, Input, Output, exit_status, failure};

/// What the client asked for.
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    pub container_id: String,
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn mkfifo(path: &Path) -> std::io::Result<()> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(std::io::Error::from)
}

/// Runs the exec on a WebSocket connection (already upgraded) until the
/// process exits.
pub async fn session<S>(io: S, req: ExecRequest, runtime: waggle_runtime::Runtime, scratch: PathBuf)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    crate::streaming::websocket::serve_channels(io, |ch| run(req, runtime, scratch, ch)).await
}

/// Runs the process with its stdio on `ch`; returns the Status.
pub async fn run(
    req: ExecRequest,
    runtime: waggle_runtime::Runtime,
    scratch: PathBuf,
    mut ch: Channels,
) -> serde_json::Value {
    let exec_id = format!("exec-{}", unique());
    let dir = scratch.join(&exec_id);
    let result = process(&req, &runtime, &exec_id, &dir, &mut ch).await;
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(code) => exit_status(&req.command, code),
        Err(msg) => failure(msg),
    }
}

async fn process(
    req: &ExecRequest,
    runtime: &waggle_runtime::Runtime,
    exec_id: &str,
    dir: &Path,
    ch: &mut Channels,
) -> Result<u32, String> {
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
    // A terminal gets the client's size before the process starts (kubectl
    // sends it first thing); input that comes meanwhile is replayed after.
    let mut early = Vec::new();
    let mut console_size = None;
    if req.tty {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Some(input)) = tokio::time::timeout_at(deadline, ch.input.recv()).await {
            if let Input::Resize(size) = input {
                console_size = Some((u32::from(size.width), u32::from(size.height)));
                break;
            }
            early.push(input);
        }
    }
    let path = |p: &Path, on: bool| if on { p.to_string_lossy().into_owned() } else { String::new() };
    let (stdin_path, stdout_path, stderr_path) =
        (path(&inp, req.stdin), out.to_string_lossy().into_owned(), err.to_string_lossy().into_owned());
    let io = waggle_runtime::ExecIo {
        stdin: &stdin_path,
        stdout: &stdout_path,
        stderr: &stderr_path,
        terminal: req.tty,
        console_size,
    };
    runtime.start_exec(&req.container_id, exec_id, &req.command, io).await.map_err(|e| e.to_string())?;
    let waiter = {
        let (runtime, id, exec) = (runtime.clone(), req.container_id.clone(), exec_id.to_owned());
        tokio::spawn(async move { runtime.wait_exec(&id, &exec).await })
    };
    let mut waiter = std::pin::pin!(waiter);
    // kubectl registers its streams just after the upgrade: output sent at
    // once can be dropped (see KUBECTL_API.md §8.3).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (mut obuf, mut ebuf) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
    let mut client = true;
    let (replay_tx, mut replay) = tokio::sync::mpsc::channel(early.len().max(1));
    for input in early {
        let _ = replay_tx.try_send(input);
    }
    drop(replay_tx);
    let code = loop {
        tokio::select! {
            n = stdout.read(&mut obuf) => if let Ok(n @ 1..) = n { send(ch, Output::Stdout(obuf[..n].to_vec()), req.stdout).await },
            n = stderr.read(&mut ebuf) => if let Ok(n @ 1..) = n { send(ch, Output::Stderr(ebuf[..n].to_vec()), req.stderr).await },
            input = async { match replay.recv().await { Some(i) => Some(i), None => ch.input.recv().await } }, if client => match input {
                Some(Input::Stdin(data)) => if let Some(s) = stdin.as_mut() { let _ = s.write_all(&data).await; },
                Some(Input::CloseStdin) => close_stdin(&mut stdin, runtime, &req.container_id, exec_id).await,
                Some(Input::Resize(size)) => if req.tty {
                    let (w, h) = (u32::from(size.width), u32::from(size.height));
                    if let Err(e) = runtime.resize_pty(&req.container_id, exec_id, w, h).await {
                        tracing::debug!(error = %e, "resizing the exec's terminal failed");
                    }
                },
                Some(Input::Gone) | None => {
                    // The client left: stop the process rather than leak it.
                    client = false;
                    stdin = None;
                    runtime.kill_exec(&req.container_id, exec_id).await;
                }
            },
            exit = &mut waiter => break exit.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?,
        }
    };
    // Drain what the process wrote just before it exited.
    drain(&mut stdout, ch, true, req.stdout).await;
    drain(&mut stderr, ch, false, req.stderr).await;
    runtime.delete_exec(&req.container_id, exec_id).await;
    Ok(code)
}

/// Drops our end of stdin and has the shim close the process's.
async fn close_stdin(stdin: &mut Option<pipe::Sender>, runtime: &waggle_runtime::Runtime, id: &str, exec_id: &str) {
    if stdin.take().is_some() {
        runtime.close_exec_stdin(id, exec_id).await;
    }
}

async fn drain(rx: &mut pipe::Receiver, ch: &Channels, is_stdout: bool, wanted: bool) {
    let mut buf = vec![0u8; 32 * 1024];
    while let Ok(Ok(n @ 1..)) = tokio::time::timeout(Duration::from_millis(20), rx.read(&mut buf)).await {
        let data = buf[..n].to_vec();
        send(ch, if is_stdout { Output::Stdout(data) } else { Output::Stderr(data) }, wanted).await;
    }
}

async fn send(ch: &Channels, out: Output, wanted: bool) {
    if wanted {
        let _ = ch.output.send(out).await;
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{:x}{nanos:x}", N.fetch_add(1, Ordering::Relaxed))
}
