//! One typed wrapper per eBPF map. Each writable map has a trait, the kernel
//! implementation and an in-memory fake with the same capacity rule.

pub mod affinity;
pub mod backend;
pub mod conntrack;
mod counters;
pub mod kv;
pub mod maglev;
pub mod reasons;
pub mod rev_nat;
pub mod service;

pub use affinity::{AffinityMap, AffinityMapWriter, FakeAffinityMap};
pub use backend::{BackendMap, BackendMapWriter, FakeBackendMap};
pub use conntrack::ConntrackTable;
pub use counters::CounterTable;
pub use kv::{FakeKv, KernelKv, KvMap};
pub use maglev::{FakeMaglevMap, MaglevMap, MaglevMapWriter};
pub use reasons::ReasonTable;
pub use rev_nat::{FakeRevNatMap, RevNatMap, RevNatMapWriter};
pub use service::{FakeServiceMap, ServiceMap, ServiceMapWriter};
