//! The exec session against a real containerd: a WebSocket client speaking
//! v5.channel.k8s.io over an in-memory pipe, a busybox container started
//! through waggle-runtime. Privileged (CI runs as root).

use std::time::Duration;

use anyhow::Context as _;
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use waggle_agent::exec::{ExecRequest, session};
use waggle_runtime::{ContainerConfig, Runtime};
use waggle_tests::{Containerd, NetNs, image, is_root, names};

struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: serde_json::Value,
}

async fn exec(runtime: &Runtime, scratch: &std::path::Path, req: ExecRequest, stdin: &[u8]) -> anyhow::Result<Outcome> {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(session(server_io, req, runtime.clone(), scratch.to_path_buf()));
    let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    if !stdin.is_empty() {
        let mut frame = vec![0u8];
        frame.extend_from_slice(stdin);
        client.send(Message::binary(frame)).await?;
        client.send(Message::binary(vec![255u8, 0])).await?;
    }
    let mut out = Outcome { stdout: Vec::new(), stderr: Vec::new(), status: serde_json::Value::Null };
    while let Some(msg) =
        tokio::time::timeout(Duration::from_secs(20), client.next()).await.context("exec timed out")?
    {
        match msg? {
            Message::Binary(data) => match data.first() {
                Some(1) => out.stdout.extend_from_slice(&data[1..]),
                Some(2) => out.stderr.extend_from_slice(&data[1..]),
                Some(3) => out.status = serde_json::from_slice(&data[1..])?,
                _ => {}
            },
            Message::Close(_) => break,
            _ => {}
        }
    }
    server.await?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_stdin_stdout_stderr_and_reports_the_exit_code() -> anyhow::Result<()> {
    assert!(is_root(), "this test runs containerd: run it as root");
    let ns = NetNs::new("exec")?;
    let containerd = Containerd::start()?;
    let work = tempfile::tempdir()?;
    let tarball = work.path().join("busybox.tar");
    let built = image::build_busybox(&tarball)?;
    let runtime = Runtime::connect(containerd.socket(), &names::unique("wgt"))
        .await?
        .with_runc_root(containerd.dir().join("runc"));
    runtime.import_archive(&tarball).await?;
    let cfg = ContainerConfig {
        id: names::unique("wgt-exec"),
        image: built.name.clone(),
        args: ["sleep", "600"].map(String::from).to_vec(),
        netns: Some(ns.path()),
        log_path: work.path().join("c.log"),
        ..Default::default()
    };
    runtime.create_container(&cfg).await?;
    runtime.start_container(&cfg).await?;
    let scratch = work.path().join("exec");

    let req = |cmd: &[&str], stdin: bool| ExecRequest {
        container_id: cfg.id.clone(),
        command: cmd.iter().map(|s| (*s).to_owned()).collect(),
        stdin,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let result = async {
        let ok = exec(&runtime, &scratch, req(&["sh", "-c", "echo out; echo err >&2"], false), b"").await?;
        assert_eq!(String::from_utf8_lossy(&ok.stdout), "out\n");
        assert_eq!(String::from_utf8_lossy(&ok.stderr), "err\n");
        assert_eq!(ok.status["status"], "Success");

        let piped = exec(&runtime, &scratch, req(&["cat"], true), b"hello-stdin\n").await?;
        assert_eq!(String::from_utf8_lossy(&piped.stdout), "hello-stdin\n");

        let failed = exec(&runtime, &scratch, req(&["sh", "-c", "exit 3"], false), b"").await?;
        assert_eq!(failed.status["reason"], "NonZeroExitCode");
        assert_eq!(failed.status["details"]["causes"][0]["message"], "3");
        anyhow::Ok(())
    }
    .await;
    runtime.remove_container(&cfg.id).await?;
    result.with_context(|| containerd.log())
}
