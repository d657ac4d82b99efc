//! `Status` errors: every failed API call is answered with one, and kubectl
//! prints `Error from server (<reason>): <message>` from it.

use serde_json::{Value, json};

use crate::ResourceInfo;

/// The `reason` of a failed `Status`, with its HTTP code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    AlreadyExists,
    Conflict,
    Gone,
    Expired,
    RequestEntityTooLarge,
    UnsupportedMediaType,
    Invalid,
    TooManyRequests,
    InternalError,
    ServiceUnavailable,
    Timeout,
}

impl Reason {
    pub fn code(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::AlreadyExists | Self::Conflict => 409,
            Self::Gone | Self::Expired => 410,
            Self::RequestEntityTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::Invalid => 422,
            Self::TooManyRequests => 429,
            Self::InternalError => 500,
            Self::ServiceUnavailable => 503,
            Self::Timeout => 504,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "BadRequest",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "NotFound",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::AlreadyExists => "AlreadyExists",
            Self::Conflict => "Conflict",
            Self::Gone => "Gone",
            Self::Expired => "Expired",
            Self::RequestEntityTooLarge => "RequestEntityTooLarge",
            Self::UnsupportedMediaType => "UnsupportedMediaType",
            Self::Invalid => "Invalid",
            Self::TooManyRequests => "TooManyRequests",
            Self::InternalError => "InternalError",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::Timeout => "Timeout",
        }
    }
}

/// One cause of an `Invalid` error (`details.causes[]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, …
    pub reason: String,
    pub message: String,
    /// `spec.containers[0].image`
    pub field: String,
}

/// `details` of a failed `Status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details {
    /// `details.name`
    pub name: Option<String>,
    /// `details.group`
    pub group: Option<String>,
    /// `details.kind` (upstream puts the plural resource there)
    pub kind: Option<String>,
    pub causes: Vec<Cause>,
    /// `details.retryAfterSeconds`
    pub retry_after_seconds: Option<u32>,
}

/// A failed API call, as a Kubernetes `Status`. Small (details are boxed) so
/// that `Result<_, StatusError>` stays cheap on every path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason:?}: {message}")]
pub struct StatusError {
    pub reason: Reason,
    pub message: String,
    pub details: Box<Details>,
}

impl StatusError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), details: Box::default() }
    }

    fn about(mut self, resource: &ResourceInfo, name: &str) -> Self {
        self.details.name = Some(name.to_owned());
        self.details.group = Some(resource.group.to_owned());
        self.details.kind = Some(resource.plural.to_owned());
        self
    }

    /// `deployments.apps "web" not found`
    pub fn not_found(resource: &ResourceInfo, name: &str) -> Self {
        Self::new(Reason::NotFound, format!("{} \"{name}\" not found", resource.qualified_plural()))
            .about(resource, name)
    }

    /// `deployments.apps "web" already exists`
    pub fn already_exists(resource: &ResourceInfo, name: &str) -> Self {
        Self::new(Reason::AlreadyExists, format!("{} \"{name}\" already exists", resource.qualified_plural()))
            .about(resource, name)
    }

    /// The optimistic-concurrency conflict upstream returns on a stale resourceVersion.
    pub fn conflict(resource: &ResourceInfo, name: &str) -> Self {
        Self::new(
            Reason::Conflict,
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                resource.qualified_plural()
            ),
        )
        .about(resource, name)
    }

    /// `The Deployment "web" is invalid: spec.replicas: Invalid value: -1: …`
    pub fn invalid(resource: &ResourceInfo, name: &str, causes: Vec<Cause>) -> Self {
        let summary = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect::<Vec<_>>().join(", ");
        let mut err = Self::new(Reason::Invalid, format!("{} \"{name}\" is invalid: {summary}", resource.kind))
            .about(resource, name);
        err.details.kind = Some(resource.kind.to_owned());
        err.details.causes = causes;
        err
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Reason::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Reason::InternalError, message)
    }

    /// The watch error for a resourceVersion older than the kept history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(Reason::Expired, message)
    }

    pub fn code(&self) -> u16 {
        self.reason.code()
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason.as_str(),
            "code": self.code(),
        });
        let mut details = serde_json::Map::new();
        if let Some(name) = &self.details.name {
            details.insert("name".into(), json!(name));
        }
        if let Some(group) = &self.details.group {
            details.insert("group".into(), json!(group));
        }
        if let Some(kind) = &self.details.kind {
            details.insert("kind".into(), json!(kind));
        }
        if !self.details.causes.is_empty() {
            let causes: Vec<Value> = self
                .details
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(secs) = self.details.retry_after_seconds {
            details.insert("retryAfterSeconds".into(), json!(secs));
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

/// The `Status` a successful delete of a collection-less object answers with.
pub fn success(resource: &ResourceInfo, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": resource.group, "kind": resource.plural, "uid": uid},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;

    #[test]
    fn not_found_reads_like_upstream() {
        let deploy = lookup("apps", "v1", "deployments").expect("registered");
        let status = StatusError::not_found(deploy, "web").to_status();
        assert_eq!(status["message"], "deployments.apps \"web\" not found");
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["code"], 404);
        assert_eq!(status["details"]["kind"], "deployments");
    }

    #[test]
    fn invalid_lists_its_causes() {
        let pods = lookup("", "v1", "pods").expect("registered");
        let cause = Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: "spec.containers[0].image".into(),
        };
        let status = StatusError::invalid(pods, "bad", vec![cause]).to_status();
        assert_eq!(status["message"], "Pod \"bad\" is invalid: spec.containers[0].image: Required value");
        assert_eq!(status["code"], 422);
        assert_eq!(status["details"]["causes"][0]["field"], "spec.containers[0].image");
    }
}
