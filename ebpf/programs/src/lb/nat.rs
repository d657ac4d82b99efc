//! Address and port rewriting with incremental checksum updates, for either
//! hook (see [`Packet`]).
//!
//! On tc, `bpf_l4_csum_replace` with `BPF_F_PSEUDO_HDR` handles both a full
//! checksum (received packets) and `CHECKSUM_PARTIAL` (packets from a local
//! socket, whose checksum field holds only the pseudo-header sum).
//!
//! Each function takes the flow as parsed (before any rewrite), so the "old"
//! values are always the ones on the wire when the program started; a packet
//! rewritten twice (hairpin) rewrites two different fields.

use aya_ebpf::bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR};
use waggle_ebpf_common::{ETH_HDR_LEN, lb::IPPROTO_TCP};

use crate::packet::Packet;
use crate::parse::{IPV4_CSUM_OFF, IPV4_DADDR_OFF, IPV4_SADDR_OFF, Ipv4Flow};

/// Offset of the checksum inside the TCP header.
const TCP_CSUM_OFF: usize = 16;
/// Offset of the checksum inside the UDP header.
const UDP_CSUM_OFF: usize = 6;

/// Destination NAT: the destination (a frontend, or the hairpin address of a
/// reply) becomes `addr:port`.
#[inline(always)]
pub fn dnat<P: Packet>(pkt: &P, flow: &Ipv4Flow, addr_be: u32, port_be: u16) -> Result<(), ()> {
    let at = Rewrite { addr_off: ETH_HDR_LEN + IPV4_DADDR_OFF, port_off: flow.l4_off + 2 };
    at.apply(pkt, flow, (flow.daddr_be, addr_be), (flow.dport_be, port_be))
}

/// Source NAT: the source (a backend's reply, or a hairpinned client)
/// becomes `addr:port`.
#[inline(always)]
pub fn snat<P: Packet>(pkt: &P, flow: &Ipv4Flow, addr_be: u32, port_be: u16) -> Result<(), ()> {
    let at = Rewrite { addr_off: ETH_HDR_LEN + IPV4_SADDR_OFF, port_off: flow.l4_off };
    at.apply(pkt, flow, (flow.saddr_be, addr_be), (flow.sport_be, port_be))
}

struct Rewrite {
    addr_off: usize,
    port_off: usize,
}

impl Rewrite {
    #[inline(always)]
    fn apply<P: Packet>(&self, pkt: &P, flow: &Ipv4Flow, addr: (u32, u32), port: (u16, u16)) -> Result<(), ()> {
        let (csum_off, mangled) = if flow.proto == IPPROTO_TCP {
            (flow.l4_off + TCP_CSUM_OFF, 0)
        } else {
            // A UDP checksum of 0 means "none": keep it 0, and turn a computed
            // 0 into 0xffff.
            (flow.l4_off + UDP_CSUM_OFF, u64::from(BPF_F_MARK_MANGLED_0))
        };
        let (old_addr, new_addr) = addr;
        if old_addr != new_addr {
            pkt.l4_csum_replace(csum_off, old_addr, new_addr, u64::from(BPF_F_PSEUDO_HDR) | mangled | 4)?;
            pkt.l3_csum_replace(ETH_HDR_LEN + IPV4_CSUM_OFF, old_addr, new_addr)?;
            pkt.store(self.addr_off, &new_addr)?;
        }
        let (old_port, new_port) = port;
        if old_port != new_port {
            pkt.l4_csum_replace(csum_off, u32::from(old_port), u32::from(new_port), mangled | 2)?;
            pkt.store(self.port_off, &new_port)?;
        }
        Ok(())
    }
}
