//! Address and port rewriting with incremental checksum updates.
//!
//! `bpf_l4_csum_replace` with `BPF_F_PSEUDO_HDR` handles both a full
//! checksum (received packets) and `CHECKSUM_PARTIAL` (packets from a local
//! socket, whose checksum field holds only the pseudo-header sum).

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use waggle_ebpf_common::{ETH_HDR_LEN, lb::IPPROTO_TCP};

use crate::parse::{IPV4_CSUM_OFF, IPV4_DADDR_OFF, IPV4_SADDR_OFF, Ipv4Flow};

/// Offset of the checksum inside the TCP header.
const TCP_CSUM_OFF: usize = 16;
/// Offset of the checksum inside the UDP header.
const UDP_CSUM_OFF: usize = 6;

/// Destination NAT: the frontend becomes the backend.
#[inline(always)]
pub fn dnat(ctx: &TcContext, flow: &Ipv4Flow, addr_be: u32, port_be: u16) -> Result<(), ()> {
    let at = Rewrite { addr_off: ETH_HDR_LEN + IPV4_DADDR_OFF, port_off: flow.l4_off + 2 };
    at.apply(ctx, flow, (flow.daddr_be, addr_be), (flow.dport_be, port_be))
}

/// Source NAT of a reply: the backend becomes the frontend again.
#[inline(always)]
pub fn snat(ctx: &TcContext, flow: &Ipv4Flow, addr_be: u32, port_be: u16) -> Result<(), ()> {
    let at = Rewrite { addr_off: ETH_HDR_LEN + IPV4_SADDR_OFF, port_off: flow.l4_off };
    at.apply(ctx, flow, (flow.saddr_be, addr_be), (flow.sport_be, port_be))
}

struct Rewrite {
    addr_off: usize,
    port_off: usize,
}

impl Rewrite {
    #[inline(always)]
    fn apply(&self, ctx: &TcContext, flow: &Ipv4Flow, addr: (u32, u32), port: (u16, u16)) -> Result<(), ()> {
        let (csum_off, mangled) = if flow.proto == IPPROTO_TCP {
            (flow.l4_off + TCP_CSUM_OFF, 0)
        } else {
            // A UDP checksum of 0 means "none": keep it 0, and turn a computed
            // 0 into 0xffff.
            (flow.l4_off + UDP_CSUM_OFF, u64::from(BPF_F_MARK_MANGLED_0))
        };
        let (old_addr, new_addr) = addr;
        if old_addr != new_addr {
            ctx.l4_csum_replace(
                csum_off,
                u64::from(old_addr),
                u64::from(new_addr),
                u64::from(BPF_F_PSEUDO_HDR) | mangled | 4,
            )
            .map_err(|_| ())?;
            ctx.l3_csum_replace(ETH_HDR_LEN + IPV4_CSUM_OFF, u64::from(old_addr), u64::from(new_addr), 4)
                .map_err(|_| ())?;
            ctx.store(self.addr_off, &new_addr, 0).map_err(|_| ())?;
        }
        let (old_port, new_port) = port;
        if old_port != new_port {
            ctx.l4_csum_replace(csum_off, u64::from(old_port), u64::from(new_port), mangled | 2).map_err(|_| ())?;
            ctx.store(self.port_off, &new_port, 0).map_err(|_| ())?;
        }
        Ok(())
    }
}
