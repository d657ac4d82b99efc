//! waggle's eBPF programs.
//!
//! Each entry point is a one-line wrapper around a `try_` function; the stages
//! those call live in their own modules (`lb/` for Service load balancing).
#![no_std]
#![no_main]

mod counters;
mod lb;
mod packet;
mod parse;

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};

/// Counts every frame arriving on the interface and passes it up the stack.
#[xdp]
pub fn xdp_count(ctx: XdpContext) -> u32 {
    try_xdp_count(&ctx);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn try_xdp_count(ctx: &XdpContext) {
    let (data, end) = (ctx.data(), ctx.data_end());
    let class = parse::classify(data, end);
    counters::record(&counters::XDP_COUNTERS, class, (end - data) as u64);
}

/// Counts every packet passing the tc hook and lets it continue.
#[classifier]
pub fn tc_count(ctx: TcContext) -> i32 {
    try_tc_count(&ctx);
    TC_ACT_OK
}

#[inline(always)]
fn try_tc_count(ctx: &TcContext) {
    let class = parse::classify(ctx.data(), ctx.data_end());
    counters::record(&counters::TC_COUNTERS, class, u64::from(ctx.len()));
}

/// Service load balancing on the host side of pod veths and on node
/// interfaces (tc ingress): DNAT to a backend, reverse NAT of replies.
#[classifier]
pub fn tc_lb(ctx: TcContext) -> i32 {
    try_tc_lb(&ctx)
}

#[inline(always)]
fn try_tc_lb(ctx: &TcContext) -> i32 {
    let reason = lb::process(ctx);
    lb::verdict::finish_tc(ctx, reason)
}

/// Service load balancing on the node uplink (XDP): NodePort, externalIPs
/// and LoadBalancer IPs reached from outside are DNATed before the stack
/// sees them; everything else passes on.
#[xdp]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    try_xdp_lb(&ctx)
}

#[inline(always)]
fn try_xdp_lb(ctx: &XdpContext) -> u32 {
    let reason = lb::process(ctx);
    lb::verdict::finish_xdp(ctx, reason)
}

/// Socket-level Service load balancing: `connect()` to a frontend connects
/// to a backend (see `lb/sock.rs`). Always lets the call go on.
#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    try_sock_to_backend(&ctx)
}

/// Socket-level Service load balancing for unconnected UDP `sendmsg()`.
#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    try_sock_to_backend(&ctx)
}

/// UDP `recvmsg()` on a socket-balanced socket: the sender is the frontend.
#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    try_sock_to_frontend(&ctx)
}

/// `getpeername()` on a socket-balanced socket: the peer is the frontend.
#[cgroup_sock_addr(getpeername4)]
pub fn sock_getpeername4(ctx: SockAddrContext) -> i32 {
    try_sock_to_frontend(&ctx)
}

/// What a sock_addr program returns to let the call proceed.
const SOCK_ALLOW: i32 = 1;

#[inline(always)]
fn try_sock_to_backend(ctx: &SockAddrContext) -> i32 {
    lb::verdict::count(lb::sock::to_backend(ctx), 0);
    SOCK_ALLOW
}

#[inline(always)]
fn try_sock_to_frontend(ctx: &SockAddrContext) -> i32 {
    lb::verdict::count(lb::sock::to_frontend(ctx), 0);
    SOCK_ALLOW
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
