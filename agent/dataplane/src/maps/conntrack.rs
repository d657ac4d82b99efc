//! `LB4_CT_V2` (LRU): the kernel's connection tracking of Service flows.
//! User space only reads it (tests, debugging); the kernel writes it and the
//! LRU evicts it. It is pinned so that flows survive an agent restart.

use waggle_ebpf_common::lb::{CtEntryV2, CtKeyV1};

use super::kv::KernelKv;

/// The pinned kernel map (read through [`super::kv::KvMap`]).
pub type ConntrackTable = KernelKv<CtKeyV1, CtEntryV2>;
