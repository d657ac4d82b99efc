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
