//! Header parsing: every read is bounds-checked against `data_end` first, the
//! only way the verifier accepts a packet access.

use waggle_ebpf_common::{ETH_HDR_LEN, ETH_P_IP, IPPROTO_UDP};

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
