//! A container's securityContext over its pod's, as the runtime takes it.

use k8s_openapi::api::core::v1::{Container, Pod};
use waggle_runtime::SecurityRequest;

fn id(v: Option<i64>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

/// The container's fields win over the pod's (runAsUser, runAsGroup,
/// runAsNonRoot); the pod's supplementalGroups and fsGroup become the
/// process's additional groups, as the kubelet passes them.
pub fn request(pod: &Pod, c: &Container) -> SecurityRequest {
    let p = pod.spec.as_ref().and_then(|s| s.security_context.clone()).unwrap_or_default();
    let s = c.security_context.clone().unwrap_or_default();
    let mut groups: Vec<u32> = p.supplemental_groups.iter().flatten().filter_map(|g| id(Some(*g))).collect();
    if let Some(fs) = id(p.fs_group)
        && !groups.contains(&fs)
    {
        groups.push(fs);
    }
    let caps = s.capabilities.unwrap_or_default();
    SecurityRequest {
        run_as_user: id(s.run_as_user.or(p.run_as_user)),
        run_as_group: id(s.run_as_group.or(p.run_as_group)),
        run_as_non_root: s.run_as_non_root.or(p.run_as_non_root).unwrap_or(false),
        supplemental_groups: groups,
        capabilities_add: caps.add.unwrap_or_default(),
        capabilities_drop: caps.drop.unwrap_or_default(),
        read_only_root: s.read_only_root_filesystem.unwrap_or(false),
        allow_privilege_escalation: s.allow_privilege_escalation,
        privileged: s.privileged.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_containers_context_wins_and_pod_groups_are_added() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "securityContext": {"runAsUser": 1000, "runAsGroup": 2000, "runAsNonRoot": true, "supplementalGroups": [7], "fsGroup": 9},
                "containers": [{"name": "c", "securityContext": {
                    "runAsUser": 1001, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                    "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                }}],
            },
        }))
        .expect("pod");
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        let r = request(&pod, c);
        assert_eq!((r.run_as_user, r.run_as_group, r.run_as_non_root), (Some(1001), Some(2000), true));
        assert_eq!(r.supplemental_groups, [7, 9]);
        assert_eq!((r.capabilities_add, r.capabilities_drop), (vec!["NET_ADMIN".to_owned()], vec!["ALL".to_owned()]));
        assert!(r.read_only_root && r.allow_privilege_escalation == Some(false) && !r.privileged);
    }
}
