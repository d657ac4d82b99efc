//! `LB4_BACKEND_V1`: backend id → endpoint address, port, state.

use waggle_ebpf_common::lb::BackendV1;

use super::kv::{FakeKv, KernelKv, KvMap};

/// Writes backends; the kernel map or [`FakeBackendMap`].
pub trait BackendMapWriter: KvMap<u32, BackendV1> {}
impl<T: KvMap<u32, BackendV1>> BackendMapWriter for T {}

/// The pinned kernel map.
pub type BackendMap = KernelKv<u32, BackendV1>;
/// In-memory twin of [`BackendMap`].
pub type FakeBackendMap = FakeKv<u32, BackendV1>;
