//! The LB maps. Definitions only: the logic that reads and writes them lives
//! in the stage modules beside this one. Sizes here are defaults; the loader
//! sets the real capacities (flags) before the maps are created.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use waggle_ebpf_common::{
    Counter,
    lb::{
        AffinityKeyV1, AffinityV1, BackendV1, CtEntryV2, CtKeyV1, MaglevRowV2, ReasonV1, RevNatV1, ServiceKeyV1,
        ServiceValueV1, SockRevNatKeyV1,
    },
};

/// Frontends (VIP, port, protocol) → Service.
#[map(name = "LB4_SVC_V1")]
pub static SERVICES: HashMap<ServiceKeyV1, ServiceValueV1> = HashMap::with_max_entries(65536, 0);

/// Backend id → endpoint.
#[map(name = "LB4_BACKEND_V1")]
pub static BACKENDS: HashMap<u32, BackendV1> = HashMap::with_max_entries(65536, 0);

/// Maglev rows: one value per Service port holding its `MAGLEV_M` slots.
#[map(name = "LB4_MAGLEV_V2")]
pub static MAGLEV: Array<MaglevRowV2> = Array::with_max_entries(1024, 0);

/// Rev-NAT index → the frontend replies are rewritten to.
#[map(name = "LB4_REVNAT_V1")]
pub static REV_NAT: HashMap<u32, RevNatV1> = HashMap::with_max_entries(65536, 0);

/// Connection tracking, both directions of every flow.
#[map(name = "LB4_CT_V2")]
pub static CONNTRACK: LruHashMap<CtKeyV1, CtEntryV2> = LruHashMap::with_max_entries(262_144, 0);

/// sessionAffinity ClientIP: (client, Service port) → backend.
#[map(name = "LB4_AFFINITY_V1")]
pub static AFFINITY: LruHashMap<AffinityKeyV1, AffinityV1> = LruHashMap::with_max_entries(65536, 0);

/// Packets and bytes per reason code.
#[map(name = "LB4_REASONS_V1")]
pub static REASONS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(ReasonV1::COUNT, 0);

/// Socket-level LB: (socket, backend) → the frontend it stands for.
#[map(name = "LB4_SOCK_REVNAT_V1")]
pub static SOCK_REV_NAT: LruHashMap<SockRevNatKeyV1, RevNatV1> = LruHashMap::with_max_entries(262_144, 0);
