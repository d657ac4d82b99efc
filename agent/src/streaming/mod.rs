//! Interactive streams between a client (kubectl, through the API server)
//! and a container: exec and attach over the WebSocket channel protocol or
//! SPDY, and port-forward over SPDY (plain, or tunnelled in a WebSocket).
//!
//! An operation (exec's process, attach's container) reads [`Input`] and
//! writes [`Output`] on [`Channels`] and ends with a `metav1.Status`; the
//! transports ([`websocket`], [`spdy`]) move those to and from the wire.

pub mod attach;
pub mod portforward;
pub mod spdy;
pub mod websocket;

use bytes::Bytes;
use tokio::sync::mpsc;

/// What the client sends to an operation.
#[derive(Debug)]
pub enum Input {
    Stdin(Bytes),
    /// The client closed its stdin.
    CloseStdin,
    /// The client's terminal changed size (only with a TTY).
    Resize(TerminalSize),
    /// The client went away.
    Gone,
}

/// A terminal size as clients send it (`remotecommand.TerminalSize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// Sizes from the resize stream: JSON objects one after another, split
/// anywhere by the transport. Complete ones are taken out of `buf`.
pub fn take_sizes(buf: &mut Vec<u8>) -> Vec<TerminalSize> {
    let mut sizes = Vec::new();
    let mut values = serde_json::Deserializer::from_slice(buf).into_iter::<TerminalSize>();
    let mut used = 0;
    loop {
        match values.next() {
            Some(Ok(size)) => {
                sizes.push(size);
                used = values.byte_offset();
            }
            // An incomplete object waits for more bytes.
            Some(Err(e)) if e.is_eof() => break,
            // Garbage is dropped rather than kept forever.
            Some(Err(_)) => {
                used = buf.len();
                break;
            }
            None => break,
        }
    }
    buf.drain(..used);
    sizes
}

/// What an operation sends to the client.
#[derive(Debug)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// Which streams the client asked for (the request's query).
#[derive(Clone, Copy, Debug, Default)]
pub struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// An operation's ends of the streams.
#[derive(Debug)]
pub struct Channels {
    pub input: mpsc::Receiver<Input>,
    pub output: mpsc::Sender<Output>,
}

/// A pair of connected [`Channels`]: the operation's, and the transport's.
pub fn channels() -> (Channels, mpsc::Sender<Input>, mpsc::Receiver<Output>) {
    let (in_tx, in_rx) = mpsc::channel(16);
    let (out_tx, out_rx) = mpsc::channel(16);
    (Channels { input: in_rx, output: out_tx }, in_tx, out_rx)
}

/// `metav1.Status` Success.
pub fn success() -> serde_json::Value {
    serde_json::json!({"metadata": {}, "status": "Success"})
}

/// `metav1.Status` of an operation that could not be carried out.
pub fn failure(message: impl std::fmt::Display) -> serde_json::Value {
    serde_json::json!({"metadata": {}, "status": "Failure", "reason": "InternalError", "message": message.to_string()})
}

/// `metav1.Status` of a command that exited with `code` (as upstream's
/// kubelet words it; clients take the exit code from the cause).
pub fn exit_status(command: &[String], code: u32) -> serde_json::Value {
    if code == 0 {
        return success();
    }
    serde_json::json!({
        "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")),
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_split_across_reads_are_decoded_once_whole() {
        let mut buf = br#"{"Width":80,"Height":24}{"Width":1"#.to_vec();
        assert_eq!(take_sizes(&mut buf), vec![TerminalSize { width: 80, height: 24 }]);
        buf.extend_from_slice(br#"20,"Height":40}"#);
        assert_eq!(take_sizes(&mut buf), vec![TerminalSize { width: 120, height: 40 }]);
        assert!(buf.is_empty());
        let mut junk = b"not json".to_vec();
        assert!(take_sizes(&mut junk).is_empty());
        assert!(junk.is_empty());
    }
}
