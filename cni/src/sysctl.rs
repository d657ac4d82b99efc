//! The few sysctls the plugin sets, in the namespace of the calling thread.

use std::path::Path;

use crate::error::{Error, Result};

pub fn set(key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current.trim() == value {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|err| Error::io(format!("setting {key}={value}"), err))
}

/// Forwarding in the bridge's namespace, so the bridge routes for its pods.
pub fn enable_forwarding(ipv4: bool, ipv6: bool) -> Result<()> {
    if ipv4 {
        set("net.ipv4.ip_forward", "1")?;
    }
    if ipv6 {
        set("net.ipv6.conf.all.forwarding", "1")?;
    }
    Ok(())
}
