//! Per-CPU packet counters: map definitions and the one helper that bumps them.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use waggle_ebpf_common::{Counter, CounterSlot};

use crate::parse::Class;

#[map(name = "XDP_COUNTERS")]
pub static XDP_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(CounterSlot::COUNT, 0);

#[map(name = "TC_COUNTERS")]
pub static TC_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(CounterSlot::COUNT, 0);

#[inline(always)]
pub fn record(map: &PerCpuArray<Counter>, class: Class, bytes: u64) {
    bump(map, CounterSlot::All, bytes);
    if class.ipv4 {
        bump(map, CounterSlot::Ipv4, bytes);
    }
    if class.udp {
        bump(map, CounterSlot::Ipv4Udp, bytes);
    }
}

#[inline(always)]
fn bump(map: &PerCpuArray<Counter>, slot: CounterSlot, bytes: u64) {
    if let Some(counter) = map.get_ptr_mut(slot as u32) {
        // SAFETY: the pointer comes from the map lookup and this CPU's slot is
        // not shared, so a plain read-modify-write cannot race.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}
