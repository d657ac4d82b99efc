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
}

/// Builds the spec. No rlimits and no oomScoreAdj: root here lacks
/// CAP_SYS_RESOURCE, so raising either fails (see ENVIRONMENT.md).
pub fn runtime_spec(input: &SpecInput<'_>) -> Value {
    let mut namespaces =
        vec![json!({"type": "pid"}), json!({"type": "ipc"}), json!({"type": "uts"}), json!({"type": "mount"})];
    namespaces.push(match input.netns {
        Some(path) => json!({"type": "network", "path": path}),
        None => json!({"type": "network"}),
    });
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": input.args,
            "env": input.env,
            "cwd": if input.cwd.is_empty() { "/" } else { input.cwd },
            "capabilities": {
                "bounding": DEFAULT_CAPABILITIES,
                "effective": DEFAULT_CAPABILITIES,
                "permitted": DEFAULT_CAPABILITIES,
            },
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": input.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": input.cgroups_path,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "maskedPaths": [
                "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
            ],
            "readonlyPaths": [
                "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
