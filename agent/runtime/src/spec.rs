//! The OCI runtime spec (config.json) runc receives for a container.

use serde_json::{Value, json};

/// The `type_url` containerd stores a runtime spec under.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// Capabilities a container gets by default (the same set as containerd's and
/// Docker's defaults).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux 6.x knows (what `privileged` and `add: [ALL]` give).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The process's identity and privileges: a container's securityContext
/// once its user is resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Capability names as Kubernetes gives them (`NET_ADMIN`, `CAP_NET_ADMIN`
    /// or `ALL`).
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    pub read_only_root: bool,
    pub no_new_privileges: bool,
    /// Every capability and device, no masked or read-only paths, /sys writable.
    pub privileged: bool,
}

impl Security {
    /// The default set, less what is dropped, plus what is added.
    pub fn capabilities(&self) -> Vec<String> {
        let norm = |c: &String| {
            let c = c.trim().to_ascii_uppercase();
            if c == "ALL" || c.starts_with("CAP_") { c } else { format!("CAP_{c}") }
        };
        if self.privileged {
            return ALL_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
        }
        let drop: Vec<String> = self.capabilities_drop.iter().map(norm).collect();
        let add: Vec<String> = self.capabilities_add.iter().map(norm).collect();
        let mut caps: Vec<String> = if drop.iter().any(|c| c == "ALL") {
            Vec::new()
        } else {
            DEFAULT_CAPABILITIES.iter().map(|c| (*c).to_owned()).filter(|c| !drop.contains(c)).collect()
        };
        let added: Vec<String> = if add.iter().any(|c| c == "ALL") {
            ALL_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()
        } else {
            add
        };
        for c in added {
            if !caps.contains(&c) {
                caps.push(c);
            }
        }
        caps
    }
}

/// What varies between containers.
#[derive(Clone, Debug, Default)]
pub struct SpecInput<'a> {
    pub id: &'a str,
    pub args: &'a [String],
    pub env: &'a [String],
    pub cwd: &'a str,
    pub hostname: &'a str,
    /// Network namespace to join (a bind-mounted netns file); `None` makes a new one.
    pub netns: Option<&'a str>,
    /// cgroup path (cgroupfs driver, relative to each v1 hierarchy's root).
    pub cgroups_path: &'a str,
    /// Host paths bound into the container (volumes).
    pub binds: &'a [BindMount],
    /// Memory limit in bytes (cgroup memory.limit_in_bytes).
    pub memory_limit: Option<i64>,
    /// CPU limit in millicores (CFS quota over a 100 ms period).
    pub cpu_limit_millis: Option<i64>,
    /// CPU request in millicores (cgroup cpu.shares, as the kubelet computes
    /// them: 1024 per core, at least 2; none is the minimum).
    pub cpu_request_millis: Option<i64>,
    /// The process gets a terminal (the shim's pty) instead of pipes.
    pub terminal: bool,
    pub security: Security,
}

/// A host path bound into a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BindMount {
    pub source: String,
    pub destination: String,
    pub read_only: bool,
}

/// The kubelet's MilliCPUToShares: 1024 shares per core, between 2 and 262144.
pub fn cpu_shares(millis: Option<i64>) -> u64 {
    const MIN: u64 = 2;
    const MAX: u64 = 262_144;
    match millis {
        Some(m) if m > 0 => (m as u64 * 1024 / 1000).clamp(MIN, MAX),
        _ => MIN,
    }
}

/// Builds the spec. No rlimits and no oomScoreAdj: root here lacks
/// CAP_SYS_RESOURCE, so raising either fails (see ENVIRONMENT.md).
pub fn runtime_spec(input: &SpecInput<'_>) -> Value {
    let mut namespaces =
        vec![json!({"type": "pid"}), json!({"type": "ipc"}), json!({"type": "uts"}), json!({"type": "mount"})];
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if input.security.privileged { "rw" } else { "ro" }]}),
        // The container's own cgroups, read-only, as containerd's default
        // spec has them (runtimes read their limits there).
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for b in input.binds {
        let mode = if b.read_only { "ro" } else { "rw" };
        mounts.push(json!({"destination": b.destination, "type": "bind", "source": b.source, "options": ["rbind", "rprivate", mode]}));
    }
    let sec = &input.security;
    let mut resources = json!({"devices": [{"allow": sec.privileged, "access": "rwm"}]});
    if let Some(limit) = input.memory_limit {
        resources["memory"] = json!({"limit": limit});
    }
    resources["cpu"] = json!({"shares": cpu_shares(input.cpu_request_millis.or(input.cpu_limit_millis))});
    if let Some(millis) = input.cpu_limit_millis {
        resources["cpu"]["quota"] = json!((millis * 100).max(1000));
        resources["cpu"]["period"] = json!(100_000);
    }
    let caps = sec.capabilities();
    namespaces.push(match input.netns {
        Some(path) => json!({"type": "network", "path": path}),
        None => json!({"type": "network"}),
    });
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": input.terminal,
            "user": {"uid": sec.uid, "gid": sec.gid, "additionalGids": sec.additional_gids},
            "args": input.args,
            "env": input.env,
            "cwd": if input.cwd.is_empty() { "/" } else { input.cwd },
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "noNewPrivileges": sec.no_new_privileges,
        },
        "root": {"path": "rootfs", "readonly": sec.read_only_root},
        "hostname": input.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": input.cgroups_path,
            "resources": resources,
            "maskedPaths": if sec.privileged { json!([]) } else { json!([
                "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
            ]) },
            "readonlyPaths": if sec.privileged { json!([]) } else { json!([
                "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ]) },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_sets_user_capabilities_and_privileged_lifts_the_fences() {
        let sec = Security {
            uid: 7,
            gid: 8,
            additional_gids: vec![9],
            capabilities_drop: vec!["all".into()],
            capabilities_add: vec!["NET_ADMIN".into(), "CAP_SYS_TIME".into()],
            read_only_root: true,
            ..Default::default()
        };
        let spec = runtime_spec(&SpecInput { id: "c", security: sec.clone(), ..Default::default() });
        assert_eq!(spec["process"]["user"], json!({"uid": 7, "gid": 8, "additionalGids": [9]}));
        assert_eq!(spec["process"]["capabilities"]["effective"], json!(["CAP_NET_ADMIN", "CAP_SYS_TIME"]));
        assert_eq!(spec["root"]["readonly"], json!(true));
        assert_eq!(spec["linux"]["resources"]["devices"][0]["allow"], json!(false));
        let mut drop_one = Security { capabilities_drop: vec!["KILL".into()], ..Default::default() };
        assert_eq!(drop_one.capabilities().len(), DEFAULT_CAPABILITIES.len() - 1);
        drop_one.privileged = true;
        let spec = runtime_spec(&SpecInput { id: "c", security: drop_one, ..Default::default() });
        assert_eq!(spec["process"]["capabilities"]["bounding"].as_array().map(Vec::len), Some(ALL_CAPABILITIES.len()));
        assert_eq!(spec["linux"]["resources"]["devices"][0]["allow"], json!(true));
        assert_eq!(spec["linux"]["maskedPaths"], json!([]));
    }

    #[test]
    fn cpu_shares_follow_the_kubelets_formula() {
        assert_eq!(cpu_shares(None), 2, "no request: the minimum");
        assert_eq!(cpu_shares(Some(0)), 2);
        assert_eq!(cpu_shares(Some(1)), 2);
        assert_eq!(cpu_shares(Some(250)), 256);
        assert_eq!(cpu_shares(Some(1000)), 1024);
        assert_eq!(cpu_shares(Some(10_000_000)), 262_144, "capped");
        let spec = runtime_spec(&SpecInput {
            id: "c",
            cpu_request_millis: Some(500),
            cpu_limit_millis: Some(2000),
            ..Default::default()
        });
        let cpu = &spec["linux"]["resources"]["cpu"];
        assert_eq!(
            (cpu["shares"].as_u64(), cpu["quota"].as_i64(), cpu["period"].as_u64()),
            (Some(512), Some(200_000), Some(100_000))
        );
    }

    #[test]
    fn joins_the_given_network_namespace() {
        let args = vec!["true".to_owned()];
        let spec =
            runtime_spec(&SpecInput { id: "c1", args: &args, netns: Some("/var/run/netns/x"), ..Default::default() });
        let ns = &spec["linux"]["namespaces"];
        let net = ns.as_array().into_iter().flatten().find(|n| n["type"] == "network");
        assert_eq!(net.map(|n| n["path"].clone()), Some(json!("/var/run/netns/x")));
    }

    #[test]
    fn sets_no_rlimits_or_oom_score_adj() {
        let spec = runtime_spec(&SpecInput { id: "c1", ..Default::default() });
        assert!(spec["process"].get("rlimits").is_none());
        assert!(spec["process"].get("oomScoreAdj").is_none());
    }
}
