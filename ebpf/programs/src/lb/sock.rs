//! Socket-level load balancing (cgroup v2 `sock_addr` hooks), the way
//! Cilium's kube-proxy replacement does it: a `connect()` (TCP or UDP) or an
//! unconnected UDP `sendmsg()` to a frontend is pointed at a backend before
//! the socket sends anything, so none of the flow's packets need DNAT,
//! conntrack or reverse NAT; `getpeername()` and UDP `recvmsg()` report the
//! frontend again, so the application sees the address it asked for.
//!
//! Lookup order, on connect4/sendmsg4:
//!
//! 1. `LB4_SVC_V1[user_ip4, user_port, protocol]`: miss → untouched.
//! 2. No ready backends, or sessionAffinity ClientIP (which keys on the
//!    client's address, not chosen yet at `connect()`) → untouched: the
//!    packet path (`tc_lb`) answers or balances those.
//! 3. `LB4_MAGLEV_V2[row]` at the slot of the socket's hash (its cookie, so
//!    every `sendmsg()` of one UDP socket goes to one backend) → backend.
//! 4. `LB4_SOCK_REVNAT_V1[cookie, backend] = frontend`, then the socket's
//!    destination becomes the backend.
//!
//! On recvmsg4/getpeername4: `LB4_SOCK_REVNAT_V1[cookie, peer]` hit → the
//! peer reported is the frontend.
//!
//! What the socket hooks cannot see (traffic from outside the node, from
//! processes outside the cgroup the programs are attached to) still goes
//! through `tc_lb`/`xdp_lb`.

use aya_ebpf::{EbpfContext as _, bindings::bpf_sock_addr, helpers::bpf_get_socket_cookie, programs::SockAddrContext};
use waggle_ebpf_common::lb::{
    IPPROTO_TCP, ReasonV1, RevNatV1, SVC_F_AFFINITY, ServiceKeyV1, SockRevNatKeyV1, flow_hash_v1,
};

use super::{
    maps::{SERVICES, SOCK_REV_NAT},
    select,
};

/// IP protocol number of UDP.
const IPPROTO_UDP: u8 = 17;

/// connect4 and sendmsg4: the frontend the socket addresses becomes a backend.
#[inline(always)]
pub fn to_backend(ctx: &SockAddrContext) -> ReasonV1 {
    // SAFETY: the kernel hands every sock_addr program a valid context.
    let sa = unsafe { &mut *(ctx.as_ptr() as *mut bpf_sock_addr) };
    let proto = sa.protocol as u8;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return ReasonV1::NotIpv4L4;
    }
    // user_port holds the port in network order in its first two bytes.
    let (addr_be, port_be) = (sa.user_ip4, sa.user_port as u16);
    let key = ServiceKeyV1 { addr_be, port_be, proto, _pad: 0 };
    // SAFETY: the value is copied out at once (see `lb::process`).
    let Some(svc) = (unsafe { SERVICES.get(key) }).copied() else {
        return ReasonV1::NoService;
    };
    if svc.backend_count == 0 || svc.flags & SVC_F_AFFINITY != 0 {
        return ReasonV1::SockLeftToPackets;
    }
    // SAFETY: a sock_addr context is a valid argument of this helper.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let hash = flow_hash_v1(cookie as u32, addr_be, (cookie >> 32) as u16, port_be, proto);
    let backend = match select::by_maglev(&svc, hash) {
        Ok((_, backend)) => backend,
        Err(reason) => return reason,
    };
    let rkey = SockRevNatKeyV1 { cookie, backend_addr_be: backend.addr_be, backend_port_be: backend.port_be, _pad: 0 };
    let frontend = RevNatV1 { addr_be, port_be, _pad: 0 };
    if SOCK_REV_NAT.insert(rkey, frontend, 0).is_err() {
        // Without the entry the socket would report the backend as its peer;
        // the packet path can still balance it.
        return ReasonV1::MapUpdateFailed;
    }
    sa.user_ip4 = backend.addr_be;
    sa.user_port = u32::from(backend.port_be);
    ReasonV1::SockToBackend
}

/// recvmsg4 and getpeername4: a backend this socket was pointed at is
/// reported as the frontend.
#[inline(always)]
pub fn to_frontend(ctx: &SockAddrContext) -> ReasonV1 {
    // SAFETY: as above.
    let sa = unsafe { &mut *(ctx.as_ptr() as *mut bpf_sock_addr) };
    // SAFETY: as above.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let rkey = SockRevNatKeyV1 { cookie, backend_addr_be: sa.user_ip4, backend_port_be: sa.user_port as u16, _pad: 0 };
    // SAFETY: copied out at once.
    let Some(frontend) = (unsafe { SOCK_REV_NAT.get(rkey) }).copied() else {
        return ReasonV1::NoService;
    };
    sa.user_ip4 = frontend.addr_be;
    sa.user_port = u32::from(frontend.port_be);
    ReasonV1::SockRevNat
}
