//! Per-CPU packet counters (`XDP_COUNTERS`, `TC_COUNTERS`).

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use waggle_ebpf_common::{Counter, CounterSlot};

use crate::Error;

/// A read view of one per-CPU counter array; reads sum over CPUs.
pub struct CounterTable<'a> {
    name: &'static str,
    map: PerCpuArray<&'a MapData, Counter>,
}

impl std::fmt::Debug for CounterTable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterTable").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<'a> CounterTable<'a> {
    pub(crate) fn new(ebpf: &'a Ebpf, name: &'static str) -> Result<Self, Error> {
        let map = ebpf.map(name).ok_or(Error::MissingMap { name })?;
        let map = PerCpuArray::try_from(map).map_err(|source| Error::Map {
            name,
            action: "opening as a per-CPU array".into(),
            source,
        })?;
        Ok(Self { name, map })
    }

    /// The count in `slot`, summed over every CPU.
    pub fn read(&self, slot: CounterSlot) -> Result<Counter, Error> {
        let per_cpu = self.map.get(&(slot as u32), 0).map_err(|source| Error::Map {
            name: self.name,
            action: format!("reading slot {slot:?}"),
            source,
        })?;
        Ok(per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        }))
    }
}
