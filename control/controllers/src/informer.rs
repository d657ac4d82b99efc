//! Shared informers: one watch per kind for all the controllers, as
//! upstream's SharedInformerFactory. Each fills one reflector store that
//! every controller reads, and fans the objects it touched out to every
//! subscriber, so a controller triggered by its subscription always finds
//! the store at least as fresh as the event that woke it. Each also keeps
//! an index by controller uid ([`OwnerIndex`]), so an owner's reconcile
//! costs what it owns, not the size of the cluster.
//!
//! kube-runtime's own shared reflector (`store_shared` + `subscribe`) hands
//! subscribers the object as found in the store, so a deletion never reaches
//! them; controllers that recreate a pod under the same name (StatefulSet)
//! must see it. Here subscribers get every touched object, deleted ones too.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::Resource;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::de::DeserializeOwned;

use crate::owner_index::OwnerIndex;

type Subscribers<K> = Arc<Mutex<Vec<UnboundedSender<Arc<K>>>>>;

/// One watch of a kind, its store and its subscribers. The watch stops when
/// the informer is dropped.
pub struct Informer<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    index: Arc<OwnerIndex<K>>,
    subscribers: Subscribers<K>,
    task: tokio::task::AbortHandle,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Starts watching (needs a Tokio runtime).
    pub fn start(api: Api<K>, config: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        let subscribers: Subscribers<K> = Arc::default();
        let index: Arc<OwnerIndex<K>> = Arc::default();
        let (subs, idx) = (subscribers.clone(), index.clone());
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(api, config).default_backoff().reflect(writer));
            while let Some(r) = events.next().await {
                match r {
                    Ok(event) => {
                        idx.apply(&event);
                        let obj = match event {
                            watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o) => o,
                            watcher::Event::Init | watcher::Event::InitDone => continue,
                        };
                        let obj = Arc::new(obj);
                        if let Ok(mut subs) = subs.lock() {
                            subs.retain(|tx| tx.unbounded_send(obj.clone()).is_ok());
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, kind = %K::kind(&()), "shared informer watch"),
                }
            }
        })
        .abort_handle();
        Self { store, index, subscribers, task }
    }

    /// The objects whose controller is `owner`, found through the index.
    pub fn controlled_by(&self, owner: &impl Resource) -> Vec<Arc<K>> {
        self.index.controlled_by(&self.store, owner)
    }

    /// The cache every reader shares.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every object the watch touches from now on (deleted ones included),
    /// after the store has taken it in. Unbounded so one slow controller
    /// cannot stall the others; controllers drain their triggers at once.
    pub fn subscribe(&self) -> UnboundedReceiver<Arc<K>> {
        let (tx, rx) = unbounded();
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.push(tx);
        }
        rx
    }

    /// Waits until the first list is in the store.
    pub async fn ready(&self) {
        // Err only when the writer is gone, i.e. the watch task ended.
        let _ = self.store.wait_until_ready().await;
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Debug for Informer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informer").field("kind", &K::kind(&())).finish_non_exhaustive()
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Drop for Informer<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The kinds more than one controller watches.
#[derive(Clone, Debug)]
pub struct Informers {
    pub pods: Arc<Informer<Pod>>,
    pub nodes: Arc<Informer<Node>>,
    pub jobs: Arc<Informer<Job>>,
    pub replicasets: Arc<Informer<ReplicaSet>>,
    pub services: Arc<Informer<Service>>,
}

impl Informers {
    pub fn start(client: &kube::Client) -> Self {
        let cfg = watcher::Config::default;
        Self {
            pods: Arc::new(Informer::start(Api::all(client.clone()), cfg())),
            nodes: Arc::new(Informer::start(Api::all(client.clone()), cfg())),
            jobs: Arc::new(Informer::start(Api::all(client.clone()), cfg())),
            replicasets: Arc::new(Informer::start(Api::all(client.clone()), cfg())),
            services: Arc::new(Informer::start(Api::all(client.clone()), cfg())),
        }
    }
}

/// A store kept filled by its own watch (for a kind only one controller
/// reads).
pub fn cache<K>(api: Api<K>, config: watcher::Config) -> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    Informer::start(api, config)
}

/// Where a controller's own kind comes from.
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "made once per controller")]
pub enum Source<'a, K: Resource<DynamicType = ()> + 'static> {
    /// A watch of its own (a kind only this controller reads).
    Watch(Api<K>),
    /// A shared informer.
    Shared(&'a Informer<K>),
}

/// Runs a controller of `K` that owns objects of kind `Child` seen by a
/// shared informer (pods for ReplicaSets, Jobs, StatefulSets; Jobs for
/// CronJobs), once that informer's first list is in. It logs under `name`
/// and requeues failed reconciles after a second.
pub async fn run_owner<K, Child, C, F, Fut>(
    source: Source<'_, K>,
    children: &Informer<Child>,
    name: &'static str,
    ctx: Arc<C>,
    reconcile: F,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    Child: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    C: Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<C>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, crate::Error>> + Send + 'static,
{
    let triggers = children.subscribe();
    // Deciding on an empty cache would create every child twice.
    children.ready().await;
    let controller = match source {
        Source::Watch(api) => Controller::new(api, watcher::Config::default()),
        Source::Shared(informer) => {
            let triggers = informer.subscribe();
            informer.ready().await;
            Controller::for_shared_stream(triggers, informer.store())
        }
    };
    drive(controller.owns_shared_stream(triggers), name, ctx, reconcile).await;
}

/// Runs a wired controller until its watches end: failed reconciles are
/// logged under `name` and retried after a second.
pub async fn drive<K, C, F, Fut>(controller: Controller<K>, name: &'static str, ctx: Arc<C>, reconcile: F)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    C: Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<C>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, crate::Error>> + Send + 'static,
{
    controller
        .run(
            reconcile,
            move |_obj: Arc<K>, err: &crate::Error, _ctx: Arc<C>| {
                tracing::warn!(error = %err, controller = name, "reconcile failed");
                Action::requeue(std::time::Duration::from_secs(1))
            },
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, controller = name, "reconcile");
            }
        })
        .await;
}
