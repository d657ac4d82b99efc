//! Service load balancing: the keys and values of the LB maps, the reason
//! codes the LB program reports, and the flow hash both sides agree on.
//!
//! Byte order: every field ending in `_be` holds its value in network byte
//! order, i.e. its in-memory bytes are the bytes on the wire
//! (`u32::from_ne_bytes(ip.octets())` in user space). All other integers are
//! host order.
//!
//! Map layout (IPv4):
//!
//! ```text
//! LB4_SVC_V1      hash   ServiceKeyV1 (vip, port, proto) → ServiceValueV1 (row, count, flags…)
//! LB4_BACKEND_V1  hash   backend id (u32)                → BackendV1 (addr, port, state)
//! LB4_MAGLEV_V2   array  row (u32)                       → MaglevRowV2 (MAGLEV_M backend ids)
//! LB4_REVNAT_V1   hash   rev-NAT index (u32)             → RevNatV1 (vip, port)
//! LB4_CT_V2       lru    CtKeyV1 (5-tuple + direction)   → CtEntryV2 (backend, rev-NAT index, times, SNAT port)
//! LB4_AFFINITY_V1 lru    AffinityKeyV1 (client, svc id)  → AffinityV1 (backend id, last used)
//! LB4_REASONS_V1  percpu reason code (u32)               → Counter
//! LB4_SOCK_REVNAT_V1 lru SockRevNatKeyV1 (socket, backend) → RevNatV1 (vip, port)
//! ```

/// Size of one Maglev lookup-table row (the paper's M): a prime, so every
/// backend's `skip` is coprime with it and each permutation visits every slot.
///
/// 1021 keeps the imbalance between backends under about 10 % up to ~10
/// backends per Service (the paper asks for M ≫ N; ≥ 100·N for ≤ 1 %), and
/// a row costs 4 KiB, so 10,000 Services fit in 40 MiB of array map. A larger
/// M (Cilium's default is 16381) would make 10,000 Services cost 640 MiB,
/// because an array map is preallocated. Changing it changes the map layout:
/// it is part of the versioned `LB4_MAGLEV_V2` contract.
pub const MAGLEV_M: u32 = 1021;

/// One Service port's whole Maglev lookup table: the value of one
/// `LB4_MAGLEV_V2` entry. Slot `flow_hash % MAGLEV_M` names the backend.
///
/// V1 flattened all rows into one `u32` array (`row * M + slot`), so writing
/// a row took up to 1021 syscalls; programming 10,000 Services took seconds.
/// A row per value is written with one syscall (the kernel copies 4 KiB), and
/// the packet still does one array lookup (inlined by the verifier) plus an
/// index into the value. An ARRAY_OF_MAPS (one inner array per row) would
/// also write a row at once, but costs a map (fd, kernel object) per Service
/// and a second lookup per packet, and aya 0.14 cannot create inner maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaglevRowV2 {
    pub backend_ids: [u32; MAGLEV_M as usize],
}

const _: () = assert!(core::mem::size_of::<MaglevRowV2>() == 4 * MAGLEV_M as usize);

impl Default for MaglevRowV2 {
    fn default() -> Self {
        Self { backend_ids: [BACKEND_ID_NONE; MAGLEV_M as usize] }
    }
}

/// Backend id that never names a backend: an empty Maglev slot.
pub const BACKEND_ID_NONE: u32 = 0;

/// Names of the LB maps and programs. Versioned: a layout change means a new
/// name, so a new agent never reads an old pinned map with the wrong layout.
pub mod names {
    pub const SERVICES: &str = "LB4_SVC_V1";
    pub const BACKENDS: &str = "LB4_BACKEND_V1";
    pub const MAGLEV: &str = "LB4_MAGLEV_V2";
    pub const REV_NAT: &str = "LB4_REVNAT_V1";
    pub const CONNTRACK: &str = "LB4_CT_V2";
    pub const AFFINITY: &str = "LB4_AFFINITY_V1";
    pub const REASONS: &str = "LB4_REASONS_V1";
    pub const SOCK_REV_NAT: &str = "LB4_SOCK_REVNAT_V1";
    /// Every map that is pinned and survives an agent restart.
    pub const PINNED: [&str; 7] = [SERVICES, BACKENDS, MAGLEV, REV_NAT, CONNTRACK, AFFINITY, SOCK_REV_NAT];
    /// Pinned maps of earlier layouts that no program reads any more: an
    /// agent that finds one in its pin dir removes it (the kernel frees the
    /// map once nothing holds it).
    pub const RETIRED: [&str; 2] = ["LB4_CT_V1", "LB4_MAGLEV_V1"];
    /// tc program for the host side of pod veths and for node interfaces
    /// (ingress): Service DNAT for requests, reverse NAT for replies.
    pub const TC_LB: &str = "tc_lb";
    /// XDP program for the node uplink: the same stages as [`TC_LB`] on
    /// frames from outside the node (NodePort, externalIPs, LB IPs).
    pub const XDP_LB: &str = "xdp_lb";
    /// Socket-level LB (cgroup v2): a TCP or UDP `connect()` to a frontend
    /// is connected to a backend instead, so no packet of the flow needs NAT.
    pub const SOCK_CONNECT4: &str = "sock_connect4";
    /// Socket-level LB for unconnected UDP: each `sendmsg()` to a frontend.
    pub const SOCK_SENDMSG4: &str = "sock_sendmsg4";
    /// Socket-level reverse NAT: `recvmsg()` on UDP reports the frontend as
    /// the sender of a backend's datagram.
    pub const SOCK_RECVMSG4: &str = "sock_recvmsg4";
    /// Socket-level reverse NAT: `getpeername()` reports the frontend.
    pub const SOCK_GETPEERNAME4: &str = "sock_getpeername4";
    /// The socket-level programs, each with its cgroup attach point.
    pub const SOCK_LB: [&str; 4] = [SOCK_CONNECT4, SOCK_SENDMSG4, SOCK_RECVMSG4, SOCK_GETPEERNAME4];
}

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;

/// Frontend of a Service: the address, port and protocol a client sends to.
/// ClusterIP, externalIP, LoadBalancer ingress IP and NodePort frontends (one
/// per node address) all use this key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKeyV1 {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

const _: () = assert!(core::mem::size_of::<ServiceKeyV1>() == 8);
const _: () = assert!(core::mem::offset_of!(ServiceKeyV1, proto) == 6);

/// [`ServiceValueV1::flags`]: sessionAffinity ClientIP.
pub const SVC_F_AFFINITY: u8 = 1 << 0;
/// [`ServiceValueV1::flags`]: this frontend only uses node-local endpoints
/// (externalTrafficPolicy or internalTrafficPolicy Local).
pub const SVC_F_LOCAL: u8 = 1 << 1;
/// [`ServiceValueV1::flags`]: this frontend is a NodePort on a node address.
pub const SVC_F_NODEPORT: u8 = 1 << 2;
/// [`ServiceValueV1::flags`]: externalIP or LoadBalancer ingress IP.
pub const SVC_F_EXTERNAL: u8 = 1 << 3;

/// What a frontend leads to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceValueV1 {
    /// Row of the Maglev table; also the id that keys session affinity, so
    /// the ClusterIP and NodePort frontends of one Service port share both.
    pub maglev_row: u32,
    /// Ready backends in the row; 0 means "no endpoints" (the row is unused).
    pub backend_count: u32,
    /// sessionAffinityConfig.clientIP.timeoutSeconds (meaningful with
    /// [`SVC_F_AFFINITY`]).
    pub affinity_timeout_s: u32,
    /// Key of the [`RevNatV1`] entry that turns replies back into this frontend.
    pub rev_nat_index: u32,
    /// `SVC_F_*`.
    pub flags: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<ServiceValueV1>() == 20);
const _: () = assert!(core::mem::offset_of!(ServiceValueV1, flags) == 16);

/// [`BackendV1::state`]: ready, may receive new flows.
pub const BACKEND_ACTIVE: u8 = 0;
/// [`BackendV1::state`]: terminating: keeps existing flows, takes no new
/// ones, not even through session affinity.
pub const BACKEND_TERMINATING: u8 = 1;

/// One endpoint (pod address and target port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendV1 {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub state: u8,
}

const _: () = assert!(core::mem::size_of::<BackendV1>() == 8);

/// Where replies of a flow are rewritten back to: the frontend the client used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RevNatV1 {
    pub addr_be: u32,
    pub port_be: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<RevNatV1>() == 8);

/// [`CtKeyV1::dir`]: client → frontend, as the client sent it (before DNAT).
pub const CT_DIR_SERVICE: u8 = 0;
/// [`CtKeyV1::dir`]: backend → client, as the backend sends it (before
/// reverse NAT).
pub const CT_DIR_REPLY: u8 = 1;

/// A flow's 5-tuple as seen in one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CtKeyV1 {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    /// `CT_DIR_*`.
    pub dir: u8,
    pub _pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<CtKeyV1>() == 16);
const _: () = assert!(core::mem::offset_of!(CtKeyV1, proto) == 12);

/// Connection tracking state of one flow (one entry per direction).
///
/// The backend address is stored, not only its id, so that a flow keeps its
/// backend after the backend left the Service (terminating endpoints keep
/// their flows), as kube-proxy's conntrack-based DNAT does.
///
/// V1 had no room for a source port of our choosing: a source-NATed flow
/// kept its client's port, so two clients using the same port towards one
/// remote backend collided on one reply tuple. V2 records the port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtEntryV2 {
    pub backend_addr_be: u32,
    pub backend_port_be: u16,
    /// `CT_F_*`.
    pub flags: u8,
    pub _pad: u8,
    pub backend_id: u32,
    pub rev_nat_index: u32,
    /// bpf_ktime_get_ns() when the flow was created.
    pub created_ns: u64,
    /// bpf_ktime_get_ns() of the last packet in the service direction.
    pub last_seen_ns: u64,
    /// Service direction of a [`CT_F_SNAT`] flow: the source port it leaves
    /// with (the client's own, unless another flow already held that reply
    /// tuple). 0 otherwise.
    pub snat_port_be: u16,
    pub _pad2: [u8; 6],
}

const _: () = assert!(core::mem::size_of::<CtEntryV2>() == 40);
const _: () = assert!(core::mem::offset_of!(CtEntryV2, created_ns) == 16);
const _: () = assert!(core::mem::offset_of!(CtEntryV2, snat_port_be) == 32);

/// Source-NAT ports picked when a flow's own port is taken: the range
/// Cilium's and the kernel's NAT use for such remapping.
pub const SNAT_PORT_MIN: u16 = 1024;
pub const SNAT_PORT_MAX: u16 = 65535;
/// Ports tried (the client's own, then random ones) before a new
/// source-NATed flow is refused.
pub const SNAT_ATTEMPTS: u32 = 16;

/// [`CtEntryV2::flags`]: a FIN or RST was seen; a new SYN on this tuple
/// starts a new flow.
pub const CT_F_CLOSING: u8 = 1 << 0;
/// [`CtEntryV2::flags`]: a hairpin flow, a pod that reached itself through a
/// Service. Its source is rewritten to [`HAIRPIN_SNAT_ADDR`] (the source
/// port is kept), because a packet from the pod's own address would be
/// dropped as a martian by the pod; its replies get their destination turned
/// back into the pod.
pub const CT_F_HAIRPIN: u8 = 1 << 1;

/// [`CtEntryV2::flags`]: an externally reached flow (NodePort, externalIP,
/// LoadBalancer IP with externalTrafficPolicy Cluster) sent to a backend on
/// another node: its source is rewritten to this node's address on the
/// route to the backend (the client's port is kept), so that the replies
/// come back through this node. The reply-direction entry of such a flow
/// holds the client's address and port in `backend_addr_be` /
/// `backend_port_be`: where the translated reply goes.
pub const CT_F_SNAT: u8 = 1 << 2;

/// [`CtEntryV2::flags`]: a flow whose source port was remapped (the client
/// address is kept) because the reply tuple it would have used towards its
/// backend is still held by another frontend's flow from the same client
/// port: the client reused a port towards a second Service that picked the
/// same backend, which may still hold the first connection in TIME_WAIT and
/// would refuse the new SYN (its sequence number and timestamps follow the
/// client's other destination). This is the source-port remap netfilter
/// does on a tuple clash, which kube-proxy's iptables mode inherits.
/// `snat_port_be` is the port it leaves with; the reply-direction entry
/// holds the client's address and port, as for [`CT_F_SNAT`].
pub const CT_F_PORT: u8 = 1 << 3;

/// Source address of hairpin flows (169.254.42.1, in memory order): a
/// link-local address no pod owns, which the pod answers through its default
/// gateway, that is through the host side of its veth, where the reply is
/// translated back (Cilium's "service loopback" address, the role the
/// bridge's address plays in kube-proxy's masquerade-hairpin).
pub const HAIRPIN_SNAT_ADDR: u32 = u32::from_ne_bytes([169, 254, 42, 1]);

/// A flow that saw no packet for this long is forgotten (TCP).
pub const CT_TIMEOUT_TCP_NS: u64 = 6 * 3600 * 1_000_000_000;
/// A flow that saw no packet for this long is forgotten (UDP).
pub const CT_TIMEOUT_UDP_NS: u64 = 60 * 1_000_000_000;

/// Session affinity: which client is pinned to which Service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AffinityKeyV1 {
    pub client_addr_be: u32,
    /// [`ServiceValueV1::maglev_row`] of the Service port.
    pub service_id: u32,
}

const _: () = assert!(core::mem::size_of::<AffinityKeyV1>() == 8);

/// The backend a client was last sent to, and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityV1 {
    pub backend_id: u32,
    pub _pad: u32,
    pub last_used_ns: u64,
}

const _: () = assert!(core::mem::size_of::<AffinityV1>() == 16);

/// Socket-level LB: a socket that was connected (or sent) to a backend in
/// place of a frontend, keyed by the socket and that backend. Looked up when
/// the socket reports its peer (`getpeername`, UDP `recvmsg`), which must be
/// the frontend the application asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SockRevNatKeyV1 {
    /// bpf_get_socket_cookie(): unique per socket for the kernel's lifetime.
    pub cookie: u64,
    pub backend_addr_be: u32,
    pub backend_port_be: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<SockRevNatKeyV1>() == 16);
const _: () = assert!(core::mem::offset_of!(SockRevNatKeyV1, backend_addr_be) == 8);

/// Why the LB program did what it did. Each code has one verdict (see the
/// programs' `verdict.rs`); each is counted in `LB4_REASONS_V1`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReasonV1 {
    /// Not IPv4, or not TCP/UDP: not ours, passed.
    NotIpv4L4 = 0,
    /// An IPv4 fragment: passed untouched (Service traffic is not fragmented
    /// by pods sending through a veth with its MTU).
    Fragment = 1,
    /// The header could not be read: passed.
    Truncated = 2,
    /// No Service frontend, no tracked reply: passed unchanged.
    NoService = 3,
    /// A new flow, sent to the backend Maglev chose.
    NewFlow = 4,
    /// A new flow, sent to the backend session affinity chose.
    AffinityHit = 5,
    /// An existing flow, sent to its tracked backend.
    CtHit = 6,
    /// A reply, rewritten back to the frontend.
    RevNat = 7,
    /// A Service with no ready endpoints: a TCP SYN was answered with a RST.
    NoBackendsRst = 8,
    /// A Service with no ready endpoints: dropped (neither a TCP SYN nor UDP).
    NoBackendsDrop = 9,
    /// The Maglev slot named a backend that is not in the backend map.
    BackendMissing = 10,
    /// Writing conntrack or affinity state failed: dropped, a flow we cannot
    /// track would lose its replies.
    MapUpdateFailed = 11,
    /// Rewriting the packet failed: dropped.
    RewriteFailed = 12,
    /// A reply whose reverse-NAT entry is gone (Service deleted): passed.
    RevNatMissing = 13,
    /// A Service with no ready endpoints: a UDP datagram was answered with an
    /// ICMP port unreachable.
    NoBackendsIcmp = 14,
    /// Socket-level LB: a `connect()` or `sendmsg()` to a frontend was sent
    /// to a backend; no packet of it needs NAT.
    SockToBackend = 15,
    /// Socket-level LB: a frontend the socket programs leave to the packet
    /// path (no ready backends: the tc program answers; session affinity:
    /// it needs the client's address, which a socket has not chosen yet).
    SockLeftToPackets = 16,
    /// Socket-level LB: `getpeername()` or a UDP `recvmsg()` reported the
    /// frontend in place of the backend.
    SockRevNat = 17,
    /// A new source-NATed flow found every source port it tried taken:
    /// dropped (the client retries with a new SYN).
    SnatPortsExhausted = 18,
}

impl ReasonV1 {
    /// Number of reason codes (size of the reason counter array).
    pub const COUNT: u32 = 19;
}

/// Seed of the flow hash. Every node uses the same one, so every node sends a
/// given flow to the same backend.
pub const FLOW_HASH_SEED: u32 = 0x5741_4747; // "WAGG"

#[inline(always)]
const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Hash of a flow's 5-tuple (fields as on the wire), used to pick its Maglev
/// slot. A murmur3-style mix: cheap in eBPF (no loops, no tables).
#[inline(always)]
pub const fn flow_hash_v1(saddr_be: u32, daddr_be: u32, sport_be: u16, dport_be: u16, proto: u8) -> u32 {
    let mut h = FLOW_HASH_SEED;
    h = fmix32(h ^ saddr_be);
    h = fmix32(h.wrapping_add(0x9e37_79b9) ^ daddr_be);
    h = fmix32(h.wrapping_add(0x9e37_79b9) ^ (((sport_be as u32) << 16) | dport_be as u32));
    fmix32(h.wrapping_add(0x9e37_79b9) ^ proto as u32)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): `#[repr(C)]` structs of integers whose padding is spelled
    // out as named fields, so every byte is initialised.
    unsafe impl aya::Pod for super::ServiceKeyV1 {}
    unsafe impl aya::Pod for super::ServiceValueV1 {}
    unsafe impl aya::Pod for super::BackendV1 {}
    unsafe impl aya::Pod for super::RevNatV1 {}
    unsafe impl aya::Pod for super::CtKeyV1 {}
    unsafe impl aya::Pod for super::CtEntryV2 {}
    unsafe impl aya::Pod for super::AffinityKeyV1 {}
    unsafe impl aya::Pod for super::AffinityV1 {}
    unsafe impl aya::Pod for super::MaglevRowV2 {}
    unsafe impl aya::Pod for super::SockRevNatKeyV1 {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flow_hash_is_pinned_so_every_node_and_version_agrees() {
        let a = flow_hash_v1(
            u32::from_ne_bytes([10, 244, 1, 5]),
            u32::from_ne_bytes([10, 96, 0, 10]),
            40000u16.to_be(),
            80u16.to_be(),
            IPPROTO_TCP,
        );
        assert_eq!(
            a,
            flow_hash_v1(
                u32::from_ne_bytes([10, 244, 1, 5]),
                u32::from_ne_bytes([10, 96, 0, 10]),
                40000u16.to_be(),
                80u16.to_be(),
                IPPROTO_TCP
            )
        );
        assert_eq!(a, PINNED_FLOW_HASH);
    }

    #[test]
    fn every_field_of_the_tuple_moves_the_hash() {
        let base = flow_hash_v1(1, 2, 3, 4, 6);
        assert_ne!(base, flow_hash_v1(9, 2, 3, 4, 6));
        assert_ne!(base, flow_hash_v1(1, 9, 3, 4, 6));
        assert_ne!(base, flow_hash_v1(1, 2, 9, 4, 6));
        assert_ne!(base, flow_hash_v1(1, 2, 3, 9, 6));
        assert_ne!(base, flow_hash_v1(1, 2, 3, 4, 17));
        assert_ne!(flow_hash_v1(1, 2, 3, 4, 6), flow_hash_v1(2, 1, 4, 3, 6), "direction matters");
    }

    #[test]
    fn consecutive_source_ports_spread_over_maglev_slots() {
        let mut buckets = [0u32; 8];
        for port in 30000u16..38000 {
            let h = flow_hash_v1(0x0a00_0001, 0x0a60_000a, port.to_be(), 80u16.to_be(), IPPROTO_TCP);
            buckets[((h % MAGLEV_M) % 8) as usize] += 1;
        }
        for b in buckets {
            assert!((900..1100).contains(&b), "{buckets:?}");
        }
    }

    // Little-endian hosts, like the bpfel programs (fields are raw wire bytes).
    const PINNED_FLOW_HASH: u32 = 3_080_444_950;
}
