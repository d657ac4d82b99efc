//! Reason codes become tc verdicts here, and only here; each is counted.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    programs::TcContext,
};
use waggle_ebpf_common::lb::ReasonV1;

use super::maps::REASONS;

#[inline(always)]
pub fn finish(ctx: &TcContext, reason: ReasonV1) -> i32 {
    count(reason, u64::from(ctx.len()));
    match reason {
        ReasonV1::NoBackendsRst | ReasonV1::NoBackendsIcmp => TC_ACT_REDIRECT,
        ReasonV1::NoBackendsDrop | ReasonV1::BackendMissing | ReasonV1::MapUpdateFailed | ReasonV1::RewriteFailed => {
            TC_ACT_SHOT
        }
        ReasonV1::NotIpv4L4
        | ReasonV1::Fragment
        | ReasonV1::Truncated
        | ReasonV1::NoService
        | ReasonV1::NewFlow
        | ReasonV1::AffinityHit
        | ReasonV1::CtHit
        | ReasonV1::RevNat
        | ReasonV1::RevNatMissing => TC_ACT_OK,
    }
}

#[inline(always)]
fn count(reason: ReasonV1, bytes: u64) {
    if let Some(counter) = REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: this CPU's slot; nothing else writes it concurrently.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}
