use thiserror::Error;

/// What went wrong in the agent, and to what.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("container runtime: {0}")]
    Runtime(#[from] crate::cri::RuntimeError),
    #[error("pod network: {0}")]
    Network(#[from] crate::network::NetworkError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("eBPF dataplane: {0}")]
    Dataplane(Box<waggle_dataplane::Error>),
    #[error("configuration: {0}")]
    Config(String),
}

impl From<waggle_dataplane::Error> for Error {
    fn from(e: waggle_dataplane::Error) -> Self {
        Self::Dataplane(Box::new(e))
    }
}

impl Error {
    pub(crate) fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Kube { what, source: Box::new(source) }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// True when the API answered 404.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// True when the API answered 409.
pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
