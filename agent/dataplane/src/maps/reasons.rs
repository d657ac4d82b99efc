//! `LB4_REASONS_V1`: packets and bytes per LB reason code, per CPU.

use aya::maps::{MapData, PerCpuArray};
use waggle_ebpf_common::{
    Counter,
    lb::{ReasonV1, names},
};

use crate::Error;

/// Read view of the reason counters; reads sum over CPUs.
pub struct ReasonTable {
    map: PerCpuArray<MapData, Counter>,
}

impl std::fmt::Debug for ReasonTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReasonTable").finish_non_exhaustive()
    }
}

impl ReasonTable {
    pub(crate) fn new(map: aya::maps::Map) -> Result<Self, Error> {
        let name = names::REASONS;
        let map = PerCpuArray::try_from(map).map_err(|source| Error::Map {
            name,
            action: "opening as a per-CPU array".into(),
            source,
        })?;
        Ok(Self { map })
    }

    /// The count for `reason`, summed over every CPU.
    pub fn read(&self, reason: ReasonV1) -> Result<Counter, Error> {
        let per_cpu = self.map.get(&(reason as u32), 0).map_err(|source| Error::Map {
            name: names::REASONS,
            action: format!("reading {reason:?}"),
            source,
        })?;
        Ok(per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        }))
    }
}
