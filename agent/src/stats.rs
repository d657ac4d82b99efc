//! Resource usage of the node and of its pods' containers, read from cgroups
//! (v1, cgroupfs driver: waggle-runtime gives runc the cgroup `/waggle/<id>`)
//! and sampled periodically, as the kubelet's cAdvisor housekeeping does. CPU
//! rates are the change of the cumulative counters between two samples.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use waggle_api::stats::{ContainerStats, CpuStats, MemoryStats, NodeStats, PodReference, PodStats, Summary};

use crate::cri::{ContainerRuntime, ContainerState};

/// Where the cgroup v1 hierarchies are mounted, and the parent of the
/// containers' cgroups.
#[derive(Clone, Debug)]
pub struct CgroupPaths {
    pub root: PathBuf,
    pub parent: String,
}

impl Default for CgroupPaths {
    fn default() -> Self {
        Self { root: PathBuf::from("/sys/fs/cgroup"), parent: "waggle".into() }
    }
}

impl CgroupPaths {
    fn file(&self, controller: &str, id: Option<&str>, name: &str) -> PathBuf {
        let mut p = self.root.join(controller);
        if let Some(id) = id {
            p = p.join(&self.parent).join(id);
        }
        p.join(name)
    }
}

/// The latest summary, shared with the agent API.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    latest: Arc<RwLock<Summary>>,
}

impl Stats {
    pub fn summary(&self) -> Summary {
        self.latest.read().map(|s| s.clone()).unwrap_or_default()
    }

    fn publish(&self, summary: Summary) {
        if let Ok(mut s) = self.latest.write() {
            *s = summary;
        }
    }
}

/// One cumulative CPU reading.
#[derive(Clone, Copy, Debug)]
struct Reading {
    at: SystemTime,
    cpu_ns: u64,
}

/// The sampler's memory of the previous readings, by container id ("" is the node).
#[derive(Debug, Default)]
struct Previous(HashMap<String, Reading>);

impl Previous {
    /// CPU stats from a new reading, with the rate since the previous one.
    fn cpu(&mut self, key: &str, now: Reading) -> CpuStats {
        let rate = self.0.get(key).and_then(|prev| {
            let window = now.at.duration_since(prev.at).ok()?.as_secs_f64();
            (window > 0.0 && now.cpu_ns >= prev.cpu_ns)
                .then(|| (((now.cpu_ns - prev.cpu_ns) as f64 / window) as u64, window))
        });
        self.0.insert(key.to_owned(), now);
        CpuStats {
            time: rfc3339(now.at),
            usage_nano_cores: rate.map(|r| r.0),
            usage_core_nano_seconds: now.cpu_ns,
            window_seconds: rate.map(|r| r.1),
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t).map(|t| t.to_string()).unwrap_or_default()
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `memory.usage_in_bytes` and the working set (usage − total_inactive_file).
fn memory(paths: &CgroupPaths, id: Option<&str>, at: SystemTime) -> Option<MemoryStats> {
    let usage = read_u64(&paths.file("memory", id, "memory.usage_in_bytes"))?;
    let stat = std::fs::read_to_string(paths.file("memory", id, "memory.stat")).unwrap_or_default();
    let inactive = stat
        .lines()
        .find_map(|l| l.strip_prefix("total_inactive_file "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Some(MemoryStats { time: rfc3339(at), usage_bytes: usage, working_set_bytes: usage.saturating_sub(inactive) })
}

fn cpu_ns(paths: &CgroupPaths, id: Option<&str>) -> Option<u64> {
    read_u64(&paths.file("cpuacct", id, "cpuacct.usage"))
}

/// Samples every `period` until the task is dropped.
pub async fn run(stats: Stats, runtime: Arc<dyn ContainerRuntime>, node: String, paths: CgroupPaths, period: Duration) {
    let mut previous = Previous::default();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match sample(&*runtime, &node, &paths, &mut previous).await {
            Ok(summary) => stats.publish(summary),
            Err(e) => tracing::debug!(error = %e, "sampling resource usage"),
        }
        trim_heap();
    }
}

/// Hands heap memory freed since the last sample back to the kernel; glibc
/// keeps it otherwise (the kernel BTF the proxy parses at start takes ~9 MB
/// for a moment, a burst of pod starts a few more).
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases free pages of glibc's heaps; it takes
    // the allocator's own locks and touches no memory of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn sample(
    runtime: &dyn ContainerRuntime,
    node: &str,
    paths: &CgroupPaths,
    previous: &mut Previous,
) -> Result<Summary, crate::cri::RuntimeError> {
    let records = runtime.list(node, None).await?;
    let now = SystemTime::now();
    let mut pods: HashMap<PodReference, PodStats> = HashMap::new();
    let mut seen = vec![String::new()];
    for r in records.iter().filter(|r| !r.init && matches!(r.state, ContainerState::Running { .. })) {
        let Some(ns) = cpu_ns(paths, Some(&r.id)) else { continue };
        seen.push(r.id.clone());
        let container = ContainerStats {
            name: r.name.clone(),
            cpu: Some(previous.cpu(&r.id, Reading { at: now, cpu_ns: ns })),
            memory: memory(paths, Some(&r.id), now),
        };
        let pod_ref =
            PodReference { name: r.pod_name.clone(), namespace: r.pod_namespace.clone(), uid: r.pod_uid.clone() };
        pods.entry(pod_ref.clone())
            .or_insert_with(|| PodStats { pod_ref, ..PodStats::default() })
            .containers
            .push(container);
    }
    previous.0.retain(|id, _| seen.contains(id));
    let mut pods: Vec<PodStats> = pods.into_values().map(with_pod_totals).collect();
    pods.sort_by(|a, b| (&a.pod_ref.namespace, &a.pod_ref.name).cmp(&(&b.pod_ref.namespace, &b.pod_ref.name)));
    let node_cpu = cpu_ns(paths, None).map(|ns| previous.cpu("", Reading { at: now, cpu_ns: ns }));
    Ok(Summary {
        node: NodeStats { node_name: node.to_owned(), cpu: node_cpu, memory: memory(paths, None, now) },
        pods,
    })
}

/// A pod's CPU and memory are the sums of its containers' (the rate only
/// when every container has one).
fn with_pod_totals(mut pod: PodStats) -> PodStats {
    let cpus: Vec<&CpuStats> = pod.containers.iter().filter_map(|c| c.cpu.as_ref()).collect();
    if let Some(first) = cpus.first() {
        let rates: Option<Vec<u64>> = cpus.iter().map(|c| c.usage_nano_cores).collect();
        pod.cpu = Some(CpuStats {
            time: first.time.clone(),
            usage_nano_cores: rates.map(|r| r.iter().sum()),
            usage_core_nano_seconds: cpus.iter().map(|c| c.usage_core_nano_seconds).sum(),
            window_seconds: first.window_seconds,
        });
    }
    let mems: Vec<&MemoryStats> = pod.containers.iter().filter_map(|c| c.memory.as_ref()).collect();
    if let Some(first) = mems.first() {
        pod.memory = Some(MemoryStats {
            time: first.time.clone(),
            usage_bytes: mems.iter().map(|m| m.usage_bytes).sum(),
            working_set_bytes: mems.iter().map(|m| m.working_set_bytes).sum(),
        });
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::{ContainerSpec, FakeRuntime};

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    #[tokio::test]
    async fn rates_come_from_two_samples_and_pods_sum_their_containers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = CgroupPaths { root: dir.path().to_path_buf(), parent: "waggle".into() };
        let runtime = FakeRuntime::default().with_image("busybox");
        for (id, name) in [("c1", "app"), ("c2", "sidecar")] {
            let spec = ContainerSpec {
                id: id.into(),
                node: "n".into(),
                pod_uid: "u".into(),
                pod_name: "p".into(),
                pod_namespace: "default".into(),
                name: name.into(),
                image: "busybox".into(),
                ..ContainerSpec::default()
            };
            runtime.run(&spec).await.expect("run");
            write(dir.path(), &format!("cpuacct/waggle/{id}/cpuacct.usage"), "1000000000\n");
            write(dir.path(), &format!("memory/waggle/{id}/memory.usage_in_bytes"), "10485760\n");
            write(dir.path(), &format!("memory/waggle/{id}/memory.stat"), "total_inactive_file 2097152\n");
        }
        write(dir.path(), "cpuacct/cpuacct.usage", "5000000000\n");
        write(dir.path(), "memory/memory.usage_in_bytes", "1073741824\n");
        write(dir.path(), "memory/memory.stat", "total_inactive_file 0\n");

        let mut previous = Previous::default();
        let first = sample(&runtime, "n", &paths, &mut previous).await.expect("sample");
        assert_eq!(first.pods.len(), 1);
        assert_eq!(first.pods[0].cpu.as_ref().and_then(|c| c.usage_nano_cores), None, "no rate from one sample");
        assert_eq!(first.pods[0].memory.as_ref().map(|m| m.working_set_bytes), Some(2 * 8 * 1024 * 1024));

        tokio::time::sleep(Duration::from_millis(50)).await;
        write(dir.path(), "cpuacct/waggle/c1/cpuacct.usage", "1050000000\n");
        let second = sample(&runtime, "n", &paths, &mut previous).await.expect("sample");
        let pod = &second.pods[0];
        let app = pod.containers.iter().find(|c| c.name == "app").expect("app");
        let rate = app.cpu.as_ref().and_then(|c| c.usage_nano_cores).expect("a rate");
        // 50 ms of CPU over about 50 ms of wall time: about one core.
        assert!(rate > 100_000_000 && rate <= 1_000_000_000, "rate {rate}");
        let side = pod.containers.iter().find(|c| c.name == "sidecar").expect("sidecar");
        assert_eq!(side.cpu.as_ref().and_then(|c| c.usage_nano_cores), Some(0));
        assert_eq!(pod.cpu.as_ref().and_then(|c| c.usage_nano_cores), Some(rate));
        assert_eq!(second.node.memory.as_ref().map(|m| m.quantity()), Some("1048576Ki".into()));
        assert_eq!(second.node.cpu.as_ref().and_then(|c| c.usage_nano_cores), Some(0));
    }
}
