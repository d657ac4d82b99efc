//! The `Watch` service: one bidirectional stream carries many watchers.
//!
//! A session task reads the client's requests; each watcher gets a
//! forwarder task that turns store messages into responses. Both write into
//! one channel, so a watcher's `created` response always precedes its events.
//! Watch IDs are per stream and start at 0, as in etcd.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::proto::etcdserverpb::{self as pb, watch_request::RequestUnion, watch_server::Watch};
use crate::store::Watcher;
use crate::types::{KeyRange, WatchId, WatchMessage, WatchRequest};

use super::{Context, convert};

/// etcd's `clientv3.InvalidWatchID`: a response for no watcher in particular.
const NO_WATCH: i64 = -1;

/// Responses buffered per stream before forwarders wait for the client.
const STREAM_BUFFER: usize = 256;

#[derive(Debug)]
pub(crate) struct WatchService {
    ctx: Context,
}

impl WatchService {
    pub(crate) fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<BoxStream<pb::WatchResponse>>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let session = Session { ctx: self.ctx.clone(), tx, watchers: HashMap::new(), next_id: 0 };
        tokio::spawn(session.run(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

type Tx = mpsc::Sender<Result<pb::WatchResponse, Status>>;

struct Session {
    ctx: Context,
    tx: Tx,
    /// Stream watch ID → (store watch ID, forwarder).
    watchers: HashMap<i64, (WatchId, JoinHandle<()>)>,
    next_id: i64,
}

impl Session {
    async fn run(mut self, mut inbound: Streaming<pb::WatchRequest>) {
        loop {
            let message = tokio::select! {
                m = inbound.message() => m,
                () = self.tx.closed() => break,
            };
            let request = match message {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(status) => {
                    debug!(%status, "watch stream ended with an error");
                    break;
                }
            };
            let sent = match request.request_union {
                Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
                Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
                Some(RequestUnion::ProgressRequest(_)) => self.progress().await,
                None => true,
            };
            if !sent {
                break;
            }
        }
        for (_, (_, forwarder)) in self.watchers.drain() {
            forwarder.abort();
        }
    }

    async fn send(&self, response: pb::WatchResponse) -> bool {
        self.tx.send(Ok(response)).await.is_ok()
    }

    async fn current_revision(&self) -> i64 {
        self.ctx.store.current_revision().await.unwrap_or_default()
    }

    async fn create(&mut self, create: pb::WatchCreateRequest) -> bool {
        use pb::watch_create_request::FilterType;
        let id = if create.watch_id != 0 { create.watch_id } else { self.free_id() };
        let revision = self.current_revision().await;
        if self.watchers.contains_key(&id) {
            return self
                .send(pb::WatchResponse {
                    header: self.ctx.header(revision),
                    watch_id: NO_WATCH,
                    created: true,
                    canceled: true,
                    cancel_reason: format!("watch ID {id} is already in use on this stream"),
                    ..pb::WatchResponse::default()
                })
                .await;
        }
        let filters: Vec<_> = create.filters.iter().filter_map(|f| FilterType::try_from(*f).ok()).collect();
        let req = WatchRequest {
            range: KeyRange { key: create.key, range_end: create.range_end },
            start_revision: create.start_revision,
            prev_kv: create.prev_kv,
            progress_notify: create.progress_notify,
            filter_puts: filters.contains(&FilterType::Noput),
            filter_deletes: filters.contains(&FilterType::Nodelete),
        };
        let watcher = match self.ctx.store.watch(req).await {
            Ok(w) => w,
            Err(e) => {
                return self
                    .send(pb::WatchResponse {
                        header: self.ctx.header(revision),
                        watch_id: NO_WATCH,
                        created: true,
                        canceled: true,
                        cancel_reason: e.to_string(),
                        ..pb::WatchResponse::default()
                    })
                    .await;
            }
        };
        let created = pb::WatchResponse {
            header: self.ctx.header(revision),
            watch_id: id,
            created: true,
            ..pb::WatchResponse::default()
        };
        if !self.send(created).await {
            return false;
        }
        let store_id = watcher.id;
        let forwarder = tokio::spawn(forward(self.ctx.clone(), self.tx.clone(), id, watcher));
        self.watchers.insert(id, (store_id, forwarder));
        true
    }

    fn free_id(&mut self) -> i64 {
        while self.watchers.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn cancel(&mut self, id: i64) -> bool {
        let Some((_, forwarder)) = self.watchers.remove(&id) else { return true };
        // Aborting drops the watcher, which cancels it in the store.
        forwarder.abort();
        let revision = self.current_revision().await;
        self.send(pb::WatchResponse {
            header: self.ctx.header(revision),
            watch_id: id,
            canceled: true,
            ..pb::WatchResponse::default()
        })
        .await
    }

    /// A progress request is answered per watcher, in order with its events;
    /// with no watcher, by one response for the whole stream.
    async fn progress(&mut self) -> bool {
        if self.watchers.is_empty() {
            let revision = self.current_revision().await;
            return self
                .send(pb::WatchResponse {
                    header: self.ctx.header(revision),
                    watch_id: NO_WATCH,
                    ..pb::WatchResponse::default()
                })
                .await;
        }
        for (store_id, _) in self.watchers.values() {
            if let Err(e) = self.ctx.store.request_progress(*store_id).await {
                debug!(error = %e, "progress request failed");
            }
        }
        true
    }
}

async fn forward(ctx: Context, tx: Tx, id: i64, mut watcher: Watcher) {
    while let Some(message) = watcher.next().await {
        let (response, last) = match message {
            WatchMessage::Events { revision, events } => (
                pb::WatchResponse {
                    header: ctx.header(revision),
                    watch_id: id,
                    events: events.into_iter().map(convert::event).collect(),
                    ..pb::WatchResponse::default()
                },
                false,
            ),
            WatchMessage::Progress { revision } => (
                pb::WatchResponse { header: ctx.header(revision), watch_id: id, ..pb::WatchResponse::default() },
                false,
            ),
            WatchMessage::Compacted { compact_revision } => {
                let revision = ctx.store.current_revision().await.unwrap_or_default();
                (
                    pb::WatchResponse {
                        header: ctx.header(revision),
                        watch_id: id,
                        canceled: true,
                        compact_revision,
                        cancel_reason: "etcdserver: mvcc: required revision has been compacted".to_owned(),
                        ..pb::WatchResponse::default()
                    },
                    true,
                )
            }
        };
        if tx.send(Ok(response)).await.is_err() || last {
            return;
        }
    }
}
