//! A Service with no ready endpoints answers instead of black-holing: a TCP
//! SYN gets a RST, a UDP datagram an ICMP port unreachable (the client sees
//! "connection refused" at once); anything else (a TCP segment of no known
//! flow) is dropped with its reason code.
//!
//! Both answers are built in place and sent back out of the interface the
//! packet came in on (tc: a redirect; XDP: `XDP_TX`): the RST by cutting the frame to its headers and
//! swapping addresses and ports; the ICMP error by opening 28 bytes of room
//! after the Ethernet header (new IPv4 + ICMP headers) and cutting the frame
//! after the first 8 bytes of the quoted UDP header (RFC 792).

use waggle_ebpf_common::{
    ETH_HDR_LEN, ETH_P_IP, IPPROTO_UDP,
    lb::{IPPROTO_TCP, ReasonV1},
};

use crate::packet::Packet;
use crate::parse::{Ipv4Flow, TCP_ACK, TCP_RST, TCP_SYN};

const IPV4_HDR_LEN: usize = 20;
const TCP_HDR_LEN: usize = 20;
const RST_FRAME_LEN: usize = ETH_HDR_LEN + IPV4_HDR_LEN + TCP_HDR_LEN;

#[inline(always)]
pub fn no_backends<P: Packet>(ctx: &P, flow: &Ipv4Flow) -> ReasonV1 {
    // IP options would move the L4 header; such packets are dropped instead.
    if flow.ihl_bytes != IPV4_HDR_LEN {
        return ReasonV1::NoBackendsDrop;
    }
    let is_syn = flow.proto == IPPROTO_TCP && flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if is_syn {
        return match answer_rst(ctx, flow) {
            Ok(()) => ReasonV1::NoBackendsRst,
            Err(()) => ReasonV1::NoBackendsDrop,
        };
    }
    if flow.proto == IPPROTO_UDP {
        return match answer_port_unreachable(ctx, flow) {
            Ok(()) => ReasonV1::NoBackendsIcmp,
            Err(()) => ReasonV1::NoBackendsDrop,
        };
    }
    ReasonV1::NoBackendsDrop
}

const ICMP_HDR_LEN: usize = 8;
/// What an ICMP error quotes: the offending IPv4 header and 8 bytes after it.
const QUOTE_LEN: usize = IPV4_HDR_LEN + 8;
const ICMP_FRAME_LEN: usize = ETH_HDR_LEN + IPV4_HDR_LEN + ICMP_HDR_LEN + QUOTE_LEN;
const IPPROTO_ICMP: u8 = 1;

#[inline(always)]
fn answer_port_unreachable<P: Packet>(ctx: &P, flow: &Ipv4Flow) -> Result<(), ()> {
    let quote: [u8; QUOTE_LEN] = ctx.load(ETH_HDR_LEN)?;
    let macs: [u8; 12] = ctx.load(0)?;

    let mut hdr = [0u8; IPV4_HDR_LEN + ICMP_HDR_LEN];
    let (ip, icmp) = hdr.split_at_mut(IPV4_HDR_LEN);
    ipv4_header(ip, (IPV4_HDR_LEN + ICMP_HDR_LEN + QUOTE_LEN) as u16, IPPROTO_ICMP, flow);
    icmp[0] = 3; // destination unreachable
    icmp[1] = 3; // port unreachable
    let icmp_csum = fold(sum_words(icmp) + sum_words(&quote));
    icmp[2..4].copy_from_slice(&icmp_csum.to_ne_bytes());

    // Room for the new IPv4 + ICMP headers between Ethernet and the quoted
    // IPv4 header, then cut everything after the quote.
    ctx.grow_after_eth(IPV4_HDR_LEN + ICMP_HDR_LEN)?;
    ctx.truncate(ICMP_FRAME_LEN)?;
    ctx.store(0, &reply_eth(&macs))?;
    ctx.store(ETH_HDR_LEN, &hdr)?;
    ctx.bounce();
    Ok(())
}

/// The Ethernet header of the answer: addresses swapped, IPv4. Written whole,
/// because growing the frame may have left anything in the EtherType.
#[inline(always)]
fn reply_eth(macs: &[u8; 12]) -> [u8; ETH_HDR_LEN] {
    let mut eth = [0u8; ETH_HDR_LEN];
    eth[..6].copy_from_slice(&macs[6..]);
    eth[6..12].copy_from_slice(&macs[..6]);
    eth[12..].copy_from_slice(&ETH_P_IP.to_be_bytes());
    eth
}

/// An IPv4 header from the frontend back to the client, checksum included.
#[inline(always)]
fn ipv4_header(ip: &mut [u8], tot_len: u16, proto: u8, flow: &Ipv4Flow) {
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&tot_len.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64; // TTL
    ip[9] = proto;
    ip[12..16].copy_from_slice(&flow.daddr_be.to_ne_bytes());
    ip[16..20].copy_from_slice(&flow.saddr_be.to_ne_bytes());
    let csum = fold(sum_words(ip));
    ip[10..12].copy_from_slice(&csum.to_ne_bytes());
}

#[inline(always)]
fn answer_rst<P: Packet>(ctx: &P, flow: &Ipv4Flow) -> Result<(), ()> {
    let tcp: [u8; TCP_HDR_LEN] = ctx.load(flow.l4_off)?;
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let doff = usize::from(tcp[12] >> 4) * 4;
    let payload = usize::from(flow.tot_len).saturating_sub(flow.ihl_bytes + doff) as u32;
    // The SYN occupies one sequence number.
    let ack = seq.wrapping_add(1).wrapping_add(payload);

    let macs: [u8; 12] = ctx.load(0)?;

    let mut hdr = [0u8; IPV4_HDR_LEN + TCP_HDR_LEN];
    let (ip, th) = hdr.split_at_mut(IPV4_HDR_LEN);
    ipv4_header(ip, (IPV4_HDR_LEN + TCP_HDR_LEN) as u16, IPPROTO_TCP, flow);

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

    ctx.truncate(RST_FRAME_LEN)?;
    ctx.store(0, &reply_eth(&macs))?;
    ctx.store(ETH_HDR_LEN, &hdr)?;
    ctx.bounce();
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
