//! Reason codes become tc and XDP verdicts here, and only here; each is
//! counted (one counter per reason, both hooks together).

use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, xdp_action};
use waggle_ebpf_common::lb::ReasonV1;

use super::maps::REASONS;
use crate::packet::Packet;

/// What becomes of a packet, whichever hook it is in.
enum Fate {
    Pass,
    Drop,
    /// Back out of the interface it came in on (an answer built in place).
    Bounce,
}

#[inline(always)]
pub fn finish_tc<P: Packet>(pkt: &P, reason: ReasonV1) -> i32 {
    match fate(pkt, reason) {
        Fate::Pass => TC_ACT_OK,
        Fate::Drop => TC_ACT_SHOT,
        Fate::Bounce => TC_ACT_REDIRECT,
    }
}

#[inline(always)]
pub fn finish_xdp<P: Packet>(pkt: &P, reason: ReasonV1) -> u32 {
    match fate(pkt, reason) {
        Fate::Pass => xdp_action::XDP_PASS,
        Fate::Drop => xdp_action::XDP_DROP,
        Fate::Bounce => xdp_action::XDP_TX,
    }
}

#[inline(always)]
fn fate<P: Packet>(pkt: &P, reason: ReasonV1) -> Fate {
    count(reason, u64::from(pkt.len()));
    match reason {
        ReasonV1::NoBackendsRst | ReasonV1::NoBackendsIcmp => Fate::Bounce,
        ReasonV1::NoBackendsDrop
        | ReasonV1::BackendMissing
        | ReasonV1::MapUpdateFailed
        | ReasonV1::RewriteFailed
        | ReasonV1::SnatPortsExhausted => Fate::Drop,
        ReasonV1::NotIpv4L4
        | ReasonV1::Fragment
        | ReasonV1::Truncated
        | ReasonV1::NoService
        | ReasonV1::NewFlow
        | ReasonV1::AffinityHit
        | ReasonV1::CtHit
        | ReasonV1::RevNat
        | ReasonV1::RevNatMissing
        | ReasonV1::SockToBackend
        | ReasonV1::SockLeftToPackets
        | ReasonV1::SockRevNat => Fate::Pass,
    }
}

/// Counts `reason` once (the socket programs count here too).
#[inline(always)]
pub fn count(reason: ReasonV1, bytes: u64) {
    if let Some(counter) = REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: this CPU's slot; nothing else writes it concurrently.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}
