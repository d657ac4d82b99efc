//! What a request asks for: query options, body decoding, Accept negotiation.

use std::collections::HashMap;

use axum::http::{HeaderMap, header};
use serde_json::Value;
use waggle_api::{Reason, StatusError};

/// Query parameters, first value wins; the raw string is kept for proxying
/// (exec repeats `command=`).
#[derive(Debug, Default, Clone)]
pub struct Query {
    params: HashMap<String, String>,
    pub raw: String,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        let mut params = HashMap::new();
        for (k, v) in form_urlencoded(query.unwrap_or_default()) {
            params.entry(k).or_insert(v);
        }
        Self { params, raw: query.unwrap_or_default().to_owned() }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// A boolean parameter, read as Go's strconv.ParseBool reads it
    /// (the Python client sends `watch=True`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "t" | "T" | "true" | "True" | "TRUE"))
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, StatusError> {
        match self.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| StatusError::bad_request(format!("invalid value for {key}: {v:?}"))),
        }
    }

    /// `dryRun=All`
    pub fn dry_run(&self) -> Result<bool, StatusError> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => {
                Err(StatusError::bad_request(format!("Invalid dryRun value {other:?}: supported values are \"All\"")))
            }
        }
    }
}

/// Minimal `application/x-www-form-urlencoded` decoding.
fn form_urlencoded(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The media type of the request body (without parameters).
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Decodes a JSON object body. Protobuf bodies (kubectl ≥ 1.32 typed
/// clients) are not decoded yet and get 415.
pub fn decode_object(headers: &HeaderMap, body: &[u8]) -> Result<Value, StatusError> {
    let ct = content_type(headers);
    match ct.as_str() {
        "application/json" | "" | "*/*" => {}
        "application/vnd.kubernetes.protobuf" => {
            return waggle_api::protobuf::decode(body).map_err(|e| match e {
                waggle_api::protobuf::ProtobufError::UnsupportedKind { .. } => {
                    StatusError::new(Reason::UnsupportedMediaType, e.to_string())
                }
                other => StatusError::bad_request(format!("error decoding protobuf request body: {other}")),
            });
        }
        "application/yaml" => {}
        other => {
            return Err(StatusError::new(
                Reason::UnsupportedMediaType,
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json ({other})"
                ),
            ));
        }
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| StatusError::bad_request(format!("error decoding request body: {e}")))?;
    if !value.is_object() {
        return Err(StatusError::bad_request("error decoding request body: the body must be a JSON object"));
    }
    Ok(value)
}

/// Whether the client asked for a Table, and which `meta.k8s.io` version.
pub fn table_version(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    for part in accept.split(',') {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        if params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io") {
            if params.contains(&"v=v1") {
                return Some("v1");
            }
            if params.contains(&"v=v1beta1") {
                return Some("v1beta1");
            }
        }
    }
    None
}

/// Whether the client asked for PartialObjectMetadata (objects and watch
/// events) or PartialObjectMetadataList, and which `meta.k8s.io` version.
pub fn metadata_version(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    for part in accept.split(',') {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        let wanted = params.contains(&"as=PartialObjectMetadata") || params.contains(&"as=PartialObjectMetadataList");
        if wanted && params.contains(&"g=meta.k8s.io") {
            if params.contains(&"v=v1") {
                return Some("v1");
            }
            if params.contains(&"v=v1beta1") {
                return Some("v1beta1");
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_only_is_asked_for_as_kube_rs_and_client_go_do() {
        let with = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, accept.parse().expect("header"));
            metadata_version(&h)
        };
        assert_eq!(with("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"), Some("v1"));
        assert_eq!(
            with("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"),
            Some("v1")
        );
        assert_eq!(with("application/json"), None);
        assert_eq!(with("application/json;as=Table;g=meta.k8s.io;v=v1"), None);
    }

    #[test]
    fn decodes_kubectl_selectors() {
        let q = Query::parse(Some("labelSelector=kubernetes.io%2Fcluster-service%3Dtrue&limit=500&watch=true"));
        assert_eq!(q.get("labelSelector"), Some("kubernetes.io/cluster-service=true"));
        assert_eq!(q.int("limit").expect("int"), Some(500));
        assert!(q.flag("watch"));
        assert!(Query::parse(Some("watch=True")).flag("watch"));
        assert!(!Query::parse(Some("watch=false")).flag("watch"));
        assert!(Query::parse(Some("limit=x")).int("limit").is_err());
    }
}
