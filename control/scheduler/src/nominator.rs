//! Pods that preemption made room for and that wait for their node
//! (`status.nominatedNodeName`), upstream's PodNominator: kept from the pod
//! events and the scheduler's own preemptions, so that a cycle never walks
//! every pod to find them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::Pod;

use crate::cache::pod_key;

#[derive(Debug, Default)]
pub struct Nominator {
    /// Pod key → (node, pod).
    pods: Mutex<HashMap<String, (String, Arc<Pod>)>>,
}

impl Nominator {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Arc<Pod>)>> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A pod as the watch shows it; `pending` says it still needs a node.
    pub fn set_pod(&self, pod: &Arc<Pod>, pending: bool) {
        let node = pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty());
        match node.filter(|_| pending) {
            Some(node) => self.nominate(pod.clone(), node),
            None => self.remove(&pod_key(pod)),
        }
    }

    pub fn nominate(&self, pod: Arc<Pod>, node: &str) {
        self.lock().insert(pod_key(&pod), (node.to_owned(), pod));
    }

    pub fn remove(&self, key: &str) {
        let mut pods = self.lock();
        if !pods.is_empty() {
            pods.remove(key);
        }
    }

    /// After a relist: only these (pod, pending) are left.
    pub fn replace(&self, pods: &[(Arc<Pod>, bool)]) {
        self.lock().clear();
        for (pod, pending) in pods {
            self.set_pod(pod, *pending);
        }
    }

    /// The nominated pods by node index, for one cycle; None when there are none.
    pub fn by_node(&self, index: &HashMap<String, usize>) -> Option<HashMap<usize, Vec<Arc<Pod>>>> {
        let pods = self.lock();
        if pods.is_empty() {
            return None;
        }
        let mut out: HashMap<usize, Vec<Arc<Pod>>> = HashMap::new();
        for (node, pod) in pods.values() {
            if let Some(&i) = index.get(node) {
                out.entry(i).or_default().push(pod.clone());
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::test_support::pod_with;

    fn nominated(name: &str, node: Option<&str>) -> Arc<Pod> {
        let mut p = pod_with(name, &[]);
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            nominated_node_name: node.map(str::to_owned),
            ..Default::default()
        });
        Arc::new(p)
    }

    #[test]
    fn nominated_pods_are_listed_by_node_until_they_are_placed() {
        let n = Nominator::default();
        let index = HashMap::from([("n1".to_owned(), 0), ("n2".to_owned(), 1)]);
        assert!(n.by_node(&index).is_none());
        n.set_pod(&nominated("a", Some("n2")), true);
        n.set_pod(&nominated("b", None), true);
        let by = n.by_node(&index).expect("one nominated pod");
        assert_eq!(by.len(), 1);
        assert_eq!(by[&1].len(), 1);
        // Bound now: no longer waiting.
        n.set_pod(&nominated("a", Some("n2")), false);
        assert!(n.by_node(&index).is_none());
    }
}
