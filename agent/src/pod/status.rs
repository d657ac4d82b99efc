//! The pod's status as the API shows it, computed from the runtime's records,
//! the sandbox, the probes and the reasons containers wait. Deterministic, so
//! the worker writes it only when it differs from what the API holds.

use std::collections::HashMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    ContainerState as KState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::decide::{deadline_left, init_done, phase};
use super::{ProbeView, Waiting, attempts};
use crate::cri::{ContainerRecord, ContainerState};

/// A whole-second API time (the API's precision), so statuses compare equal.
pub fn time(t: SystemTime) -> Time {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    Time(jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

#[derive(Debug)]
pub struct StatusInput<'a> {
    pub pod: &'a Pod,
    pub records: &'a [ContainerRecord],
    pub pod_ips: &'a [std::net::IpAddr],
    pub sandbox_ready: bool,
    pub host_ip: &'a str,
    pub probes: &'a ProbeView,
    /// Reasons from the decision (back-off) and from failed starts (images).
    pub waiting: &'a HashMap<String, Waiting>,
    /// Termination messages of exited containers, by container id.
    pub messages: &'a HashMap<String, String>,
    pub now: SystemTime,
}

fn terminated(r: &ContainerRecord, messages: &HashMap<String, String>) -> Option<ContainerStateTerminated> {
    match r.state {
        ContainerState::Exited { exit_code, started_at, finished_at, oom_killed } => Some(ContainerStateTerminated {
            exit_code: exit_code as i32,
            reason: Some(
                if oom_killed {
                    "OOMKilled"
                } else if exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .into(),
            ),
            started_at: Some(time(started_at)),
            finished_at: Some(time(finished_at)),
            container_id: Some(format!("containerd://{}", r.id)),
            message: messages.get(&r.id).filter(|m| !m.is_empty()).cloned(),
            ..Default::default()
        }),
        _ => None,
    }
}

fn container_status(
    input: &StatusInput<'_>,
    name: &str,
    image: &str,
    init: bool,
    has_readiness: bool,
    has_startup: bool,
    default_waiting: &str,
) -> ContainerStatus {
    let a = attempts(input.records, name, init);
    let mut st = ContainerStatus {
        name: name.to_owned(),
        image: image.to_owned(),
        image_id: String::new(),
        ready: false,
        restart_count: a.current.map(|r| r.attempt as i32).unwrap_or(0),
        started: Some(false),
        ..Default::default()
    };
    let waiting = |reason: &str, message: &str| KState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message: (!message.is_empty()).then(|| message.to_owned()),
        }),
        ..Default::default()
    };
    if let Some(r) = a.current {
        st.container_id = Some(format!("containerd://{}", r.id));
        st.image_id = if r.image_id.is_empty() { r.image.clone() } else { r.image_id.clone() };
        st.last_state = a
            .previous
            .and_then(|p| terminated(p, input.messages))
            .map(|t| KState { terminated: Some(t), ..Default::default() });
        match r.state {
            ContainerState::Running { started_at } => {
                let started = !has_startup || input.probes.started.get(&r.id).copied().unwrap_or(false);
                st.started = Some(started);
                st.ready =
                    !init && started && (!has_readiness || input.probes.ready.get(&r.id).copied().unwrap_or(false));
                st.state = Some(KState {
                    running: Some(ContainerStateRunning { started_at: Some(time(started_at)) }),
                    ..Default::default()
                });
            }
            ContainerState::Exited { .. } => {
                if let Some(w) = input.waiting.get(name) {
                    // Waiting to restart: the exit becomes the last state.
                    st.last_state =
                        terminated(r, input.messages).map(|t| KState { terminated: Some(t), ..Default::default() });
                    st.state = Some(waiting(&w.reason, &w.message));
                } else {
                    st.state =
                        terminated(r, input.messages).map(|t| KState { terminated: Some(t), ..Default::default() });
                }
            }
            ContainerState::Created => st.state = Some(waiting("ContainerCreating", "")),
        }
    } else if let Some(w) = input.waiting.get(name) {
        st.state = Some(waiting(&w.reason, &w.message));
    } else {
        st.state = Some(waiting(default_waiting, ""));
    }
    st
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, old: Option<&PodStatus>, now: SystemTime) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let previous = old.and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == kind));
    let since = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(time(now)),
    };
    PodCondition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.map(str::to_owned),
        last_transition_time: since,
        ..Default::default()
    }
}

pub fn build(input: &StatusInput<'_>) -> PodStatus {
    let pod = input.pod;
    let old = pod.status.as_ref();
    let spec = pod.spec.clone().unwrap_or_default();
    let past_deadline = deadline_left(pod, input.now) == Some(std::time::Duration::ZERO);
    let phase = if past_deadline { "Failed" } else { phase(pod, input.records, input.sandbox_ready) };
    let initialized = init_done(pod, input.records);
    let init_statuses: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            container_status(input, &c.name, c.image.as_deref().unwrap_or(""), true, false, false, "PodInitializing")
        })
        .collect();
    let default_waiting = if initialized { "ContainerCreating" } else { "PodInitializing" };
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| {
            container_status(
                input,
                &c.name,
                c.image.as_deref().unwrap_or(""),
                false,
                c.readiness_probe.is_some(),
                c.startup_probe.is_some(),
                default_waiting,
            )
        })
        .collect();
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let all_ready = !terminal && !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let not_ready_reason = if terminal { Some("PodCompleted") } else { (!all_ready).then_some("ContainersNotReady") };
    let conditions = vec![
        condition("PodReadyToStartContainers", input.sandbox_ready && !terminal, None, old, input.now),
        condition("Initialized", initialized, (!initialized).then_some("ContainersNotInitialized"), old, input.now),
        condition("Ready", all_ready, not_ready_reason, old, input.now),
        condition("ContainersReady", all_ready, not_ready_reason, old, input.now),
        condition("PodScheduled", true, None, old, input.now),
    ];
    let pod_ips: Vec<PodIP> = input.pod_ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect();
    let start_time = old.and_then(|s| s.start_time.clone()).unwrap_or_else(|| time(input.now));
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        host_ip: Some(input.host_ip.to_owned()),
        host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP { ip: input.host_ip.to_owned() }]),
        pod_ip: pod_ips.first().map(|p| p.ip.clone()),
        pod_ips: (!pod_ips.is_empty()).then_some(pod_ips),
        start_time: Some(start_time),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        qos_class: old.and_then(|s| s.qos_class.clone()).or_else(|| Some(qos_class(pod).into())),
        reason: past_deadline.then(|| "DeadlineExceeded".to_owned()),
        message: past_deadline.then(|| "Pod was active on the node longer than the specified deadline".to_owned()),
        ..Default::default()
    }
}

/// Guaranteed when every container's requests equal its limits for cpu and
/// memory, BestEffort when none sets any, else Burstable.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else { return "BestEffort" };
    let all = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        if !limits.is_empty() || !requests.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            match (limits.get(res), requests.get(res)) {
                (Some(l), Some(q)) if l == q => {}
                (Some(_), None) => {}
                _ => guaranteed = false,
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use std::path::PathBuf;

    pub(crate) fn pod_with(containers: &[&str], inits: &[&str], policy: &str) -> Pod {
        let c = |n: &&str| Container { name: (*n).to_owned(), image: Some("busybox".into()), ..Default::default() };
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: containers.iter().map(c).collect(),
                init_containers: (!inits.is_empty()).then(|| inits.iter().map(c).collect()),
                restart_policy: Some(policy.into()),
                node_name: Some("n1".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn record(name: &str, init: bool, attempt: u32, state: ContainerState) -> ContainerRecord {
        ContainerRecord {
            id: format!("u1-{name}-{attempt}"),
            pod_uid: "u1".into(),
            pod_name: "p".into(),
            pod_namespace: "default".into(),
            name: name.into(),
            attempt,
            init,
            image: "busybox".into(),
            image_id: String::new(),
            log_path: PathBuf::from("/x"),
            stdin: None,
            stdin_once: false,
            tty: false,
            state,
        }
    }

    pub(crate) fn exited(name: &str, init: bool, attempt: u32, code: u32, at: SystemTime) -> ContainerRecord {
        record(
            name,
            init,
            attempt,
            ContainerState::Exited { exit_code: code, started_at: at, finished_at: at, oom_killed: false },
        )
    }

    pub(crate) fn running(name: &str, attempt: u32, at: SystemTime) -> ContainerRecord {
        record(name, false, attempt, ContainerState::Running { started_at: at })
    }

    fn build_for(
        pod: &Pod,
        records: &[ContainerRecord],
        probes: &ProbeView,
        waiting: &HashMap<String, Waiting>,
    ) -> PodStatus {
        let ips = ["10.244.0.5".parse().expect("ip")];
        build(&StatusInput {
            pod,
            records,
            pod_ips: &ips,
            sandbox_ready: true,
            host_ip: "192.168.1.2",
            probes,
            waiting,
            messages: &HashMap::new(),
            now: SystemTime::now(),
        })
    }

    fn cond<'a>(s: &'a PodStatus, kind: &str) -> &'a str {
        s.conditions.as_ref().and_then(|c| c.iter().find(|c| c.type_ == kind)).map(|c| c.status.as_str()).unwrap_or("")
    }

    #[test]
    fn a_running_pod_without_probes_is_ready_with_its_ip() {
        let pod = pod_with(&["web"], &[], "Always");
        let recs = vec![running("web", 0, SystemTime::now())];
        let s = build_for(&pod, &recs, &ProbeView::default(), &HashMap::new());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.0.5"));
        assert_eq!(cond(&s, "Ready"), "True");
        let cs = &s.container_statuses.expect("statuses")[0];
        assert!(cs.ready);
        assert_eq!(cs.container_id.as_deref(), Some("containerd://u1-web-0"));
    }

    #[test]
    fn a_failing_readiness_probe_makes_the_pod_not_ready() {
        let mut pod = pod_with(&["web"], &[], "Always");
        if let Some(spec) = pod.spec.as_mut() {
            spec.containers[0].readiness_probe = Some(Default::default());
        }
        let recs = vec![running("web", 0, SystemTime::now())];
        let mut probes = ProbeView::default();
        probes.ready.insert(recs[0].id.clone(), false);
        let s = build_for(&pod, &recs, &probes, &HashMap::new());
        assert_eq!(cond(&s, "Ready"), "False");
        assert_eq!(s.phase.as_deref(), Some("Running"));
    }

    #[test]
    fn a_container_in_back_off_shows_crash_loop_with_its_last_exit_and_restart_count() {
        let pod = pod_with(&["web"], &[], "Always");
        let recs = vec![exited("web", false, 0, 1, SystemTime::now()), exited("web", false, 1, 1, SystemTime::now())];
        let waiting = HashMap::from([(
            "web".to_owned(),
            Waiting { reason: "CrashLoopBackOff".into(), message: "back-off 10s".into() },
        )]);
        let s = build_for(&pod, &recs, &ProbeView::default(), &waiting);
        let cs = &s.container_statuses.expect("statuses")[0];
        assert_eq!(cs.restart_count, 1);
        let w = cs.state.as_ref().and_then(|s| s.waiting.as_ref()).expect("waiting");
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()).expect("last state");
        assert_eq!(last.exit_code, 1);
    }

    #[test]
    fn the_same_inputs_give_the_same_status() {
        let pod = pod_with(&["web"], &[], "Always");
        let recs = vec![running("web", 0, SystemTime::now())];
        let a = build_for(&pod, &recs, &ProbeView::default(), &HashMap::new());
        let mut pod2 = pod.clone();
        pod2.status = Some(a.clone());
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = build_for(&pod2, &recs, &ProbeView::default(), &HashMap::new());
        assert_eq!(serde_json::to_value(&a).ok(), serde_json::to_value(&b).ok());
    }
}
