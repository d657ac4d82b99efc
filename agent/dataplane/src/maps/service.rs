//! `LB4_SVC_V1`: Service frontends (VIP or node address, port, protocol).

use waggle_ebpf_common::lb::{ServiceKeyV1, ServiceValueV1};

use super::kv::{FakeKv, KernelKv, KvMap};

/// Writes Service frontends; the kernel map or [`FakeServiceMap`].
pub trait ServiceMapWriter: KvMap<ServiceKeyV1, ServiceValueV1> {}
impl<T: KvMap<ServiceKeyV1, ServiceValueV1>> ServiceMapWriter for T {}

/// The pinned kernel map.
pub type ServiceMap = KernelKv<ServiceKeyV1, ServiceValueV1>;
/// In-memory twin of [`ServiceMap`].
pub type FakeServiceMap = FakeKv<ServiceKeyV1, ServiceValueV1>;
