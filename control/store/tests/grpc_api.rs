//! What etcdctl cannot show: watch stream control (cancel, progress
//! requests, progress notifications, compaction), size limits and malformed
//! requests, driven through the generated etcd v3 client.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;
use waggle_store::grpc::{EtcdServer, MemberInfo, ServerInfo};
use waggle_store::proto::etcdserverpb::{
    self as pb, kv_client::KvClient, lease_client::LeaseClient, watch_client::WatchClient, watch_request::RequestUnion,
};
use waggle_store::{MemStore, MemStoreConfig};

struct Server {
    channel: Channel,
    _stop: oneshot::Sender<()>,
}

async fn start(max_request_bytes: usize) -> anyhow::Result<Server> {
    let config = MemStoreConfig { progress_notify_interval: Duration::from_millis(200), ..Default::default() };
    let store = MemStore::new(config)?;
    let member = MemberInfo::new("m", vec!["http://127.0.0.1:2380".into()], vec![]);
    let mut info = ServerInfo::single(member, "t");
    info.max_request_bytes = max_request_bytes;
    let (stop, stopped) = oneshot::channel::<()>();
    let (addr, _) = EtcdServer::new(Arc::new(store), info)
        .spawn("127.0.0.1:0".parse()?, async move {
            let _ = stopped.await;
        })
        .await?;
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    Ok(Server { channel, _stop: stop })
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> anyhow::Result<i64> {
    let resp =
        kv.put(pb::PutRequest { key: key.into(), value: value.into(), ..Default::default() }).await?.into_inner();
    Ok(resp.header.map(|h| h.revision).unwrap_or_default())
}

fn create(key: &str, start_revision: i64, progress_notify: bool) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: key.into(),
            start_revision,
            progress_notify,
            ..Default::default()
        })),
    }
}

struct WatchStream {
    tx: mpsc::Sender<pb::WatchRequest>,
    rx: tonic::Streaming<pb::WatchResponse>,
}

impl WatchStream {
    async fn open(channel: Channel) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(8);
        let rx = WatchClient::new(channel).watch(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Self { tx, rx })
    }

    async fn send(&self, req: pb::WatchRequest) -> anyhow::Result<()> {
        Ok(self.tx.send(req).await?)
    }

    async fn next(&mut self) -> anyhow::Result<pb::WatchResponse> {
        let msg = tokio::time::timeout(Duration::from_secs(5), self.rx.message()).await??;
        msg.ok_or_else(|| anyhow::anyhow!("watch stream ended"))
    }
}

#[tokio::test]
async fn watch_ids_count_from_zero_per_stream_and_cancel_stops_events() -> anyhow::Result<()> {
    let s = start(1 << 20).await?;
    let mut kv = KvClient::new(s.channel.clone());
    let mut w = WatchStream::open(s.channel.clone()).await?;
    w.send(create("a", 0, false)).await?;
    let created = w.next().await?;
    assert!(created.created);
    assert_eq!(created.watch_id, 0);
    w.send(create("b", 0, false)).await?;
    assert_eq!(w.next().await?.watch_id, 1);
    let rev = put(&mut kv, "a", "1").await?;
    let event = w.next().await?;
    assert_eq!((event.watch_id, event.events.len()), (0, 1));
    assert_eq!(event.header.map(|h| h.revision), Some(rev));
    w.send(pb::WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(pb::WatchCancelRequest { watch_id: 0 })),
    })
    .await?;
    let cancelled = w.next().await?;
    assert!(cancelled.canceled && cancelled.watch_id == 0);
    put(&mut kv, "a", "2").await?;
    put(&mut kv, "b", "x").await?;
    let next = w.next().await?;
    assert_eq!(next.watch_id, 1, "the cancelled watcher sends nothing more");
    Ok(())
}

#[tokio::test]
async fn a_progress_request_answers_with_the_current_revision() -> anyhow::Result<()> {
    let s = start(1 << 20).await?;
    let mut kv = KvClient::new(s.channel.clone());
    let mut w = WatchStream::open(s.channel.clone()).await?;
    let progress = pb::WatchRequest { request_union: Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})) };
    w.send(progress.clone()).await?;
    let alone = w.next().await?;
    assert_eq!(alone.watch_id, -1, "with no watcher, the whole stream answers");
    let rev = put(&mut kv, "x", "1").await?;
    w.send(create("y", 0, false)).await?;
    w.next().await?;
    w.send(progress).await?;
    let answer = w.next().await?;
    assert!(answer.events.is_empty() && !answer.created && !answer.canceled);
    assert_eq!(answer.header.map(|h| h.revision), Some(rev));
    Ok(())
}

#[tokio::test]
async fn progress_notify_watchers_hear_the_revision_while_idle() -> anyhow::Result<()> {
    let s = start(1 << 20).await?;
    let mut kv = KvClient::new(s.channel.clone());
    let rev = put(&mut kv, "x", "1").await?;
    let mut w = WatchStream::open(s.channel.clone()).await?;
    w.send(create("quiet", 0, true)).await?;
    w.next().await?;
    let notify = w.next().await?;
    assert!(notify.events.is_empty());
    assert_eq!((notify.watch_id, notify.header.map(|h| h.revision)), (0, Some(rev)));
    Ok(())
}

#[tokio::test]
async fn a_watch_below_the_compaction_is_cancelled_with_the_compact_revision() -> anyhow::Result<()> {
    let s = start(1 << 20).await?;
    let mut kv = KvClient::new(s.channel.clone());
    put(&mut kv, "c", "1").await?;
    let rev = put(&mut kv, "c", "2").await?;
    kv.compact(pb::CompactionRequest { revision: rev, physical: true }).await?;
    let mut w = WatchStream::open(s.channel.clone()).await?;
    w.send(create("c", 1, false)).await?;
    assert!(w.next().await?.created);
    let cancelled = w.next().await?;
    assert!(cancelled.canceled);
    assert_eq!(cancelled.compact_revision, rev);
    Ok(())
}

#[tokio::test]
async fn a_request_over_the_size_limit_gets_etcds_error() -> anyhow::Result<()> {
    let s = start(1024).await?;
    let mut kv = KvClient::new(s.channel.clone());
    let err = kv
        .put(pb::PutRequest { key: b"big".to_vec(), value: vec![0; 4096], ..Default::default() })
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "etcdserver: request is too large");
    put(&mut kv, "small", "ok").await?;
    Ok(())
}

#[tokio::test]
async fn malformed_requests_get_errors_and_the_server_keeps_serving() -> anyhow::Result<()> {
    let s = start(1 << 20).await?;
    let mut kv = KvClient::new(s.channel.clone());
    let empty = kv.put(pb::PutRequest::default()).await.expect_err("empty key");
    assert_eq!((empty.code(), empty.message()), (Code::InvalidArgument, "etcdserver: key is not provided"));
    let bad_sort = kv
        .range(pb::RangeRequest { key: b"k".to_vec(), sort_order: 42, ..Default::default() })
        .await
        .expect_err("unknown sort order");
    assert_eq!(bad_sort.code(), Code::InvalidArgument);
    let empty_op = kv
        .txn(pb::TxnRequest { success: vec![pb::RequestOp { request: None }], ..Default::default() })
        .await
        .expect_err("empty op");
    assert_eq!(empty_op.code(), Code::InvalidArgument);
    let ignore_with_value = kv
        .put(pb::PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ignore_value: true, ..Default::default() })
        .await
        .expect_err("value with ignore_value");
    assert_eq!(ignore_with_value.message(), "etcdserver: value is provided");
    let mut lease = LeaseClient::new(s.channel.clone());
    let missing = lease.lease_revoke(pb::LeaseRevokeRequest { id: 77 }).await.expect_err("missing lease");
    assert_eq!((missing.code(), missing.message()), (Code::NotFound, "etcdserver: requested lease not found"));
    let ttl = lease.lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 77, keys: true }).await?.into_inner();
    assert_eq!(ttl.ttl, -1, "an unknown lease reads as expired, as in etcd");
    put(&mut kv, "still", "serving").await?;
    Ok(())
}
