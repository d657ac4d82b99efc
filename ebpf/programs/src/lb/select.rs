//! Backend selection for a new flow: session affinity first, then the
//! Service's Maglev row.

use waggle_ebpf_common::lb::{
    AffinityKeyV1, AffinityV1, BACKEND_ACTIVE, BACKEND_ID_NONE, BackendV1, MAGLEV_M, ReasonV1, SVC_F_AFFINITY,
    ServiceValueV1, flow_hash_v1,
};

use super::maps::{AFFINITY, BACKENDS, MAGLEV};
use crate::parse::Ipv4Flow;

/// The backend chosen for a new flow, and how.
pub struct Chosen {
    pub backend: BackendV1,
    pub backend_id: u32,
    /// [`ReasonV1::NewFlow`] or [`ReasonV1::AffinityHit`].
    pub reason: ReasonV1,
}

#[inline(always)]
pub fn backend(flow: &Ipv4Flow, svc: &ServiceValueV1, now: u64) -> Result<Chosen, ReasonV1> {
    let affinity = svc.flags & SVC_F_AFFINITY != 0;
    let akey = AffinityKeyV1 { client_addr_be: flow.saddr_be, service_id: svc.maglev_row };
    if affinity && let Some(chosen) = by_affinity(&akey, svc.affinity_timeout_s, now) {
        return Ok(chosen);
    }
    let hash = flow_hash_v1(flow.saddr_be, flow.daddr_be, flow.sport_be, flow.dport_be, flow.proto);
    let (backend_id, backend) = by_maglev(svc, hash)?;
    if affinity {
        let pinned = AffinityV1 { backend_id, _pad: 0, last_used_ns: now };
        AFFINITY.insert(akey, pinned, 0).map_err(|_| ReasonV1::MapUpdateFailed)?;
    }
    Ok(Chosen { backend, backend_id, reason: ReasonV1::NewFlow })
}

/// The backend in the Maglev slot `hash` falls in.
#[inline(always)]
pub fn by_maglev(svc: &ServiceValueV1, hash: u32) -> Result<(u32, BackendV1), ReasonV1> {
    let backend_id = maglev_slot(svc.maglev_row, hash % MAGLEV_M);
    if backend_id == BACKEND_ID_NONE {
        return Err(ReasonV1::BackendMissing);
    }
    // SAFETY: copied out at once.
    let Some(backend) = (unsafe { BACKENDS.get(backend_id) }).copied() else {
        return Err(ReasonV1::BackendMissing);
    };
    Ok((backend_id, backend))
}

/// The backend id in slot `slot` of Maglev row `row`.
#[inline(always)]
fn maglev_slot(row: u32, slot: u32) -> u32 {
    let Some(table) = MAGLEV.get(row) else {
        return BACKEND_ID_NONE;
    };
    // The verifier does not track the range of a modulo: hide the value from
    // LLVM (which would drop the check, knowing `slot < M`) so the bound check
    // below stays in the program and proves the access is inside the value.
    let slot = core::hint::black_box(slot) as usize;
    table.backend_ids.get(slot).copied().unwrap_or(BACKEND_ID_NONE)
}

/// The backend this client used within the timeout, if it is still active.
#[inline(always)]
fn by_affinity(akey: &AffinityKeyV1, timeout_s: u32, now: u64) -> Option<Chosen> {
    let pinned = AFFINITY.get_ptr_mut(akey)?;
    // SAFETY: the map value's pointer; a racing update of `last_used_ns` only
    // moves a timestamp.
    unsafe {
        if now.wrapping_sub((*pinned).last_used_ns) > u64::from(timeout_s) * 1_000_000_000 {
            return None;
        }
        let backend_id = (*pinned).backend_id;
        let backend = BACKENDS.get(backend_id).copied()?;
        if backend.state != BACKEND_ACTIVE {
            return None;
        }
        (*pinned).last_used_ns = now;
        Some(Chosen { backend, backend_id, reason: ReasonV1::AffinityHit })
    }
}
