//! `LB4_AFFINITY_V1` (LRU): (client, Service port) → backend, last use.
//! The kernel writes it; user space only forgets a Service whose Maglev row
//! is freed, so a later Service reusing the row inherits no stale pins.

use waggle_ebpf_common::lb::{AffinityKeyV1, AffinityV1};

use super::kv::{FakeKv, KernelKv, KvMap};
use crate::Error;

/// Reads and prunes session affinity; the kernel map or [`FakeAffinityMap`].
pub trait AffinityMapWriter: KvMap<AffinityKeyV1, AffinityV1> {
    /// Deletes every pin of `service_id`; returns how many there were.
    fn forget_service(&mut self, service_id: u32) -> Result<usize, Error> {
        let stale: Vec<AffinityKeyV1> =
            self.entries()?.into_iter().map(|(k, _)| k).filter(|k| k.service_id == service_id).collect();
        for key in &stale {
            self.remove(key)?;
        }
        Ok(stale.len())
    }
}
impl<T: KvMap<AffinityKeyV1, AffinityV1>> AffinityMapWriter for T {}

/// The pinned kernel map.
pub type AffinityMap = KernelKv<AffinityKeyV1, AffinityV1>;
/// In-memory twin of [`AffinityMap`].
pub type FakeAffinityMap = FakeKv<AffinityKeyV1, AffinityV1>;
