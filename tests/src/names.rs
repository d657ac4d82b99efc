//! Unique names for kernel objects and containerd namespaces, so that tests
//! running in parallel (or an earlier run that crashed) never collide.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Eight hex digits mixing the pid, a per-process counter and the clock.
pub fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mixed = std::process::id().wrapping_mul(0x9E37_79B9) ^ n.wrapping_mul(0x85EB_CA6B) ^ nanos;
    format!("{mixed:08x}")
}

/// `<prefix>-<8 hex>`. Prefixes start with `wgt` so leftovers are recognisable.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", unique_suffix())
}

/// An interface name: at most 15 bytes (IFNAMSIZ - 1).
pub fn unique_ifname(prefix: &str) -> String {
    let name = format!("{prefix}{}", unique_suffix());
    assert!(name.len() <= 15, "interface name {name} is longer than 15 bytes");
    name
}
