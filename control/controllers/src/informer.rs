//! A watch that fills a reflector store and yields the objects it touched,
//! so a controller triggered by the stream always finds its store at least
//! as fresh as the event that woke it.

use std::fmt::Debug;

use futures::{Stream, StreamExt as _};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::de::DeserializeOwned;

/// The store, and the stream that must be polled to keep it filled.
pub fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (Store<K>, impl Stream<Item = Result<K, watcher::Error>> + Send)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config).default_backoff().reflect(writer).touched_objects();
    (store, stream)
}

/// A store kept filled by a background task (for caches nobody is
/// triggered by).
pub fn cache<K>(api: Api<K>, config: watcher::Config) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, stream) = reflect(api, config);
    tokio::spawn(stream.for_each(|_| async {}));
    store
}
