//! Service load balancing, one module per stage.
//!
//! Lookup order, for every IPv4 TCP/UDP packet entering a pod veth's host side
//! or a node interface (tc ingress):
//!
//! 1. `LB4_SVC_V1[daddr, dport, proto]`
//!    - miss → 2. `LB4_CT_V1[reply tuple]`: hit → reverse NAT (saddr, sport ←
//!      `LB4_REVNAT_V1[rev_nat_index]`); miss → pass unchanged.
//!    - hit → 3. `LB4_CT_V1[service tuple]`: a live entry (and not a fresh
//!      SYN) → DNAT to the backend it recorded, even if that backend has since
//!      left the Service.
//! 4. no ready backends → TCP SYN answered with a RST, anything else dropped.
//! 5. session affinity (`LB4_AFFINITY_V1[client, row]`, within its timeout,
//!    backend still active) → that backend.
//! 6. otherwise `LB4_MAGLEV_V2[row].backend_ids[flow_hash % M]` → backend id
//!    → `LB4_BACKEND_V1`.
//! 7. record both directions in `LB4_CT_V1` (and the affinity), then DNAT.

pub mod conntrack;
pub mod maps;
pub mod nat;
pub mod reject;
pub mod select;
pub mod verdict;

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use waggle_ebpf_common::lb::{ReasonV1, ServiceKeyV1};

use crate::parse::{self, Ipv4Flow};

/// Runs the stages on one packet and says why it ended where it did.
#[inline(always)]
pub fn process(ctx: &TcContext) -> ReasonV1 {
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
    if let Some(backend) = conntrack::lookup_service(&flow, now) {
        return match nat::dnat(ctx, &flow, backend.addr_be, backend.port_be) {
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
    if conntrack::create(&flow, &chosen, svc.rev_nat_index, now).is_err() {
        return ReasonV1::MapUpdateFailed;
    }
    match nat::dnat(ctx, &flow, chosen.backend.addr_be, chosen.backend.port_be) {
        Ok(()) => chosen.reason,
        Err(()) => ReasonV1::RewriteFailed,
    }
}

/// Not addressed to a Service: a reply of a tracked flow gets its source
/// turned back into the frontend; anything else passes untouched.
#[inline(always)]
fn reply(ctx: &TcContext, flow: &Ipv4Flow) -> ReasonV1 {
    let Some(rev_nat_index) = conntrack::lookup_reply(flow) else {
        return ReasonV1::NoService;
    };
    // SAFETY: copied out at once, as above.
    let Some(frontend) = (unsafe { maps::REV_NAT.get(rev_nat_index) }).copied() else {
        return ReasonV1::RevNatMissing;
    };
    match nat::snat(ctx, flow, frontend.addr_be, frontend.port_be) {
        Ok(()) => ReasonV1::RevNat,
        Err(()) => ReasonV1::RewriteFailed,
    }
}
