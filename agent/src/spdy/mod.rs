//! SPDY/3.1, the multiplexing protocol kubectl ≤ 1.29 uses for exec and
//! attach and every kubectl uses for port-forward (directly, or tunnelled in
//! a WebSocket with subprotocol `SPDY/3.1+portforward.k8s.io`). No
//! maintained Rust crate speaks it, so this is a small one: the framing
//! ([`frame`]) and the server side of a connection ([`session`]).

pub mod frame;
pub mod session;

pub use frame::{Frame, Headers, header};
pub use session::{Session, Stream, StreamWriter};

/// The `Upgrade` token of the HTTP handshake.
pub const UPGRADE: &str = "SPDY/3.1";
/// The header in which clients offer, and the server answers, the
/// sub-protocol spoken over the streams.
pub const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";

/// The first of `served` that the client offered (each offer is a header
/// line of its own; commas are accepted too).
pub fn choose_protocol<'a>(offers: impl Iterator<Item = &'a str>, served: &[&'static str]) -> Option<&'static str> {
    let offered: Vec<&str> = offers.flat_map(|v| v.split(',')).map(str::trim).collect();
    served.iter().copied().find(|p| offered.contains(p))
}

/// A SPDY client written against the frame codec only, for tests.
#[cfg(test)]
pub(crate) mod test_client {
    use bytes::BytesMut;
    use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

    use super::frame::{Decoder, Encoder, Frame};

    pub(crate) struct Client<S> {
        io: S,
        enc: Encoder,
        dec: Decoder,
        buf: BytesMut,
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
        pub(crate) fn new(io: S) -> Self {
            Self { io, enc: Encoder::new(), dec: Decoder::new(), buf: BytesMut::new() }
        }

        pub(crate) async fn send(&mut self, f: Frame) {
            let mut wire = Vec::new();
            self.enc.encode(&f, &mut wire).expect("encodable");
            self.io.write_all(&wire).await.expect("the server reads");
        }

        /// The next frame; `None` once the server closed the connection.
        pub(crate) async fn recv(&mut self) -> Option<Frame> {
            loop {
                if let Some(f) = self.dec.decode(&mut self.buf).expect("a valid frame") {
                    return Some(f);
                }
                if self.io.read_buf(&mut self.buf).await.expect("readable") == 0 {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_preference_wins_among_the_offers() {
        let offers = ["channel.k8s.io", "v4.channel.k8s.io, v3.channel.k8s.io"];
        assert_eq!(choose_protocol(offers.into_iter(), &["v4.channel.k8s.io"]), Some("v4.channel.k8s.io"));
        assert_eq!(choose_protocol(["v2.channel.k8s.io"].into_iter(), &["v4.channel.k8s.io"]), None);
    }
}
