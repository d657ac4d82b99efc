//! Connection tracking: one LRU entry per direction of every Service flow.
//!
//! The service-direction entry remembers the backend (address and port, not
//! only its id), so a flow stays on its backend after the backend left the
//! Service. The reply-direction entry says which frontend the backend's
//! replies must appear to come from.

use aya_ebpf::helpers::bpf_get_prandom_u32;
use waggle_ebpf_common::lb::{
    CT_DIR_REPLY, CT_DIR_SERVICE, CT_F_HAIRPIN, CT_F_PORT, CT_F_SNAT, CT_TIMEOUT_TCP_NS, CT_TIMEOUT_UDP_NS, CtEntryV2,
    CtKeyV1, HAIRPIN_SNAT_ADDR, IPPROTO_TCP, ReasonV1, SNAT_ATTEMPTS, SNAT_PORT_MAX, SNAT_PORT_MIN,
};

use super::{maps::CONNTRACK, select::Chosen};
use crate::parse::{Ipv4Flow, TCP_ACK, TCP_SYN};

/// Where a tracked flow goes.
pub struct Tracked {
    pub addr_be: u32,
    pub port_be: u16,
    /// How the source is rewritten too, if at all.
    pub source: SourceNat,
    /// The source port a [`SourceNat::Node`] flow leaves with.
    pub snat_port_be: u16,
}

/// Whether, and why, a flow's source is rewritten on its way to the backend.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SourceNat {
    None,
    /// The client is its own backend: the source becomes `HAIRPIN_SNAT_ADDR`.
    Hairpin,
    /// The backend is on another node: the source becomes this node's
    /// address towards it (found again per packet, by route lookup).
    Node(u32),
    /// Only the source port is rewritten: the client's own port's reply
    /// tuple towards the backend is another frontend's (see `CT_F_PORT`).
    Port,
}

impl SourceNat {
    #[inline(always)]
    fn flag(self) -> u8 {
        match self {
            SourceNat::None => 0,
            SourceNat::Hairpin => CT_F_HAIRPIN,
            SourceNat::Node(_) => CT_F_SNAT,
            SourceNat::Port => CT_F_PORT,
        }
    }
}

/// What a reply is translated back to.
pub struct Reply {
    pub rev_nat_index: u32,
    /// Where the reply's destination goes back to, when the flow's source
    /// was rewritten: (address, port).
    pub to_client: Option<(u32, u16)>,
}

#[inline(always)]
fn timeout_ns(proto: u8) -> u64 {
    if proto == IPPROTO_TCP { CT_TIMEOUT_TCP_NS } else { CT_TIMEOUT_UDP_NS }
}

#[inline(always)]
fn service_key(flow: &Ipv4Flow) -> CtKeyV1 {
    CtKeyV1 {
        saddr_be: flow.saddr_be,
        daddr_be: flow.daddr_be,
        sport_be: flow.sport_be,
        dport_be: flow.dport_be,
        proto: flow.proto,
        dir: CT_DIR_SERVICE,
        _pad: [0; 2],
    }
}

/// The backend of a live flow. A TCP SYN without ACK opens a new connection
/// (the client may reuse a port), so it is never matched: selection runs
/// again, and Maglev or affinity give a retransmitted SYN the same backend.
#[inline(always)]
pub fn lookup_service(flow: &Ipv4Flow, now: u64) -> Option<Tracked> {
    if flow.proto == IPPROTO_TCP && flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        return None;
    }
    let entry = CONNTRACK.get_ptr_mut(service_key(flow))?;
    // SAFETY: the pointer is the map value's; concurrent writers only touch
    // `last_seen_ns`, a racy timestamp that is fine to lose.
    unsafe {
        if now.wrapping_sub((*entry).last_seen_ns) > timeout_ns(flow.proto) {
            return None;
        }
        (*entry).last_seen_ns = now;
        let flags = (*entry).flags;
        let source = if flags & CT_F_HAIRPIN != 0 {
            SourceNat::Hairpin
        } else if flags & CT_F_SNAT != 0 {
            // Marked, resolved by the caller (a route lookup).
            SourceNat::Node(0)
        } else if flags & CT_F_PORT != 0 {
            SourceNat::Port
        } else {
            SourceNat::None
        };
        Some(Tracked {
            addr_be: (*entry).backend_addr_be,
            port_be: (*entry).backend_port_be,
            source,
            snat_port_be: (*entry).snat_port_be,
        })
    }
}

/// How to translate the flow this packet is a reply of, if any.
#[inline(always)]
pub fn lookup_reply(flow: &Ipv4Flow) -> Option<Reply> {
    let key = CtKeyV1 { dir: CT_DIR_REPLY, ..service_key(flow) };
    // SAFETY: copied out at once.
    let entry = unsafe { CONNTRACK.get(key) }?;
    let to_client = if entry.flags & CT_F_HAIRPIN != 0 {
        // The pod was its own client, on the same port.
        Some((flow.saddr_be, flow.dport_be))
    } else if entry.flags & (CT_F_SNAT | CT_F_PORT) != 0 {
        Some((entry.backend_addr_be, entry.backend_port_be))
    } else {
        None
    };
    Some(Reply { rev_nat_index: entry.rev_nat_index, to_client })
}

/// Records a new flow in both directions and returns how its source is
/// rewritten and the source port it leaves with. A source-NATed flow's
/// replies are addressed to the address (and port) it was rewritten to, so
/// that is its reply key; the port is the client's own unless another flow's
/// replies already use that tuple (two clients with one source port towards
/// one backend), then a free one. A flow that keeps its source gets a free
/// port too when its reply tuple is another frontend's ([`SourceNat::Port`]).
#[inline(always)]
pub fn create(
    flow: &Ipv4Flow,
    chosen: &Chosen,
    rev_nat_index: u32,
    now: u64,
    source: SourceNat,
) -> Result<(SourceNat, u16), ReasonV1> {
    let mut entry = CtEntryV2 {
        backend_addr_be: chosen.backend.addr_be,
        backend_port_be: chosen.backend.port_be,
        flags: 0,
        _pad: 0,
        backend_id: chosen.backend_id,
        rev_nat_index,
        created_ns: now,
        last_seen_ns: now,
        snat_port_be: 0,
        _pad2: [0; 6],
    };
    let mut reply_key = CtKeyV1 {
        saddr_be: chosen.backend.addr_be,
        daddr_be: match source {
            SourceNat::None | SourceNat::Port => flow.saddr_be,
            SourceNat::Hairpin => HAIRPIN_SNAT_ADDR,
            SourceNat::Node(addr) => addr,
        },
        sport_be: chosen.backend.port_be,
        dport_be: flow.sport_be,
        proto: flow.proto,
        dir: CT_DIR_REPLY,
        _pad: [0; 2],
    };
    let source = if source == SourceNat::None && held_by_another_frontend(&reply_key, rev_nat_index) {
        SourceNat::Port
    } else {
        source
    };
    entry.flags = source.flag();
    // Reply entry first: once the service entry exists, packets take the fast
    // path and rely on replies being translated.
    let reply = match source {
        SourceNat::Node(_) | SourceNat::Port => {
            reply_key.dport_be = free_snat_port(flow, &reply_key)?;
            entry.snat_port_be = reply_key.dport_be;
            CtEntryV2 { backend_addr_be: flow.saddr_be, backend_port_be: flow.sport_be, snat_port_be: 0, ..entry }
        }
        _ => entry,
    };
    CONNTRACK.insert(reply_key, reply, 0).map_err(|_| ReasonV1::MapUpdateFailed)?;
    CONNTRACK.insert(service_key(flow), entry, 0).map_err(|_| ReasonV1::MapUpdateFailed)?;
    Ok((source, reply_key.dport_be))
}

/// Whether a flow of another frontend holds the reply tuple `key` (the
/// backend's replies to this client and port). The same frontend's flow
/// on that tuple is this client's earlier connection to the same address:
/// the client's own sequence numbers and timestamps follow on from it, so a
/// backend in TIME_WAIT takes the new SYN; another frontend's does not.
#[inline(always)]
fn held_by_another_frontend(key: &CtKeyV1, rev_nat_index: u32) -> bool {
    // SAFETY: copied out at once.
    match unsafe { CONNTRACK.get(key) } {
        Some(held) => held.rev_nat_index != rev_nat_index,
        None => false,
    }
}

/// A source port for a source-NATed flow whose reply tuple (`key`, port
/// aside) no other live flow holds: the port this flow had already (a
/// retransmitted SYN), else the client's own, then random ones, as Cilium's
/// SNAT does. A tuple this very client holds is its own.
#[inline(always)]
fn free_snat_port(flow: &Ipv4Flow, key: &CtKeyV1) -> Result<u16, ReasonV1> {
    let mut probe = *key;
    // SAFETY: copied out at once.
    if let Some(earlier) = unsafe { CONNTRACK.get(service_key(flow)) }
        && earlier.flags & (CT_F_SNAT | CT_F_PORT) != 0
        && earlier.snat_port_be != 0
    {
        probe.dport_be = earlier.snat_port_be;
    }
    let mut attempt = 0;
    while attempt < SNAT_ATTEMPTS {
        // SAFETY: copied out at once.
        match unsafe { CONNTRACK.get(probe) } {
            None => return Ok(probe.dport_be),
            Some(held) if held.backend_addr_be == flow.saddr_be && held.backend_port_be == flow.sport_be => {
                return Ok(probe.dport_be);
            }
            Some(_) => {}
        }
        // SAFETY: a helper without arguments.
        let r = unsafe { bpf_get_prandom_u32() };
        let span = u32::from(SNAT_PORT_MAX - SNAT_PORT_MIN) + 1;
        probe.dport_be = ((r % span) as u16 + SNAT_PORT_MIN).to_be();
        attempt += 1;
    }
    Err(ReasonV1::SnatPortsExhausted)
}
