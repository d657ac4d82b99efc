//! Types shared between waggle's eBPF programs (`ebpf/programs`) and user space
//! (`agent/dataplane`).
//!
//! Every struct here crosses the kernel boundary, so each one is `#[repr(C)]`,
//! spells out its padding, and has its size checked at compile time. Changing a
//! layout means a new type and a new pinned map name, never an edit in place.
#![no_std]

/// Names of the maps and programs in the eBPF object. User space looks them up
/// by these names, so they are the single source of truth for both sides.
pub mod names {
    /// Per-CPU packet/byte counters updated by [`XDP_COUNT`].
    pub const XDP_COUNTERS: &str = "XDP_COUNTERS";
    /// Per-CPU packet/byte counters updated by [`TC_COUNT`].
    pub const TC_COUNTERS: &str = "TC_COUNTERS";
    /// XDP program that counts every frame it sees and passes it on.
    pub const XDP_COUNT: &str = "xdp_count";
    /// tc (classifier) program that counts every packet it sees and lets it through.
    pub const TC_COUNT: &str = "tc_count";
}

/// Index into a counter array, one slot per packet class.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterSlot {
    /// Every frame.
    All = 0,
    /// IPv4 frames.
    Ipv4 = 1,
    /// IPv4 UDP datagrams.
    Ipv4Udp = 2,
}

impl CounterSlot {
    /// Number of slots in a counter array.
    pub const COUNT: u32 = 3;
}

/// A packet and byte count, one per CPU per slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<Counter>() == 16);
const _: () = assert!(core::mem::align_of::<Counter>() == 8);

#[cfg(feature = "user")]
// SAFETY: `Counter` is `#[repr(C)]`, made only of integers, and has no padding.
unsafe impl aya::Pod for Counter {}

/// EtherType of IPv4, in host byte order.
pub const ETH_P_IP: u16 = 0x0800;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// Length of an Ethernet header without VLAN tags.
pub const ETH_HDR_LEN: usize = 14;

pub mod lb;
