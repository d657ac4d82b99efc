//! The connection to containerd and the per-request namespace/lease metadata.

use std::path::{Path, PathBuf};

use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::Error;

/// A containerd connection bound to one containerd namespace (waggle uses one
/// namespace per node).
#[derive(Clone, Debug)]
pub struct Runtime {
    pub(crate) channel: Channel,
    namespace: MetadataValue<tonic::metadata::Ascii>,
    /// runc's state directory for this node's containers (default: the shim's).
    pub(crate) runc_root: Option<PathBuf>,
    /// Registries spoken to over plain HTTP besides those on loopback
    /// (`host` or `host:port`), as containerd's hosts.toml allows.
    pub(crate) insecure_registries: std::sync::Arc<[String]>,
}

impl Runtime {
    /// Connects to containerd's gRPC socket and scopes every call to `namespace`.
    pub async fn connect(socket: impl AsRef<Path>, namespace: &str) -> Result<Self, Error> {
        let socket = socket.as_ref();
        let channel = containerd_client::connect(socket)
            .await
            .map_err(|source| Error::Connect { socket: socket.display().to_string(), source })?;
        let namespace = namespace.parse().map_err(|_| Error::Metadata { what: format!("namespace {namespace:?}") })?;
        Ok(Self { channel, namespace, runc_root: None, insecure_registries: std::sync::Arc::new([]) })
    }

    /// Keeps runc's container state under `root` instead of the shim's default
    /// (`/run/containerd/runc/<namespace>`), so that several nodes or tests on
    /// one machine never share it.
    pub fn with_runc_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.runc_root = Some(root.into());
        self
    }

    /// Pulls from these registries (`host` or `host:port`) over plain HTTP.
    pub fn with_insecure_registries(mut self, registries: &[String]) -> Self {
        self.insecure_registries = registries.iter().map(|r| r.trim().to_owned()).collect();
        self
    }

    /// Wraps `msg` in a request carrying the namespace.
    pub(crate) fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut().insert("containerd-namespace", self.namespace.clone());
        req
    }

    /// Wraps `msg` in a request carrying the namespace and a lease, so that
    /// containerd's garbage collector keeps what the request creates until the
    /// lease is deleted.
    pub(crate) fn leased_request<T>(&self, msg: T, lease: &str) -> Result<Request<T>, Error> {
        let mut req = self.request(msg);
        let lease = lease.parse().map_err(|_| Error::Metadata { what: format!("lease {lease:?}") })?;
        req.metadata_mut().insert("containerd-lease", lease);
        Ok(req)
    }
}
