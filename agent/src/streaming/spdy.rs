//! The channel streams over SPDY (kubectl ≤ 1.29 exec and attach): the
//! client opens one SPDY stream per channel, named by its `streamType`
//! header (`error`, `stdin`, `stdout`, `stderr`, `resize`); the Status goes
//! on the error stream as JSON (`v4.channel.k8s.io`).

use std::future::Future;
use std::time::Duration;

use super::{Channels, Input, Output, Wanted};
use crate::spdy::{Session, Stream, header};

/// The sub-protocols served over SPDY, best first. Clients since 1.5 offer
/// v4, the first with a JSON Status on the error stream.
pub const PROTOCOLS: &[&str] = &["v4.channel.k8s.io"];

/// How long the client has to open its streams (upstream's
/// `streamCreationTimeout`).
const STREAM_CREATION: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Streams {
    fn complete(&self, w: Wanted) -> bool {
        self.error.is_some()
            && self.stdin.is_some() == w.stdin
            && self.stdout.is_some() == w.stdout
            // With a TTY stderr is merged into stdout and has no stream.
            && self.stderr.is_some() == (w.stderr && !w.tty)
            && self.resize.is_some() == w.tty
    }
}

async fn accept(session: &mut Session, wanted: Wanted) -> Result<Streams, String> {
    let mut s = Streams::default();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION;
    while !s.complete(wanted) {
        let stream = match tokio::time::timeout_at(deadline, session.streams.recv()).await {
            Ok(Some(stream)) => stream,
            Ok(None) => return Err("the connection ended before all streams were opened".into()),
            Err(_) => return Err("timed out waiting for the client to open its streams".into()),
        };
        let slot = match header(&stream.headers, "streamtype").unwrap_or("") {
            "error" => &mut s.error,
            "stdin" => &mut s.stdin,
            "stdout" => &mut s.stdout,
            "stderr" => &mut s.stderr,
            "resize" => &mut s.resize,
            other => return Err(format!("unexpected stream type {other:?}")),
        };
        *slot = Some(stream);
    }
    Ok(s)
}

/// Runs `op` with its streams on a SPDY session over `io` (already
/// upgraded), then writes its Status on the error stream and closes.
pub async fn serve_channels<S, F, Fut>(io: S, wanted: Wanted, op: F)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    F: FnOnce(Channels) -> Fut,
    Fut: Future<Output = serde_json::Value>,
{
    let mut session = Session::start(io);
    let mut streams = match accept(&mut session, wanted).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "SPDY stream setup failed");
            session.close().await;
            return;
        }
    };
    let (channels, in_tx, mut out_rx) = super::channels();
    // stdin's data until its FIN; the end of the connection ends
    // `session.streams` (the reader is gone).
    let stdin_pump = streams.stdin.as_mut().map(|s| std::mem::replace(&mut s.data, tokio::sync::mpsc::channel(1).1));
    let pump = {
        let in_tx = in_tx.clone();
        tokio::spawn(async move {
            if let Some(mut data) = stdin_pump {
                while let Some(b) = data.recv().await {
                    if in_tx.send(Input::Stdin(b)).await.is_err() {
                        return;
                    }
                }
                let _ = in_tx.send(Input::CloseStdin).await;
            }
        })
    };
    // The resize stream: terminal sizes as JSON, one after another.
    let resize_pump = streams.resize.as_mut().map(|s| std::mem::replace(&mut s.data, tokio::sync::mpsc::channel(1).1));
    let resizes = {
        let in_tx = in_tx.clone();
        tokio::spawn(async move {
            let Some(mut data) = resize_pump else { return };
            let mut buf = Vec::new();
            while let Some(b) = data.recv().await {
                buf.extend_from_slice(&b);
                for size in super::take_sizes(&mut buf) {
                    if in_tx.send(Input::Resize(size)).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    let (out, err) = (streams.stdout.take(), streams.stderr.take());
    let Some(error) = streams.error.take() else {
        session.close().await;
        return;
    };
    let op = op(channels);
    let mut op = std::pin::pin!(op);
    let mut output_open = true;
    let mut connected = true;
    let status = loop {
        tokio::select! {
            o = out_rx.recv(), if output_open => match o {
                Some(o) => write(&out, &err, o).await,
                None => output_open = false,
            },
            more = session.streams.recv(), if connected => match more {
                // Streams beyond the expected ones are refused.
                Some(extra) => extra.writer.reset(crate::spdy::frame::RST_REFUSED_STREAM).await,
                None => {
                    connected = false;
                    let _ = in_tx.send(Input::Gone).await;
                }
            },
            status = &mut op => break status,
        }
    };
    while let Ok(o) = out_rx.try_recv() {
        write(&out, &err, o).await;
    }
    error.writer.write(status.to_string().as_bytes()).await;
    for s in [&out, &err, &Some(error)].into_iter().flatten() {
        s.writer.finish().await;
    }
    pump.abort();
    resizes.abort();
    session.close().await;
}

async fn write(out: &Option<Stream>, err: &Option<Stream>, o: Output) {
    let (target, data) = match o {
        Output::Stdout(d) => (out.as_ref(), d),
        // With a TTY there is no stderr stream: it goes to stdout.
        Output::Stderr(d) => (err.as_ref().or(out.as_ref()), d),
    };
    if let Some(s) = target {
        s.writer.write(&data).await;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::spdy::frame::{FLAG_FIN, Frame};
    use crate::spdy::test_client::Client;

    fn open(id: u32, kind: &str) -> Frame {
        let headers = vec![("streamType".to_owned(), kind.to_owned())];
        Frame::SynStream { stream_id: id, associated_to: 0, priority: 0, flags: 0, headers }
    }

    #[tokio::test]
    async fn streams_by_type_carry_stdin_stdout_and_the_status_on_the_error_stream() {
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let wanted = Wanted { stdin: true, stdout: true, stderr: true, tty: false };
        // An operation that upper-cases its stdin until EOF, then "exits 3".
        let server = tokio::spawn(serve_channels(server_io, wanted, |mut ch: Channels| async move {
            while let Some(Input::Stdin(b)) = ch.input.recv().await {
                let _ = ch.output.send(Output::Stdout(b.to_ascii_uppercase())).await;
            }
            let _ = ch.output.send(Output::Stderr(b"bye".to_vec())).await;
            super::super::exit_status(&["x".to_owned()], 3)
        }));
        let mut c = Client::new(client_io);
        for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")] {
            c.send(open(id, kind)).await;
        }
        c.send(Frame::Data { stream_id: 3, flags: 0, data: Bytes::from_static(b"hello") }).await;
        c.send(Frame::Data { stream_id: 3, flags: FLAG_FIN, data: Bytes::new() }).await;
        let (mut stdout, mut stderr, mut error, mut fins, mut replies) = (vec![], vec![], vec![], vec![], 0);
        while let Some(f) = c.recv().await {
            match f {
                Frame::SynReply { .. } => replies += 1,
                Frame::Data { stream_id, flags, data } => {
                    match stream_id {
                        1 => error.extend_from_slice(&data),
                        5 => stdout.extend_from_slice(&data),
                        7 => stderr.extend_from_slice(&data),
                        other => panic!("data on stream {other}"),
                    }
                    if flags & FLAG_FIN != 0 {
                        fins.push(stream_id);
                    }
                }
                Frame::GoAway { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        server.await.expect("the session ends");
        assert_eq!(replies, 4);
        assert_eq!(stdout, b"HELLO");
        assert_eq!(stderr, b"bye");
        let status: serde_json::Value = serde_json::from_slice(&error).expect("a Status");
        assert_eq!(status["reason"], "NonZeroExitCode");
        fins.sort();
        assert_eq!(fins, [1, 5, 7], "every stream the server writes on ends with FIN");
    }

    #[tokio::test]
    async fn an_unknown_stream_type_ends_the_session() {
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(serve_channels(server_io, Wanted::default(), |_ch: Channels| async {
            super::super::success()
        }));
        let mut c = Client::new(client_io);
        c.send(open(1, "bogus")).await;
        let mut frames = Vec::new();
        while let Some(f) = c.recv().await {
            frames.push(f);
        }
        server.await.expect("the session ends");
        assert!(matches!(frames.last(), Some(Frame::GoAway { .. })), "{frames:?}");
    }
}
