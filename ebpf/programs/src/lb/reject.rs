//! A Service with no ready endpoints answers instead of black-holing: a TCP
//! SYN gets a RST (the client sees "connection refused" at once), anything
//! else is dropped with its reason code.
//!
//! The RST is built in place: the frame is cut to Ethernet + IPv4 + TCP
//! headers, addresses, ports and MACs are swapped, and the frame is sent back
//! out of the interface it came in on.

use aya_ebpf::{
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use waggle_ebpf_common::{
    ETH_HDR_LEN,
    lb::{IPPROTO_TCP, ReasonV1},
};

use crate::parse::{Ipv4Flow, TCP_ACK, TCP_RST, TCP_SYN};

const IPV4_HDR_LEN: usize = 20;
const TCP_HDR_LEN: usize = 20;
const RST_FRAME_LEN: usize = ETH_HDR_LEN + IPV4_HDR_LEN + TCP_HDR_LEN;

#[inline(always)]
pub fn no_backends(ctx: &TcContext, flow: &Ipv4Flow) -> ReasonV1 {
    let is_syn = flow.proto == IPPROTO_TCP && flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    // IP options would move the TCP header; such a SYN is dropped instead.
    if !is_syn || flow.ihl_bytes != IPV4_HDR_LEN {
        return ReasonV1::NoBackendsDrop;
    }
    match answer_rst(ctx, flow) {
        Ok(()) => ReasonV1::NoBackendsRst,
        Err(()) => ReasonV1::NoBackendsDrop,
    }
}

#[inline(always)]
fn answer_rst(ctx: &TcContext, flow: &Ipv4Flow) -> Result<(), ()> {
    let tcp: [u8; TCP_HDR_LEN] = ctx.load(flow.l4_off).map_err(|_| ())?;
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let doff = usize::from(tcp[12] >> 4) * 4;
    let payload = usize::from(flow.tot_len).saturating_sub(flow.ihl_bytes + doff) as u32;
    // The SYN occupies one sequence number.
    let ack = seq.wrapping_add(1).wrapping_add(payload);

    let macs: [u8; 12] = ctx.load(0).map_err(|_| ())?;
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);

    let mut hdr = [0u8; IPV4_HDR_LEN + TCP_HDR_LEN];
    let (ip, th) = hdr.split_at_mut(IPV4_HDR_LEN);
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((IPV4_HDR_LEN + TCP_HDR_LEN) as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64; // TTL
    ip[9] = IPPROTO_TCP;
    ip[12..16].copy_from_slice(&flow.daddr_be.to_ne_bytes());
    ip[16..20].copy_from_slice(&flow.saddr_be.to_ne_bytes());
    let ip_csum = fold(sum_words(ip));
    ip[10..12].copy_from_slice(&ip_csum.to_ne_bytes());

    th[0..2].copy_from_slice(&flow.dport_be.to_ne_bytes());
    th[2..4].copy_from_slice(&flow.sport_be.to_ne_bytes());
    th[8..12].copy_from_slice(&ack.to_be_bytes());
    th[12] = ((TCP_HDR_LEN / 4) as u8) << 4;
    th[13] = TCP_RST | TCP_ACK;
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&flow.daddr_be.to_ne_bytes());
    pseudo[4..8].copy_from_slice(&flow.saddr_be.to_ne_bytes());
    pseudo[9] = IPPROTO_TCP;
    pseudo[10..12].copy_from_slice(&(TCP_HDR_LEN as u16).to_be_bytes());
    let tcp_csum = fold(sum_words(&pseudo) + sum_words(th));
    th[16..18].copy_from_slice(&tcp_csum.to_ne_bytes());

    // SAFETY: `ctx.skb.skb` is the program's own context pointer.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, RST_FRAME_LEN as u32, 0) } != 0 {
        return Err(());
    }
    ctx.store(0, &swapped, 0).map_err(|_| ())?;
    ctx.store(ETH_HDR_LEN, &hdr, 0).map_err(|_| ())?;
    // SAFETY: reading the ingress interface index from our own context.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // Flags 0: out of the interface (egress), back towards the client.
    // SAFETY: a plain helper call; the verdict returns TC_ACT_REDIRECT.
    unsafe { bpf_redirect(ifindex, 0) };
    Ok(())
}

/// One's-complement sum of 16-bit words, in memory order (the result is
/// stored back in memory order, so byte order does not matter: RFC 1071).
#[inline(always)]
fn sum_words(bytes: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i + 1 < bytes.len() {
        sum += u32::from(u16::from_ne_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
