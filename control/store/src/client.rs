//! A small etcd v3 client over the project's own protos: what the fault
//! tests and the benchmark need (put, get, compare-and-swap, prefix reads,
//! watches, status), against waggle store or etcd alike.

use std::time::Duration;

use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use crate::proto::etcdserverpb::{
    self as pb, compare, kv_client::KvClient, maintenance_client::MaintenanceClient, request_op,
    watch_client::WatchClient, watch_request,
};
use crate::proto::mvccpb;

/// A connection to one member. Cloning shares the HTTP/2 connection.
#[derive(Clone, Debug)]
pub struct EtcdClient {
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
}

/// The end of the range of every key with `prefix` (etcd's `--prefix`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdClient {
    /// Connects lazily to `endpoint` (`http://host:port` or `host:port`);
    /// every request fails after `timeout`.
    pub fn connect_lazy(endpoint: &str, timeout: Duration) -> Result<Self, tonic::transport::Error> {
        let url = if endpoint.contains("://") { endpoint.to_owned() } else { format!("http://{endpoint}") };
        let channel = Endpoint::from_shared(url)?
            .connect_timeout(Duration::from_secs(1))
            .timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            kv: KvClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            watch: WatchClient::new(channel.clone()),
            maintenance: MaintenanceClient::new(channel),
        })
    }

    /// Puts `value` at `key`; returns the revision of the write.
    pub async fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<i64, Status> {
        let req = pb::PutRequest { key: key.into(), value: value.into(), ..Default::default() };
        let resp = self.kv.put(req).await?.into_inner();
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    /// The key's value, if it exists (a linearizable read).
    pub async fn get(&mut self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>, Status> {
        let req = pb::RangeRequest { key: key.into(), ..Default::default() };
        Ok(self.kv.range(req).await?.into_inner().kvs.into_iter().next().map(|kv| kv.value))
    }

    /// Every key with `prefix`, with its value.
    pub async fn get_prefix(&mut self, prefix: impl Into<Vec<u8>>) -> Result<Vec<mvccpb::KeyValue>, Status> {
        let key = prefix.into();
        let req = pb::RangeRequest { range_end: prefix_end(&key), key, ..Default::default() };
        Ok(self.kv.range(req).await?.into_inner().kvs)
    }

    /// Sets `key` to `new` only if its value is `expected` (`None`: the key
    /// does not exist). Returns whether it did.
    pub async fn compare_and_swap(
        &mut self,
        key: impl Into<Vec<u8>>,
        expected: Option<&[u8]>,
        new: impl Into<Vec<u8>>,
    ) -> Result<bool, Status> {
        let key = key.into();
        let cmp = match expected {
            Some(value) => pb::Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Value as i32,
                key: key.clone(),
                target_union: Some(compare::TargetUnion::Value(value.to_vec())),
                range_end: Vec::new(),
            },
            None => pb::Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Version as i32,
                key: key.clone(),
                target_union: Some(compare::TargetUnion::Version(0)),
                range_end: Vec::new(),
            },
        };
        let put = pb::RequestOp {
            request: Some(request_op::Request::RequestPut(pb::PutRequest {
                key,
                value: new.into(),
                ..Default::default()
            })),
        };
        let req = pb::TxnRequest { compare: vec![cmp], success: vec![put], failure: Vec::new() };
        Ok(self.kv.txn(req).await?.into_inner().succeeded)
    }

    /// The member's status (leader, term, applied index).
    pub async fn status(&mut self) -> Result<pb::StatusResponse, Status> {
        Ok(self.maintenance.status(pb::StatusRequest {}).await?.into_inner())
    }

    /// Watches every key with `prefix` from now on; returns the response
    /// stream once the watcher is created.
    pub async fn watch_prefix(
        &mut self,
        prefix: impl Into<Vec<u8>>,
    ) -> Result<(tokio::sync::mpsc::Sender<pb::WatchRequest>, tonic::Streaming<pb::WatchResponse>), Status> {
        let key = prefix.into();
        let create = pb::WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                range_end: prefix_end(&key),
                key,
                ..Default::default()
            })),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(create).await.map_err(|_| Status::internal("the watch request stream closed"))?;
        let mut stream = self.watch.watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
        match stream.message().await? {
            Some(resp) if resp.created => Ok((tx, stream)),
            other => Err(Status::internal(format!("the watch was not created: {other:?}"))),
        }
    }
}
