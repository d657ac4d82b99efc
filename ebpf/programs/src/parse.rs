//! Header parsing: every read is bounds-checked against `data_end` first, the
//! only way the verifier accepts a packet access.

use waggle_ebpf_common::{ETH_HDR_LEN, ETH_P_IP, IPPROTO_UDP};

use crate::packet::Packet;

/// What a frame is, as far as the counters care.
#[derive(Clone, Copy)]
pub struct Class {
    pub ipv4: bool,
    pub udp: bool,
}

/// Offset of the EtherType inside the Ethernet header.
const ETHERTYPE_OFF: usize = 12;
/// Offset of the protocol byte inside the IPv4 header.
const IPV4_PROTO_OFF: usize = 9;
/// Shortest IPv4 header.
const IPV4_MIN_LEN: usize = 20;

#[inline(always)]
pub fn classify(data: usize, data_end: usize) -> Class {
    let mut class = Class { ipv4: false, udp: false };
    if data + ETH_HDR_LEN > data_end {
        return class;
    }
    // SAFETY: the two bytes lie inside [data, data + ETH_HDR_LEN), checked above.
    let ethertype_be = unsafe { *((data + ETHERTYPE_OFF) as *const [u8; 2]) };
    if u16::from_be_bytes(ethertype_be) != ETH_P_IP {
        return class;
    }
    class.ipv4 = true;
    if data + ETH_HDR_LEN + IPV4_MIN_LEN > data_end {
        return class;
    }
    // SAFETY: the byte lies inside the minimal IPv4 header, checked above.
    let proto = unsafe { *((data + ETH_HDR_LEN + IPV4_PROTO_OFF) as *const u8) };
    class.udp = proto == IPPROTO_UDP;
    class
}

/// The fields of an IPv4 TCP/UDP packet that the LB stages use. Addresses and
/// ports are as on the wire.
#[derive(Clone, Copy)]
pub struct Ipv4Flow {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// Offset of the TCP/UDP header from the start of the frame.
    pub l4_off: usize,
    /// IPv4 header length in bytes.
    pub ihl_bytes: usize,
    /// IPv4 total length.
    pub tot_len: u16,
}

/// Offset of the IPv4 source address inside the IPv4 header.
pub const IPV4_SADDR_OFF: usize = 12;
/// Offset of the IPv4 destination address inside the IPv4 header.
pub const IPV4_DADDR_OFF: usize = 16;
/// Offset of the IPv4 header checksum inside the IPv4 header.
pub const IPV4_CSUM_OFF: usize = 10;
/// Offset of the TCP flags byte inside the TCP header.
pub const TCP_FLAGS_OFF: usize = 13;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Reads an IPv4 TCP/UDP header pair through the hook's load-bytes helper,
/// which takes variable offsets (IP options) without verifier gymnastics.
#[inline(always)]
pub fn ipv4_flow<P: Packet>(ctx: &P) -> Result<Ipv4Flow, waggle_ebpf_common::lb::ReasonV1> {
    use waggle_ebpf_common::lb::{IPPROTO_TCP, ReasonV1};

    let ethertype_be: [u8; 2] = ctx.load(ETHERTYPE_OFF).map_err(|_| ReasonV1::Truncated)?;
    if u16::from_be_bytes(ethertype_be) != ETH_P_IP {
        return Err(ReasonV1::NotIpv4L4);
    }
    let ip: [u8; IPV4_MIN_LEN] = ctx.load(ETH_HDR_LEN).map_err(|_| ReasonV1::Truncated)?;
    if ip[0] >> 4 != 4 {
        return Err(ReasonV1::NotIpv4L4);
    }
    let proto = ip[IPV4_PROTO_OFF];
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Err(ReasonV1::NotIpv4L4);
    }
    // More-fragments bit or a fragment offset: the ports are not all here.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return Err(ReasonV1::Fragment);
    }
    let ihl_bytes = usize::from(ip[0] & 0x0f) * 4;
    if ihl_bytes < IPV4_MIN_LEN {
        return Err(ReasonV1::Truncated);
    }
    let l4_off = ETH_HDR_LEN + ihl_bytes;
    let ports: [u8; 4] = ctx.load(l4_off).map_err(|_| ReasonV1::Truncated)?;
    let tcp_flags = if proto == IPPROTO_TCP {
        ctx.load::<u8>(l4_off + TCP_FLAGS_OFF).map_err(|_| ReasonV1::Truncated)?
    } else {
        0
    };
    Ok(Ipv4Flow {
        saddr_be: u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
        daddr_be: u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
        sport_be: u16::from_ne_bytes([ports[0], ports[1]]),
        dport_be: u16::from_ne_bytes([ports[2], ports[3]]),
        proto,
        tcp_flags,
        l4_off,
        ihl_bytes,
        tot_len: u16::from_be_bytes([ip[2], ip[3]]),
    })
}
