//! Errors of the plugin and their one translation into CNI error codes.
//!
//! Every failure inside the plugin is an [`Error`]; `main` turns it into the
//! spec's error JSON (`{"cniVersion","code","msg","details"}`) exactly once.

use serde::Serialize;

use crate::ipam::IpamError;

/// Error codes: 1–99 are the spec's, 100 and up are waggle-cni's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    PluginNotAvailable = 50,
    NotReady = 51,
    /// No free address is left in the requested ranges.
    RangeExhausted = 100,
    /// CHECK found the container's network differs from the recorded result.
    CheckMismatch = 101,
    /// The kernel refused a netlink request.
    Netlink = 102,
    /// `CNI_IFNAME` already exists inside the container's namespace.
    InterfaceExists = 103,
    /// A specifically requested address is taken or outside every range.
    AddressUnavailable = 104,
    /// A delegated plugin (IPAM) failed without a CNI error of its own.
    Delegate = 105,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("CNI version {requested} is not supported (supported: {supported})")]
    IncompatibleVersion { requested: String, supported: String },
    #[error("unsupported field {field}: {why}")]
    UnsupportedField { field: String, why: String },
    #[error("network namespace {path} does not exist: {source}")]
    NetnsNotFound { path: String, source: std::io::Error },
    #[error("environment variable {name}: {why}")]
    InvalidEnv { name: &'static str, why: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("decoding {what}: {source}")]
    Decode { what: &'static str, source: serde_json::Error },
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    #[error("{what}: {source}")]
    Netlink { what: String, source: rtnetlink::Error },
    #[error("interface {ifname} already exists in {netns}")]
    InterfaceExists { ifname: String, netns: String },
    #[error("CHECK failed: {0}")]
    CheckMismatch(String),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("delegated plugin {plugin} failed with code {code}: {msg}")]
    Delegated { plugin: String, code: u32, msg: String, details: String },
    #[error("running delegated plugin {plugin}: {why}")]
    DelegateFailed { plugin: String, why: String },
    #[error("plugin not ready: {0}")]
    NotReady(String),
    #[error("plugin not available: {0}")]
    NotAvailable(String),
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { what: what.into(), source }
    }

    pub fn netlink(what: impl Into<String>, source: rtnetlink::Error) -> Self {
        Self::Netlink { what: what.into(), source }
    }

    /// The one place where an error becomes a CNI code.
    pub fn code(&self) -> u32 {
        let code = match self {
            Self::IncompatibleVersion { .. } => Code::IncompatibleVersion,
            Self::UnsupportedField { .. } => Code::UnsupportedField,
            Self::NetnsNotFound { .. } => Code::UnknownContainer,
            Self::InvalidEnv { .. } => Code::InvalidEnvironment,
            Self::Io { .. } => Code::Io,
            Self::Decode { .. } => Code::Decode,
            Self::InvalidConfig(_) => Code::InvalidConfig,
            Self::Netlink { .. } => Code::Netlink,
            Self::InterfaceExists { .. } => Code::InterfaceExists,
            Self::CheckMismatch(_) => Code::CheckMismatch,
            Self::Ipam(err) => err.code(),
            Self::Delegated { code, .. } => return *code,
            Self::DelegateFailed { .. } => Code::Delegate,
            Self::NotReady(_) => Code::NotReady,
            Self::NotAvailable(_) => Code::PluginNotAvailable,
        };
        code as u32
    }

    /// The spec's error object, in the version the runtime asked for.
    pub fn to_cni(&self, cni_version: &str) -> ErrorResult {
        let (msg, details) = match self {
            Self::Delegated { msg, details, .. } => (msg.clone(), details.clone()),
            other => (other.to_string(), String::new()),
        };
        ErrorResult { cni_version: cni_version.to_string(), code: self.code(), msg, details }
    }
}

/// The error JSON printed on stdout.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResult {
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_range_maps_to_the_plugins_own_code_100() {
        let err = Error::Ipam(IpamError::Exhausted { ranges: "10.0.0.0/30".into() });
        assert_eq!(err.code(), 100);
    }

    #[test]
    fn error_json_carries_version_code_and_message() {
        let err = Error::InvalidConfig("missing name".into());
        let json = serde_json::to_value(err.to_cni("1.1.0")).expect("serializes");
        assert_eq!(json["cniVersion"], "1.1.0");
        assert_eq!(json["code"], 7);
        assert!(json["msg"].as_str().is_some_and(|m| m.contains("missing name")));
        assert!(json.get("details").is_none());
    }
}
