//! `attach` to a container's main process: its output as it is appended to
//! the container's log, and the client's input into the container's stdin
//! FIFO (containers with `stdin: true` get one; see [`crate::cri`]).
//!
//! The FIFO's reader is containerd's shim, which also keeps a writer open
//! so that attach sessions can come and go; with `stdinOnce` the client
//! closing its stdin has the shim close it (CloseIO), and the process sees
//! EOF.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use tokio::net::unix::pipe;

use super::{Channels, Input, Output, Wanted, failure, success};
use crate::cri::{ContainerRuntime, ContainerState};

/// The container attached to.
#[derive(Clone, Debug)]
pub struct AttachTarget {
    pub node: String,
    pub pod_uid: String,
    pub container_id: String,
    pub log_path: PathBuf,
    /// The container's stdin FIFO, when it was started with stdin.
    pub stdin: Option<PathBuf>,
    pub stdin_once: bool,
}

/// How often the log is read for new output.
const POLL: Duration = Duration::from_millis(100);

/// Streams until the container exits or the client leaves; returns the Status.
pub async fn run(
    target: AttachTarget,
    wanted: Wanted,
    runtime: Arc<dyn ContainerRuntime>,
    mut ch: Channels,
) -> serde_json::Value {
    let mut stdin = None;
    if wanted.stdin {
        let Some(fifo) = target.stdin.as_deref() else {
            return failure("the container was not started with stdin: true, so it has no stdin to attach to");
        };
        match pipe::OpenOptions::new().read_write(true).open_sender(fifo) {
            Ok(s) => stdin = Some(s),
            Err(e) => return failure(format!("opening the container's stdin: {e}")),
        }
    }
    // Output from now on: what is already in the log is `kubectl logs`'.
    let mut offset = tokio::fs::metadata(&target.log_path).await.map(|m| m.len()).unwrap_or(0);
    let mut ticks = 0u32;
    let mut client = true;
    loop {
        tokio::select! {
            input = ch.input.recv(), if client => match input {
                Some(Input::Stdin(data)) => if let Some(s) = stdin.as_mut() { let _ = s.write_all(&data).await; },
                Some(Input::CloseStdin) => {
                    if stdin.take().is_some() && target.stdin_once {
                        runtime.close_stdin(&target.container_id).await;
                    }
                }
                Some(Input::Resize(size)) => if wanted.tty {
                    runtime.resize(&target.container_id, size.width, size.height).await;
                },
                Some(Input::Gone) | None => {
                    client = false;
                    stdin = None;
                }
            },
            _ = tokio::time::sleep(POLL) => {
                offset = forward(&target.log_path, offset, &ch, wanted).await;
                if !client {
                    return success();
                }
                ticks += 1;
                if ticks.is_multiple_of(5) && !running(&*runtime, &target).await {
                    forward(&target.log_path, offset, &ch, wanted).await;
                    return success();
                }
            }
        }
    }
}

async fn running(runtime: &dyn ContainerRuntime, t: &AttachTarget) -> bool {
    runtime
        .list(&t.node, Some(&t.pod_uid))
        .await
        .map(|rs| rs.iter().any(|r| r.id == t.container_id && matches!(r.state, ContainerState::Running { .. })))
        .unwrap_or(false)
}

/// Sends what was appended to the log after `offset`; returns the new offset.
async fn forward(path: &std::path::Path, offset: u64, ch: &Channels, wanted: Wanted) -> u64 {
    let Ok(mut f) = tokio::fs::File::open(path).await else { return offset };
    if f.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
        return offset;
    }
    let mut raw = Vec::new();
    if f.read_to_end(&mut raw).await.is_err() {
        return offset;
    }
    // The log holds CRI lines: whole ones are sent, without their prefixes.
    let whole = raw.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let next = offset + whole as u64;
    let buf = crate::logs::render(&raw[..whole], &crate::logs::LogOptions::default());
    if buf.is_empty() {
        return next;
    }
    if wanted.stdout {
        let _ = ch.output.send(Output::Stdout(buf)).await;
    } else if wanted.stderr {
        let _ = ch.output.send(Output::Stderr(buf)).await;
    }
    next
}
