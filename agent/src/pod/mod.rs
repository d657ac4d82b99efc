//! Per-pod logic. [`decide`] and [`status`] are pure functions of the pod,
//! what the runtime reports and the probe results; [`worker`] runs them
//! against the real seams.

pub mod decide;
pub mod env;
pub mod etc;
pub mod images;
pub mod lifecycle;
pub mod probe;
pub mod pull_secrets;
pub mod security;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;

use crate::cri::ContainerRecord;

/// Why a container is not running, as the status says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

/// The newest and the one before it of a container's attempts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Attempts<'a> {
    pub current: Option<&'a ContainerRecord>,
    pub previous: Option<&'a ContainerRecord>,
}

/// Groups records by (init, name), newest attempt first.
pub fn attempts<'a>(records: &'a [ContainerRecord], name: &str, init: bool) -> Attempts<'a> {
    let mut mine: Vec<&ContainerRecord> = records.iter().filter(|r| r.name == name && r.init == init).collect();
    mine.sort_by_key(|r| std::cmp::Reverse(r.attempt));
    Attempts { current: mine.first().copied(), previous: mine.get(1).copied() }
}

/// What the probes said about each container id.
#[derive(Clone, Debug, Default)]
pub struct ProbeView {
    /// Readiness (absent: no result yet).
    pub ready: HashMap<String, bool>,
    /// Containers whose liveness probe failed past its threshold.
    pub liveness_failed: HashMap<String, bool>,
    /// Containers whose startup probe succeeded.
    pub started: HashMap<String, bool>,
}

/// `namespace/name` for logs.
pub fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or("default"), pod.metadata.name.as_deref().unwrap_or(""))
}

pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
}
