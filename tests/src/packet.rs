//! Crafted Ethernet/IPv4/TCP/UDP frames for BPF_PROG_TEST_RUN, and a parser
//! that recomputes every checksum from scratch, so a test can prove that the
//! datapath's incremental checksum updates are right.

use std::net::{Ipv4Addr, SocketAddrV4};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const RST: u8 = 0x04;

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

/// One's-complement checksum of `data` (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word =
            if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { u16::from_be_bytes([chunk[0], 0]) };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> u16 {
    let mut buf = Vec::with_capacity(12 + l4.len());
    buf.extend_from_slice(&src.octets());
    buf.extend_from_slice(&dst.octets());
    buf.extend_from_slice(&[0, proto]);
    buf.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    buf.extend_from_slice(l4);
    checksum(&buf)
}

/// An Ethernet + IPv4 + TCP frame with valid checksums.
pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&src.port().to_be_bytes());
    l4.extend_from_slice(&dst.port().to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(&0u32.to_be_bytes());
    l4.extend_from_slice(&[0x50, flags]);
    l4.extend_from_slice(&64240u16.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 0]);
    l4.extend_from_slice(payload);
    let csum = l4_checksum(*src.ip(), *dst.ip(), TCP, &l4);
    l4[16..18].copy_from_slice(&csum.to_be_bytes());
    frame(*src.ip(), *dst.ip(), TCP, &l4)
}

/// An Ethernet + IPv4 + UDP frame; `with_checksum: false` sends 0 ("none").
pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8], with_checksum: bool) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&src.port().to_be_bytes());
    l4.extend_from_slice(&dst.port().to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    if with_checksum {
        let mut csum = l4_checksum(*src.ip(), *dst.ip(), UDP, &l4);
        if csum == 0 {
            csum = 0xffff;
        }
        l4[6..8].copy_from_slice(&csum.to_be_bytes());
    }
    frame(*src.ip(), *dst.ip(), UDP, &l4)
}

fn frame(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&GATEWAY_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let csum = checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// A parsed frame, with its checksums checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub proto: u8,
    pub tcp_flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub payload: Vec<u8>,
    /// The UDP checksum field was 0 ("no checksum").
    pub udp_no_checksum: bool,
}

/// Parses an IPv4 TCP/UDP frame; fails if the IPv4 header checksum or the
/// TCP/UDP checksum (over the pseudo-header) is wrong.
pub fn parse(f: &[u8]) -> anyhow::Result<Parsed> {
    anyhow::ensure!(f.len() >= 34 && f[12..14] == [0x08, 0x00], "not an IPv4 frame: {f:02x?}");
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    anyhow::ensure!(ip.len() >= total, "frame shorter than its IPv4 total length");
    anyhow::ensure!(checksum(&ip[..ihl]) == 0, "bad IPv4 header checksum in {:02x?}", &ip[..ihl]);
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let proto = ip[9];
    let l4 = &ip[ihl..total];
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    let (tcp_flags, seq, ack, payload, udp_no_checksum) = match proto {
        TCP => {
            anyhow::ensure!(l4_checksum(src_ip, dst_ip, TCP, l4) == 0, "bad TCP checksum");
            let doff = usize::from(l4[12] >> 4) * 4;
            let seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
            let ack = u32::from_be_bytes([l4[8], l4[9], l4[10], l4[11]]);
            (l4[13], seq, ack, l4[doff..].to_vec(), false)
        }
        UDP => {
            let none = l4[6..8] == [0, 0];
            anyhow::ensure!(none || l4_checksum(src_ip, dst_ip, UDP, l4) == 0, "bad UDP checksum");
            (0, 0, 0, l4[8..].to_vec(), none)
        }
        other => anyhow::bail!("protocol {other}"),
    };
    Ok(Parsed {
        dst_mac: f[0..6].try_into()?,
        src_mac: f[6..12].try_into()?,
        src: SocketAddrV4::new(src_ip, sport),
        dst: SocketAddrV4::new(dst_ip, dport),
        proto,
        tcp_flags,
        seq,
        ack,
        payload,
        udp_no_checksum,
    })
}
