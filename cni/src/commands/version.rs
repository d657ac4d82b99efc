//! VERSION: the versions this plugin speaks.

use crate::spec::{LATEST, VersionResult};

/// Answers with the caller's `cniVersion` when it sent one, as the spec asks.
pub fn cmd_version(stdin: &[u8]) -> VersionResult {
    let asked = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(|v| v.as_str()).map(String::from));
    VersionResult::new(asked.as_deref().unwrap_or(LATEST))
}
