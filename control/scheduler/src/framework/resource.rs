//! Resource amounts as the scheduler counts them (milli-CPU, bytes), and a
//! pod's requests: the larger of its containers' sum and its largest init
//! container (restartable init containers, i.e. sidecars, add to both), plus
//! the pod overhead.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Requests assumed for scoring when a container declares none (upstream's
/// DefaultMilliCPURequest and DefaultMemoryRequest).
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub allowed_pods: i64,
    /// Extended resources (e.g. `example.com/gpu`), in their own units.
    pub scalar: BTreeMap<String, i64>,
}

impl Resource {
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Self {
        let mut r = Resource::default();
        for (name, q) in list.into_iter().flatten() {
            match name.as_str() {
                "cpu" => r.milli_cpu = waggle_api::quantity::parse_milli(&q.0).unwrap_or(0),
                "memory" => r.memory = waggle_api::quantity::parse_milli(&q.0).unwrap_or(0) / 1000,
                "ephemeral-storage" => {
                    r.ephemeral_storage = waggle_api::quantity::parse_milli(&q.0).unwrap_or(0) / 1000
                }
                "pods" => r.allowed_pods = waggle_api::quantity::parse_milli(&q.0).unwrap_or(0) / 1000,
                other if other.contains('/') || other.starts_with("hugepages-") => {
                    r.scalar.insert(other.to_owned(), waggle_api::quantity::parse_milli(&q.0).unwrap_or(0) / 1000);
                }
                _ => {}
            }
        }
        r
    }

    pub fn add(&mut self, o: &Resource) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, o: &Resource) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    fn max_with(&mut self, o: &Resource) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

fn container_requests(c: &Container, non_zero: bool) -> Resource {
    let mut r = Resource::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
    if non_zero {
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        if !requests.is_some_and(|m| m.contains_key("cpu")) {
            r.milli_cpu = DEFAULT_MILLI_CPU;
        }
        if !requests.is_some_and(|m| m.contains_key("memory")) {
            r.memory = DEFAULT_MEMORY;
        }
    }
    r
}

/// What the pod asks for; with `non_zero`, containers without requests
/// count upstream's defaults (used for scoring only).
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resource {
    let Some(spec) = pod.spec.as_ref() else { return Resource::default() };
    let mut sum = Resource::default();
    for c in &spec.containers {
        sum.add(&container_requests(c, non_zero));
    }
    // Init containers run one at a time before the others, except
    // restartable ones (sidecars), which keep running.
    let mut sidecars = Resource::default();
    let mut init_max = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c, non_zero);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            init_max.max_with(&sidecars);
        } else {
            let mut with_sidecars = sidecars.clone();
            with_sidecars.add(&r);
            init_max.max_with(&with_sidecars);
        }
    }
    sum.add(&sidecars);
    sum.max_with(&init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        sum.add(&Resource::from_list(Some(overhead)));
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    #[test]
    fn quantities_parse_to_thousandths() {
        assert_eq!(waggle_api::quantity::parse_milli("100m"), Some(100));
        assert_eq!(waggle_api::quantity::parse_milli("2"), Some(2000));
        assert_eq!(waggle_api::quantity::parse_milli("0.5"), Some(500));
        assert_eq!(waggle_api::quantity::parse_milli("1Gi"), Some(1024 * 1024 * 1024 * 1000));
        assert_eq!(waggle_api::quantity::parse_milli("1e3"), Some(1_000_000));
        assert_eq!(waggle_api::quantity::parse_milli("12x"), None);
    }

    fn container(cpu: &str, restart: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            restart_policy: restart.map(str::to_owned),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([("cpu".to_owned(), Quantity(cpu.into()))])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_large_init_container_sets_the_pod_request() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container("100m", None), container("200m", None)],
                init_containers: Some(vec![container("1", None)]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(pod_requests(&pod, false).milli_cpu, 1000);
    }

    #[test]
    fn sidecars_add_to_the_containers_sum() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container("100m", None)],
                init_containers: Some(vec![container("50m", Some("Always")), container("120m", None)]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(pod_requests(&pod, false).milli_cpu, 170);
    }

    #[test]
    fn containers_without_requests_count_defaults_for_scoring_only() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![Container { name: "c".into(), ..Default::default() }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(pod_requests(&pod, false).milli_cpu, 0);
        assert_eq!(pod_requests(&pod, true).milli_cpu, DEFAULT_MILLI_CPU);
        assert_eq!(pod_requests(&pod, true).memory, DEFAULT_MEMORY);
    }
}
