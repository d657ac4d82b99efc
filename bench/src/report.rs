//! Latency statistics and the JSON report.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// p50/p99/max of a set of durations, in milliseconds.
pub fn percentiles(samples: &mut [Duration]) -> Value {
    samples.sort();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    serde_json::json!({"n": samples.len(), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)})
}

/// The machine's 1-minute load average (`/proc/loadavg`): the box is shared,
/// so a figure means little without it.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|l| l.parse().ok()))
        .unwrap_or(0.0)
}

/// Writes `report` to `path`, creating its directory.
pub fn write(path: &Path, report: &Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(report)?)?;
    Ok(())
}
