use thiserror::Error;

/// What went wrong, and to what, while talking to containerd.
#[derive(Debug, Error)]
pub enum Error {
    #[error("connecting to containerd at {socket}")]
    Connect {
        socket: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("containerd {call} for {what}: {status}")]
    Rpc { call: &'static str, what: String, status: Box<tonic::Status> },
    #[error("reading OCI archive {path}")]
    ArchiveIo {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("OCI archive {path}: {reason}")]
    Archive { path: String, reason: String },
    #[error("image {image}: {reason}")]
    Image { image: String, reason: String },
    #[error("pulling image {image}: {reason}")]
    Pull { image: String, reason: String },
    #[error("encoding the OCI runtime spec for {container}")]
    Spec {
        container: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} did not finish within {after:?}")]
    Timeout { what: String, after: std::time::Duration },
    #[error("{what} contains bytes that are not valid in gRPC metadata")]
    Metadata { what: String },
    /// The container's configuration cannot be honoured (upstream's
    /// CreateContainerConfigError), e.g. runAsNonRoot with a root image.
    #[error("{0}")]
    Config(String),
}

impl Error {
    pub(crate) fn rpc(call: &'static str, what: impl Into<String>) -> impl FnOnce(tonic::Status) -> Self {
        let what = what.into();
        move |status| Self::Rpc { call, what, status: Box::new(status) }
    }

    /// True when containerd answered NotFound.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Rpc { status, .. } if status.code() == tonic::Code::NotFound)
    }

    /// True when containerd answered AlreadyExists.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Self::Rpc { status, .. } if status.code() == tonic::Code::AlreadyExists)
    }
}
