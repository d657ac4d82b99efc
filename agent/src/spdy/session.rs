//! The server side of a SPDY/3.1 connection, as the kubelet runs it for
//! exec, attach and port-forward: the client opens every stream (SYN_STREAM
//! with a `streamtype` header) and the server accepts each with a SYN_REPLY.
//!
//! One task reads frames and routes DATA to the stream it belongs to; one
//! task owns the write half and the compression context, so frames from all
//! streams go out whole and in the order they were queued. Flow control is
//! not enforced, like moby/spdystream which client-go uses: it neither sends
//! WINDOW_UPDATE nor waits for one.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;

use super::frame::{Decoder, Encoder, FLAG_FIN, Frame, Headers, RST_REFUSED_STREAM};

/// The largest DATA frame sent.
const CHUNK: usize = 32 * 1024;

#[derive(Debug)]
enum Out {
    Frame(Frame),
    /// Flush, half-close the connection and stop writing.
    Close,
}

/// A stream the client opened.
#[derive(Debug)]
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// What the client sends on it; ends at its FIN, a RST_STREAM or the
    /// end of the connection.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

/// Sends on one stream.
#[derive(Clone, Debug)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Out>,
}

impl StreamWriter {
    /// Queues `data` as DATA frames; false once the connection is gone.
    pub async fn write(&self, data: &[u8]) -> bool {
        for chunk in data.chunks(CHUNK) {
            let frame = Frame::Data { stream_id: self.id, flags: 0, data: Bytes::copy_from_slice(chunk) };
            if self.out.send(Out::Frame(frame)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Ends this side of the stream (an empty DATA frame with FIN).
    pub async fn finish(&self) {
        let frame = Frame::Data { stream_id: self.id, flags: FLAG_FIN, data: Bytes::new() };
        let _ = self.out.send(Out::Frame(frame)).await;
    }

    pub async fn reset(&self, status: u32) {
        let _ = self.out.send(Out::Frame(Frame::RstStream { stream_id: self.id, status })).await;
    }
}

/// A running connection: the streams the client opens arrive on `streams`.
#[derive(Debug)]
pub struct Session {
    pub streams: mpsc::Receiver<Stream>,
    out: mpsc::Sender<Out>,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Starts serving `io`, which has already been upgraded to SPDY/3.1.
    pub fn start<S>(io: S) -> Session
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel(64);
        let (streams_tx, streams) = mpsc::channel(16);
        let writer = tokio::spawn(write_loop(wr, out_rx));
        let reader = tokio::spawn(read_loop(rd, out.clone(), streams_tx));
        Session { streams, out, reader, writer }
    }

    /// Says GOAWAY, sends what is queued and closes the connection.
    pub async fn close(self) {
        let _ = self.out.send(Out::Frame(Frame::GoAway { last_good_stream_id: 0, status: 0 })).await;
        let _ = self.out.send(Out::Close).await;
        let _ = self.writer.await;
        self.reader.abort();
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Out>) {
    let mut enc = Encoder::new();
    let mut buf = Vec::with_capacity(CHUNK + 64);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut closing = false;
        // Whatever is queued already goes out in one write.
        while let Some(item) = next.take() {
            match item {
                Out::Frame(f) => {
                    if let Err(e) = enc.encode(&f, &mut buf) {
                        tracing::debug!(error = %e, "encoding a SPDY frame failed");
                    }
                }
                Out::Close => closing = true,
            }
            if closing || buf.len() >= 4 * CHUNK {
                break;
            }
            next = rx.try_recv().ok();
        }
        if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
            return;
        }
        buf.clear();
        if closing {
            let _ = wr.shutdown().await;
            return;
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(mut rd: R, out: mpsc::Sender<Out>, streams: mpsc::Sender<Stream>) {
    let mut dec = Decoder::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    loop {
        let frame = match dec.decode(&mut buf) {
            Ok(Some(f)) => f,
            Ok(None) => match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
            Err(e) => {
                tracing::debug!(error = %e, "bad SPDY frame: closing the connection");
                return;
            }
        };
        match frame {
            Frame::SynStream { stream_id, flags, headers, .. } => {
                let reply = Frame::SynReply { stream_id, flags: 0, headers: Vec::new() };
                if out.send(Out::Frame(reply)).await.is_err() {
                    return;
                }
                let (tx, rx) = mpsc::channel(64);
                if flags & FLAG_FIN == 0 {
                    open.insert(stream_id, tx);
                }
                let writer = StreamWriter { id: stream_id, out: out.clone() };
                let stream = Stream { id: stream_id, headers, data: rx, writer };
                if let Err(refused) = streams.send(stream).await {
                    open.remove(&stream_id);
                    refused.0.writer.reset(RST_REFUSED_STREAM).await;
                }
            }
            Frame::Data { stream_id, flags, data } => {
                if let Some(tx) = open.get(&stream_id)
                    && !data.is_empty()
                    && tx.send(data).await.is_err()
                {
                    open.remove(&stream_id);
                }
                if flags & FLAG_FIN != 0 {
                    open.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                open.remove(&stream_id);
            }
            Frame::Ping { id } => {
                if out.send(Out::Frame(Frame::Ping { id })).await.is_err() {
                    return;
                }
            }
            Frame::GoAway { .. } => return,
            Frame::Headers { stream_id, flags, .. } if flags & FLAG_FIN != 0 => {
                open.remove(&stream_id);
            }
            Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::header;
    use super::super::test_client::Client;
    use super::*;

    #[tokio::test]
    async fn streams_are_accepted_echoed_pinged_and_closed_with_goaway() {
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let mut session = Session::start(server_io);
        let mut c = Client::new(client_io);
        let hs = vec![("streamType".to_owned(), "stdin".to_owned())];
        c.send(Frame::SynStream { stream_id: 1, associated_to: 0, priority: 0, flags: 0, headers: hs }).await;
        assert_eq!(c.recv().await, Some(Frame::SynReply { stream_id: 1, flags: 0, headers: vec![] }));
        let mut s = session.streams.recv().await.expect("valid in this test");
        assert_eq!(header(&s.headers, "streamtype"), Some("stdin"));

        c.send(Frame::Data { stream_id: 1, flags: 0, data: Bytes::from_static(b"ping?") }).await;
        assert_eq!(s.data.recv().await.as_deref(), Some(&b"ping?"[..]));
        c.send(Frame::Ping { id: 5 }).await;
        assert_eq!(c.recv().await, Some(Frame::Ping { id: 5 }));
        c.send(Frame::Data { stream_id: 1, flags: FLAG_FIN, data: Bytes::new() }).await;
        assert_eq!(s.data.recv().await, None, "FIN ends the stream's data");

        let big = vec![7u8; CHUNK + 10];
        assert!(s.writer.write(&big).await);
        s.writer.finish().await;
        session.close().await;
        let mut got = Vec::new();
        let mut saw_fin = false;
        let mut saw_goaway = false;
        while let Some(f) = c.recv().await {
            match f {
                Frame::Data { stream_id: 1, flags, data } => {
                    got.extend_from_slice(&data);
                    saw_fin |= flags & FLAG_FIN != 0;
                }
                Frame::GoAway { .. } => saw_goaway = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, big);
        assert!(saw_fin && saw_goaway);
    }
}
