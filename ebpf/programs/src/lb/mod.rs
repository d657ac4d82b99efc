//! Service load balancing, one module per stage.
//!
//! The same stages run in both hooks, written against [`Packet`]: `tc_lb`
//! (tc ingress of pod veths' host sides and node interfaces) and `xdp_lb`
//! (XDP on the node uplink, for NodePort, externalIPs and LoadBalancer IPs
//! reached from outside; replies of those flows leave through a pod veth,
//! whose `tc_lb` translates them back).
//!
//! Lookup order, for every IPv4 TCP/UDP packet:
//!
//! 1. `LB4_SVC_V1[daddr, dport, proto]`
//!    - miss → 2. `LB4_CT_V2[reply tuple]`: hit → reverse NAT (saddr, sport ←
//!      `LB4_REVNAT_V1[rev_nat_index]`); miss → pass unchanged.
//!    - hit → 3. `LB4_CT_V2[service tuple]`: a live entry (and not a fresh
//!      SYN) → DNAT to the backend it recorded, even if that backend has since
//!      left the Service.
//! 4. no ready backends → TCP SYN answered with a RST, anything else dropped.
//! 5. session affinity (`LB4_AFFINITY_V1[client, row]`, within its timeout,
//!    backend still active) → that backend.
//! 6. otherwise `LB4_MAGLEV_V2[row].backend_ids[flow_hash % M]` → backend id
//!    → `LB4_BACKEND_V1`.
//! 7. record both directions in `LB4_CT_V2` (and the affinity), then DNAT.
//!    Hairpin (the backend is the client itself): the source becomes
//!    `HAIRPIN_SNAT_ADDR` too, and the reply entry is keyed on it. A
//!    NodePort/externalIP frontend with externalTrafficPolicy Cluster whose
//!    backend is routed back out of the interface the packet came in on
//!    (another node's pod): the source becomes this node's address on that
//!    route, so replies return here to be translated; the client's port is
//!    kept unless another flow's replies already use (node, port) from that
//!    backend, then a free port is picked (`conntrack::free_snat_port`).
//!    Local policy, and Cluster with a local backend, keep the client address.
//!    A flow that keeps its source still gets a free source port when the
//!    backend's replies to the client's port belong to another frontend's
//!    flow (a client port reused towards a second Service with the same
//!    backend, which may hold the first connection in TIME_WAIT): the
//!    remap netfilter does on a tuple clash (`CT_F_PORT`).

pub mod conntrack;
pub mod maps;
pub mod nat;
pub mod reject;
pub mod select;
pub mod sock;
pub mod verdict;

use aya_ebpf::helpers::bpf_ktime_get_ns;
use conntrack::SourceNat;
use waggle_ebpf_common::lb::{
    HAIRPIN_SNAT_ADDR, ReasonV1, SVC_F_EXTERNAL, SVC_F_LOCAL, SVC_F_NODEPORT, ServiceKeyV1, ServiceValueV1,
};

use crate::packet::{self, Packet};
use crate::parse::{self, Ipv4Flow};

/// Runs the stages on one packet and says why it ended where it did.
#[inline(always)]
pub fn process<P: Packet>(ctx: &P) -> ReasonV1 {
    let flow = match parse::ipv4_flow(ctx) {
        Ok(flow) => flow,
        Err(reason) => return reason,
    };
    let key = ServiceKeyV1 { addr_be: flow.daddr_be, port_be: flow.dport_be, proto: flow.proto, _pad: 0 };
    // SAFETY: the value is copied out at once; user space may replace it
    // concurrently, which only means this packet sees the old or new value.
    let Some(svc) = (unsafe { maps::SERVICES.get(key) }).copied() else {
        return reply(ctx, &flow);
    };
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(tracked) = conntrack::lookup_service(&flow, now) {
        let source = match tracked.source {
            SourceNat::Node(_) => match packet::source_towards(ctx, tracked.addr_be) {
                Some(addr) => SourceNat::Node(addr),
                // The route changed; the flow is lost either way.
                None => SourceNat::None,
            },
            other => other,
        };
        let to = (tracked.addr_be, tracked.port_be);
        return match to_backend(ctx, &flow, to, source, tracked.snat_port_be) {
            Ok(()) => ReasonV1::CtHit,
            Err(()) => ReasonV1::RewriteFailed,
        };
    }
    if svc.backend_count == 0 {
        return reject::no_backends(ctx, &flow);
    }
    let chosen = match select::backend(&flow, &svc, now) {
        Ok(chosen) => chosen,
        Err(reason) => return reason,
    };
    let source = source_nat(ctx, &flow, &svc, chosen.backend.addr_be);
    let (source, sport_be) = match conntrack::create(&flow, &chosen, svc.rev_nat_index, now, source) {
        Ok(created) => created,
        Err(reason) => return reason,
    };
    match to_backend(ctx, &flow, (chosen.backend.addr_be, chosen.backend.port_be), source, sport_be) {
        Ok(()) => chosen.reason,
        Err(()) => ReasonV1::RewriteFailed,
    }
}

/// Whether a new flow's source must be rewritten too (see the module doc).
#[inline(always)]
fn source_nat<P: Packet>(ctx: &P, flow: &Ipv4Flow, svc: &ServiceValueV1, backend_be: u32) -> SourceNat {
    if backend_be == flow.saddr_be {
        return SourceNat::Hairpin;
    }
    let external = svc.flags & (SVC_F_NODEPORT | SVC_F_EXTERNAL) != 0;
    if external
        && svc.flags & SVC_F_LOCAL == 0
        && let Some(addr) = packet::source_towards(ctx, backend_be)
    {
        return SourceNat::Node(addr);
    }
    SourceNat::None
}

/// DNAT to the backend `(addr, port)`, and the source rewrite the flow
/// needs (`snat_port_be`: the source port of a [`SourceNat::Node`] flow).
#[inline(always)]
fn to_backend<P: Packet>(
    ctx: &P,
    flow: &Ipv4Flow,
    (addr_be, port_be): (u32, u16),
    source: SourceNat,
    snat_port_be: u16,
) -> Result<(), ()> {
    nat::dnat(ctx, flow, addr_be, port_be)?;
    match source {
        SourceNat::None => Ok(()),
        SourceNat::Hairpin => nat::snat(ctx, flow, HAIRPIN_SNAT_ADDR, flow.sport_be),
        SourceNat::Node(addr) => nat::snat(ctx, flow, addr, snat_port_be),
        SourceNat::Port => nat::snat(ctx, flow, flow.saddr_be, snat_port_be),
    }
}

/// Not addressed to a Service: a reply of a tracked flow gets its source
/// turned back into the frontend; anything else passes untouched.
#[inline(always)]
fn reply<P: Packet>(ctx: &P, flow: &Ipv4Flow) -> ReasonV1 {
    let Some(tracked) = conntrack::lookup_reply(flow) else {
        return ReasonV1::NoService;
    };
    // SAFETY: copied out at once, as above.
    let Some(frontend) = (unsafe { maps::REV_NAT.get(tracked.rev_nat_index) }).copied() else {
        return ReasonV1::RevNatMissing;
    };
    let mut rewritten = nat::snat(ctx, flow, frontend.addr_be, frontend.port_be);
    if let (Some((addr, port)), Ok(())) = (tracked.to_client, rewritten) {
        // The backend answered the address the flow was source-NATed to;
        // the answer goes on to the client.
        rewritten = nat::dnat(ctx, flow, addr, port);
    }
    match rewritten {
        Ok(()) => ReasonV1::RevNat,
        Err(()) => ReasonV1::RewriteFailed,
    }
}
