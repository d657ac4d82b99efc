//! `LB4_REVNAT_V1`: rev-NAT index → the frontend replies are rewritten to.

use waggle_ebpf_common::lb::RevNatV1;

use super::kv::{FakeKv, KernelKv, KvMap};

/// Writes reverse-NAT entries; the kernel map or [`FakeRevNatMap`].
pub trait RevNatMapWriter: KvMap<u32, RevNatV1> {}
impl<T: KvMap<u32, RevNatV1>> RevNatMapWriter for T {}

/// The pinned kernel map.
pub type RevNatMap = KernelKv<u32, RevNatV1>;
/// In-memory twin of [`RevNatMap`].
pub type FakeRevNatMap = FakeKv<u32, RevNatV1>;
