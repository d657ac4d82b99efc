//! Objects in the store: key layout, encoding, and the optimistic-concurrency
//! writes every verb is built on.
//!
//! Keys are `/registry/<group|core>/<plural>/<namespace>/<name>` (namespaced)
//! or `/registry/<group|core>/<plural>/<name>`. Values are the object's JSON
//! without `metadata.resourceVersion`, which is the key's mod_revision and is
//! filled in on every read.

use std::sync::Arc;

use serde_json::Value;
use waggle_api::{Reason, ResourceInfo, StatusError, meta};
use waggle_store::{
    Compare, CompareResult, CompareTarget, DeleteRequest, KeyRange, KeyValue, PutRequest, RangeRequest, Revision,
    Store, StoreError, TxnOp, TxnOpResponse, TxnRequest,
};

/// The object storage the handlers use.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects").finish_non_exhaustive()
    }
}

/// One page of a list.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Value>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// The last key returned, when more keys follow.
    pub next_key: Option<Vec<u8>>,
}

fn group_dir(r: &ResourceInfo) -> &str {
    if r.group.is_empty() { "core" } else { r.group }
}

/// The key of one object.
pub fn key(r: &ResourceInfo, namespace: Option<&str>, name: &str) -> Vec<u8> {
    match namespace.filter(|_| r.namespaced()) {
        Some(ns) => format!("/registry/{}/{}/{ns}/{name}", group_dir(r), r.plural).into_bytes(),
        None => format!("/registry/{}/{}/{name}", group_dir(r), r.plural).into_bytes(),
    }
}

/// The prefix of every object of `r`, or of those in `namespace`.
pub fn prefix(r: &ResourceInfo, namespace: Option<&str>) -> Vec<u8> {
    match namespace.filter(|_| r.namespaced()) {
        Some(ns) => format!("/registry/{}/{}/{ns}/", group_dir(r), r.plural).into_bytes(),
        None => format!("/registry/{}/{}/", group_dir(r), r.plural).into_bytes(),
    }
}

/// Turns a store error into the Status upstream would answer with.
pub fn store_error(err: StoreError) -> StatusError {
    match err {
        StoreError::Compacted { requested, compact_revision, .. } => StatusError::expired(format!(
            "The resourceVersion for the provided list is too old: {requested} (compacted up to {compact_revision})"
        )),
        StoreError::FutureRevision { requested, current, .. } => {
            let mut e = StatusError::new(
                Reason::Timeout,
                format!("Too large resource version: {requested}, current: {current}"),
            );
            e.details.retry_after_seconds = Some(1);
            e
        }
        other => StatusError::internal(format!("storage: {other}")),
    }
}

/// Decodes a stored value and sets its resourceVersion.
pub fn decode(kv: &KeyValue) -> Result<Value, StatusError> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        StatusError::internal(format!("stored object {} is not JSON: {e}", String::from_utf8_lossy(&kv.key)))
    })?;
    meta::set_meta(&mut obj, "resourceVersion", Some(Value::String(kv.mod_revision.to_string())));
    Ok(obj)
}

fn encode(obj: &Value) -> Vec<u8> {
    let mut stored = obj.clone();
    meta::set_meta(&mut stored, "resourceVersion", None);
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// `op` if the key's mod_revision is still `expected`; otherwise the key is
/// read back, so the caller can tell NotFound from Conflict.
fn guarded(k: Vec<u8>, expected: Revision, op: TxnOp) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            range: KeyRange::key(k.clone()),
            result: CompareResult::Equal,
            target: CompareTarget::ModRevision(expected),
        }],
        success: vec![op],
        failure: vec![TxnOp::Range(RangeRequest::new(KeyRange::key(k)))],
    }
}

/// Parses a resourceVersion string; anything else is a 400.
pub fn parse_rv(rv: &str) -> Result<Revision, StatusError> {
    rv.parse::<Revision>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| StatusError::bad_request(format!("invalid resource version: {rv:?}")))
}

impl Objects {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub async fn current_revision(&self) -> Result<Revision, StatusError> {
        self.store.current_revision().await.map_err(store_error)
    }

    /// Reads one object, or NotFound.
    pub async fn get(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Value, StatusError> {
        self.try_get(r, ns, name).await?.ok_or_else(|| StatusError::not_found(r, name))
    }

    pub async fn try_get(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Option<Value>, StatusError> {
        let resp = self.store.range(RangeRequest::new(KeyRange::key(key(r, ns, name)))).await.map_err(store_error)?;
        resp.kvs.first().map(decode).transpose()
    }

    /// Reads up to `limit` keys (0 = all) starting after `after`, at
    /// `revision` (0 = current).
    pub async fn list(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        revision: Revision,
        limit: i64,
        after: Option<&[u8]>,
    ) -> Result<Page, StatusError> {
        let prefix = prefix(r, ns);
        let mut range = KeyRange::prefix(prefix.clone());
        if let Some(after) = after {
            // The smallest key greater than `after`.
            let mut start = after.to_vec();
            start.push(0);
            range.key = start;
        }
        let mut req = RangeRequest::new(range);
        req.revision = revision;
        req.limit = limit;
        let resp = self.store.range(req).await.map_err(store_error)?;
        let items = resp.kvs.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        let next_key = if resp.more { resp.kvs.last().map(|kv| kv.key.clone()) } else { None };
        Ok(Page { items, revision: resp.revision, next_key })
    }

    /// Creates the object; AlreadyExists if the key is taken.
    pub async fn create(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        obj: &Value,
    ) -> Result<Value, StatusError> {
        let k = key(r, ns, name);
        let txn = TxnRequest {
            compare: vec![Compare {
                range: KeyRange::key(k.clone()),
                result: CompareResult::Equal,
                target: CompareTarget::CreateRevision(0),
            }],
            success: vec![TxnOp::Put(PutRequest::new(k, encode(obj)))],
            failure: vec![],
        };
        let resp = self.store.txn(txn).await.map_err(store_error)?;
        if !resp.succeeded {
            return Err(StatusError::already_exists(r, name));
        }
        let mut created = obj.clone();
        meta::set_meta(&mut created, "resourceVersion", Some(Value::String(resp.revision.to_string())));
        Ok(created)
    }

    /// Replaces the object if its mod_revision is still `expected`.
    pub async fn update(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        obj: &Value,
        expected: Revision,
    ) -> Result<Value, StatusError> {
        let k = key(r, ns, name);
        let txn = guarded(k.clone(), expected, TxnOp::Put(PutRequest::new(k, encode(obj))));
        let resp = self.store.txn(txn).await.map_err(store_error)?;
        if !resp.succeeded {
            return Err(self.why_not(r, name, &resp.responses));
        }
        let mut updated = obj.clone();
        meta::set_meta(&mut updated, "resourceVersion", Some(Value::String(resp.revision.to_string())));
        Ok(updated)
    }

    /// Deletes the object if its mod_revision is still `expected`; returns
    /// the revision of the delete.
    pub async fn delete(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        expected: Revision,
    ) -> Result<Revision, StatusError> {
        let k = key(r, ns, name);
        let txn =
            guarded(k.clone(), expected, TxnOp::Delete(DeleteRequest { range: KeyRange::key(k), prev_kv: false }));
        let resp = self.store.txn(txn).await.map_err(store_error)?;
        if !resp.succeeded {
            return Err(self.why_not(r, name, &resp.responses));
        }
        Ok(resp.revision)
    }

    /// NotFound when the failure branch read nothing, Conflict otherwise.
    fn why_not(&self, r: &ResourceInfo, name: &str, responses: &[TxnOpResponse]) -> StatusError {
        match responses.first() {
            Some(TxnOpResponse::Range(range)) if !range.kvs.is_empty() => StatusError::conflict(r, name),
            _ => StatusError::not_found(r, name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waggle_api::registry::lookup;

    #[test]
    fn keys_follow_the_registry_layout() {
        let pods = lookup("", "v1", "pods").expect("pods");
        assert_eq!(key(pods, Some("default"), "p"), b"/registry/core/pods/default/p".to_vec());
        let nodes = lookup("", "v1", "nodes").expect("nodes");
        assert_eq!(key(nodes, Some("ignored"), "n1"), b"/registry/core/nodes/n1".to_vec());
        let deploy = lookup("apps", "v1", "deployments").expect("deployments");
        assert_eq!(prefix(deploy, None), b"/registry/apps/deployments/".to_vec());
    }
}
