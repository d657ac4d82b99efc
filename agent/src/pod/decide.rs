//! What to do next for a pod that is not being deleted: a pure function of the
//! pod, the runtime's records, the sandbox and the probes. Level-triggered:
//! called again after every change, it only ever looks at the present.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;

use super::{ProbeView, Waiting, attempts, restart_policy};
use crate::cri::{ContainerRecord, ContainerState};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    SetupSandbox,
    Start {
        name: String,
        init: bool,
        attempt: u32,
    },
    /// Stop a container (its liveness probe failed); it is restarted after it exits.
    Kill {
        id: String,
        name: String,
    },
    /// The pod has finished: stop what still runs and release its address.
    Finish,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    /// Containers waiting in back-off, keyed by name.
    pub waiting: HashMap<String, Waiting>,
    /// When the earliest back-off ends, if any.
    pub wake_after: Option<Duration>,
}

/// Back-off before restart number `restarts` + 1: nothing before the first
/// restart, then `base`, doubling, at most `max` (upstream: 10 s … 5 min).
pub fn backoff(restarts: u32, base: Duration, max: Duration) -> Duration {
    if restarts == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(restarts.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// Whether an exited container is restarted under the pod's policy.
pub fn should_restart(policy: &str, exit_code: u32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// Inputs that are not the pod itself.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub records: &'a [ContainerRecord],
    pub sandbox_ready: bool,
    pub probes: &'a ProbeView,
    pub now: SystemTime,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

/// True when every init container has succeeded (or the pod has none), or a
/// regular container has already been started.
pub fn init_done(pod: &Pod, records: &[ContainerRecord]) -> bool {
    if records.iter().any(|r| !r.init) {
        return true;
    }
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.init_containers.as_ref()).into_iter().flatten().all(|c| {
        matches!(
            attempts(records, &c.name, true).current.map(|r| r.state),
            Some(ContainerState::Exited { exit_code: 0, .. })
        )
    })
}

/// The phase the runtime state amounts to.
pub fn phase(pod: &Pod, records: &[ContainerRecord], sandbox_ready: bool) -> &'static str {
    let policy = restart_policy(pod);
    let spec = pod.spec.as_ref();
    // An init container that failed and will not be retried fails the pod.
    for c in spec.and_then(|s| s.init_containers.as_ref()).into_iter().flatten() {
        if let Some(ContainerState::Exited { exit_code, .. }) =
            attempts(records, &c.name, true).current.map(|r| r.state)
            && exit_code != 0
            && policy == "Never"
            && !records.iter().any(|r| !r.init)
        {
            return "Failed";
        }
    }
    if !sandbox_ready && records.is_empty() {
        return "Pending";
    }
    let containers: Vec<_> = spec.map(|s| s.containers.iter().collect()).unwrap_or_default();
    let states: Vec<Option<ContainerState>> =
        containers.iter().map(|c| attempts(records, &c.name, false).current.map(|r| r.state)).collect();
    if states.is_empty() || states.iter().any(|s| s.is_none() || matches!(s, Some(ContainerState::Created))) {
        // Some container has not run yet; once all have, Running even while one waits.
        if states.iter().any(|s| matches!(s, Some(ContainerState::Running { .. } | ContainerState::Exited { .. }))) {
            return "Running";
        }
        return "Pending";
    }
    let mut all_exited = true;
    let mut any_failed = false;
    for s in states.iter().flatten() {
        match s {
            ContainerState::Exited { exit_code, .. } => {
                if should_restart(policy, *exit_code) {
                    all_exited = false;
                } else if *exit_code != 0 {
                    any_failed = true;
                }
            }
            _ => all_exited = false,
        }
    }
    match (all_exited, any_failed) {
        (true, true) => "Failed",
        (true, false) => "Succeeded",
        _ => "Running",
    }
}

/// How long until `activeDeadlineSeconds` runs out, counted from the pod's
/// startTime: `Some(ZERO)` once it has (then the pod fails with
/// DeadlineExceeded); None without a deadline or for a pod that succeeded.
pub fn deadline_left(pod: &Pod, now: SystemTime) -> Option<Duration> {
    let deadline = pod.spec.as_ref()?.active_deadline_seconds?;
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Succeeded") {
        return None;
    }
    let start: SystemTime = status.start_time.as_ref()?.0.into();
    let end = start + Duration::from_secs(deadline.max(0) as u64);
    Some(end.duration_since(now).unwrap_or(Duration::ZERO))
}

pub fn decide(pod: &Pod, cx: Context<'_>) -> Decision {
    let mut d = Decision::default();
    let Some(spec) = pod.spec.as_ref() else { return d };
    match deadline_left(pod, cx.now) {
        Some(Duration::ZERO) => {
            d.actions.push(Action::Finish);
            return d;
        }
        left => d.wake_after = left,
    }
    if matches!(phase(pod, cx.records, cx.sandbox_ready), "Succeeded" | "Failed") {
        d.actions.push(Action::Finish);
        return d;
    }
    if !cx.sandbox_ready {
        d.actions.push(Action::SetupSandbox);
        return d;
    }
    let policy = restart_policy(pod);
    if !init_done(pod, cx.records) {
        for c in spec.init_containers.iter().flatten() {
            let a = attempts(cx.records, &c.name, true);
            match a.current.map(|r| (r, r.state)) {
                None => {
                    d.actions.push(Action::Start { name: c.name.clone(), init: true, attempt: 0 });
                    return d;
                }
                Some((_, ContainerState::Exited { exit_code: 0, .. })) => continue,
                Some((r, ContainerState::Exited { finished_at, .. })) => {
                    // Init containers are retried unless the policy is Never.
                    if policy != "Never" {
                        restart_or_back_off(&mut d, &c.name, true, r, finished_at, &cx, pod);
                    }
                    return d;
                }
                Some(_) => return d,
            }
        }
        return d;
    }
    for c in &spec.containers {
        let a = attempts(cx.records, &c.name, false);
        match a.current.map(|r| (r, r.state)) {
            None => d.actions.push(Action::Start { name: c.name.clone(), init: false, attempt: 0 }),
            Some((r, ContainerState::Running { .. })) => {
                if cx.probes.liveness_failed.get(&r.id).copied().unwrap_or(false) {
                    d.actions.push(Action::Kill { id: r.id.clone(), name: c.name.clone() });
                }
            }
            Some((r, ContainerState::Exited { exit_code, finished_at, .. })) => {
                if should_restart(policy, exit_code) {
                    restart_or_back_off(&mut d, &c.name, false, r, finished_at, &cx, pod);
                }
            }
            Some((_, ContainerState::Created)) => {}
        }
    }
    d
}

fn restart_or_back_off(
    d: &mut Decision,
    name: &str,
    init: bool,
    last: &ContainerRecord,
    finished_at: SystemTime,
    cx: &Context<'_>,
    pod: &Pod,
) {
    let delay = backoff(last.attempt, cx.backoff_base, cx.backoff_max);
    let waited = cx.now.duration_since(finished_at).unwrap_or(Duration::ZERO);
    if waited >= delay {
        d.actions.push(Action::Start { name: name.to_owned(), init, attempt: last.attempt + 1 });
        return;
    }
    let remaining = delay - waited;
    d.wake_after = Some(d.wake_after.map_or(remaining, |w| w.min(remaining)));
    d.waiting.insert(
        name.to_owned(),
        Waiting {
            reason: "CrashLoopBackOff".into(),
            message: format!(
                "back-off {}s restarting failed container={name} pod={}_{}({})",
                delay.as_secs(),
                pod.metadata.name.as_deref().unwrap_or(""),
                pod.metadata.namespace.as_deref().unwrap_or(""),
                pod.metadata.uid.as_deref().unwrap_or("")
            ),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::status::tests::{exited, pod_with, running};

    fn cx<'a>(records: &'a [ContainerRecord], probes: &'a ProbeView, now: SystemTime) -> Context<'a> {
        Context {
            records,
            sandbox_ready: true,
            probes,
            now,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
        }
    }

    #[test]
    fn a_pod_past_its_active_deadline_is_finished_and_fails_with_deadline_exceeded() {
        let now = SystemTime::now();
        let mut pod = pod_with(&["web"], &[], "Always");
        pod.spec.as_mut().expect("spec").active_deadline_seconds = Some(30);
        let started = jiff::Timestamp::try_from(now - Duration::from_secs(20)).expect("time");
        pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Running".into()),
            start_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(started)),
            ..Default::default()
        });
        let records = [running("web", 0, now)];
        let probes = ProbeView::default();
        let d = decide(&pod, cx(&records, &probes, now));
        assert!(d.actions.is_empty());
        let left = d.wake_after.expect("wakes at the deadline");
        assert!(left > Duration::from_secs(9) && left <= Duration::from_secs(10), "{left:?}");

        let later = now + Duration::from_secs(11);
        let d = decide(&pod, cx(&records, &probes, later));
        assert_eq!(d.actions, [Action::Finish], "running containers are stopped");
        let waiting = HashMap::new();
        let messages = HashMap::new();
        let status = crate::pod::status::build(&crate::pod::status::StatusInput {
            pod: &pod,
            records: &records,
            pod_ips: &[],
            sandbox_ready: true,
            host_ip: "10.0.0.1",
            probes: &probes,
            waiting: &waiting,
            messages: &messages,
            now: later,
        });
        assert_eq!((status.phase.as_deref(), status.reason.as_deref()), (Some("Failed"), Some("DeadlineExceeded")));

        pod.status.as_mut().expect("status").phase = Some("Succeeded".into());
        assert!(deadline_left(&pod, later).is_none(), "a pod that succeeded stays so");
    }

    #[test]
    fn a_new_pod_first_gets_its_sandbox() {
        let pod = pod_with(&["web"], &[], "Always");
        let probes = ProbeView::default();
        let mut c = cx(&[], &probes, SystemTime::now());
        c.sandbox_ready = false;
        assert_eq!(decide(&pod, c).actions, vec![Action::SetupSandbox]);
    }

    #[test]
    fn init_containers_run_one_at_a_time_before_the_containers() {
        let pod = pod_with(&["web"], &["a", "b"], "Always");
        let probes = ProbeView::default();
        let now = SystemTime::now();
        assert_eq!(
            decide(&pod, cx(&[], &probes, now)).actions,
            vec![Action::Start { name: "a".into(), init: true, attempt: 0 }]
        );
        let recs = vec![exited("a", true, 0, 0, now)];
        assert_eq!(
            decide(&pod, cx(&recs, &probes, now)).actions,
            vec![Action::Start { name: "b".into(), init: true, attempt: 0 }]
        );
        let recs = vec![exited("a", true, 0, 0, now), exited("b", true, 0, 0, now)];
        assert_eq!(
            decide(&pod, cx(&recs, &probes, now)).actions,
            vec![Action::Start { name: "web".into(), init: false, attempt: 0 }]
        );
    }

    #[test]
    fn a_crashed_container_restarts_at_once_the_first_time_then_backs_off() {
        let pod = pod_with(&["web"], &[], "Always");
        let probes = ProbeView::default();
        let now = SystemTime::now();
        let recs = vec![exited("web", false, 0, 1, now)];
        assert_eq!(
            decide(&pod, cx(&recs, &probes, now)).actions,
            vec![Action::Start { name: "web".into(), init: false, attempt: 1 }]
        );
        let recs = vec![exited("web", false, 1, 1, now)];
        let d = decide(&pod, cx(&recs, &probes, now));
        assert!(d.actions.is_empty());
        assert_eq!(d.waiting["web"].reason, "CrashLoopBackOff");
        assert_eq!(d.wake_after, Some(Duration::from_secs(10)));
        let later = now + Duration::from_secs(11);
        assert_eq!(
            decide(&pod, cx(&recs, &probes, later)).actions,
            vec![Action::Start { name: "web".into(), init: false, attempt: 2 }]
        );
    }

    #[test]
    fn back_off_doubles_and_stops_at_the_maximum() {
        let (b, m) = (Duration::from_secs(10), Duration::from_secs(300));
        assert_eq!(backoff(1, b, m), Duration::from_secs(10));
        assert_eq!(backoff(2, b, m), Duration::from_secs(20));
        assert_eq!(backoff(3, b, m), Duration::from_secs(40));
        assert_eq!(backoff(30, b, m), m);
    }

    #[test]
    fn a_container_whose_liveness_failed_is_killed() {
        let pod = pod_with(&["web"], &[], "Always");
        let now = SystemTime::now();
        let recs = vec![running("web", 0, now)];
        let mut probes = ProbeView::default();
        probes.liveness_failed.insert(recs[0].id.clone(), true);
        assert_eq!(
            decide(&pod, cx(&recs, &probes, now)).actions,
            vec![Action::Kill { id: recs[0].id.clone(), name: "web".into() }]
        );
    }

    #[test]
    fn a_pod_whose_containers_exited_under_never_finishes() {
        let pod = pod_with(&["a", "b"], &[], "Never");
        let now = SystemTime::now();
        let probes = ProbeView::default();
        let recs = vec![exited("a", false, 0, 0, now), exited("b", false, 0, 2, now)];
        assert_eq!(phase(&pod, &recs, true), "Failed");
        assert_eq!(decide(&pod, cx(&recs, &probes, now)).actions, vec![Action::Finish]);
        let recs = vec![exited("a", false, 0, 0, now), exited("b", false, 0, 0, now)];
        assert_eq!(phase(&pod, &recs, true), "Succeeded");
    }

    #[test]
    fn on_failure_restarts_only_failed_containers() {
        let pod = pod_with(&["a"], &[], "OnFailure");
        let now = SystemTime::now();
        let probes = ProbeView::default();
        let recs = vec![exited("a", false, 0, 0, now)];
        assert_eq!(phase(&pod, &recs, true), "Succeeded");
        let recs = vec![exited("a", false, 0, 3, now)];
        assert_eq!(phase(&pod, &recs, true), "Running");
        assert_eq!(
            decide(&pod, cx(&recs, &probes, now)).actions,
            vec![Action::Start { name: "a".into(), init: false, attempt: 1 }]
        );
    }
}
