//! Dispatches pod events to per-pod workers: the watch (pods bound to this
//! node) only wakes workers; a housekeeping pass finds what the runtime or the
//! network still holds for pods that are gone (also after an agent restart).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

use crate::pod::worker::{PodKey, Shared, Worker};

struct Workers {
    shared: Arc<Shared>,
    running: HashMap<String, Arc<Notify>>,
    done_tx: mpsc::UnboundedSender<String>,
}

impl Workers {
    fn wake(&mut self, key: PodKey) {
        if let Some(n) = self.running.get(&key.uid) {
            n.notify_one();
            return;
        }
        debug!(pod = %format!("{}/{}", key.namespace, key.name), "starting a pod worker");
        let notify = Arc::new(Notify::new());
        self.running.insert(key.uid.clone(), notify.clone());
        let worker = Worker::new(key.clone(), self.shared.clone(), notify);
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            worker.run().await;
            let _ = done.send(key.uid);
        });
    }
}

fn key_of(pod: &Pod) -> Option<PodKey> {
    Some(PodKey {
        namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone()?,
    })
}

/// A lookup into the reflector's store for the workers.
pub fn lookup(store: Store<Pod>) -> crate::pod::worker::Lookup {
    Arc::new(move |ns: &str, name: &str| store.get(&ObjectRef::new(name).within(ns)))
}

/// Runs until the watch stream ends (it does not, short of the process ending).
pub async fn run(
    client: kube::Client,
    node: String,
    shared: Arc<Shared>,
    writer: reflector::store::Writer<Pod>,
    store: Store<Pod>,
) -> Result<(), crate::Error> {
    let api: kube::Api<Pod> = kube::Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let mut stream = std::pin::pin!(stream);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut workers = Workers { shared: shared.clone(), running: HashMap::new(), done_tx };
    let mut housekeeping = tokio::time::interval(Duration::from_secs(10));
    let mut synced = false;
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { return Ok(()) };
                match ev {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::Delete(pod)) => {
                        if let Some(k) = key_of(&pod) { workers.wake(k) }
                    }
                    // The reflector's store holds a (re)list's pods only from InitDone
                    // on: a worker started now would look its pod up, miss it, and
                    // release it as gone.
                    Ok(watcher::Event::InitApply(_)) => {}
                    Ok(watcher::Event::InitDone) => {
                        for pod in store.state() {
                            if let Some(k) = key_of(&pod) { workers.wake(k) }
                        }
                        // Pods deleted while the watch was down: every worker looks again.
                        workers.running.values().for_each(|n| n.notify_one());
                        if !synced {
                            synced = true;
                            info!(pods = store.state().len(), "pods of this node listed");
                            housekeep(&mut workers, &store).await;
                        }
                    }
                    Ok(watcher::Event::Init) => {}
                    Err(e) => warn!(error = %e, "watching pods failed; retrying"),
                }
            }
            Some(uid) = done_rx.recv() => { workers.running.remove(&uid); }
            _ = housekeeping.tick() => if synced { housekeep(&mut workers, &store).await },
        }
    }
}

/// Starts a worker (which will find its pod gone and release everything) for
/// every pod uid the runtime or the network knows but the API does not.
async fn housekeep(workers: &mut Workers, store: &Store<Pod>) {
    let known: HashSet<String> = store.state().iter().filter_map(|p| p.metadata.uid.clone()).collect();
    let s = workers.shared.clone();
    let mut orphans: HashMap<String, PodKey> = HashMap::new();
    match s.runtime.list(&s.node, None).await {
        Ok(records) => {
            for r in records {
                if !known.contains(&r.pod_uid) {
                    orphans.entry(r.pod_uid.clone()).or_insert(PodKey {
                        namespace: r.pod_namespace.clone(),
                        name: r.pod_name.clone(),
                        uid: r.pod_uid.clone(),
                    });
                }
            }
        }
        Err(e) => warn!(error = %e, "listing containers for housekeeping failed"),
    }
    match s.network.list().await {
        Ok(uids) => {
            for uid in uids.into_iter().filter(|u| !known.contains(u)) {
                orphans.entry(uid.clone()).or_insert(PodKey { namespace: String::new(), name: String::new(), uid });
            }
        }
        Err(e) => warn!(error = %e, "listing sandboxes for housekeeping failed"),
    }
    for (uid, key) in orphans {
        if !workers.running.contains_key(&uid) {
            info!(uid = %uid, "releasing what is left of a pod no longer bound to this node");
            workers.wake(key);
        }
    }
}
