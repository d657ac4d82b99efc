//! Wrapping objects into `meta.k8s.io` Tables for `kubectl get`.

use serde_json::{Value, json};
use waggle_api::{ResourceInfo, table};

use crate::admission::now_unix;

/// `includeObject`: what each row carries besides its cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// An object reduced to its metadata, as `as=PartialObjectMetadata` asks.
pub fn partial_object_metadata(obj: &Value, version: &str) -> Value {
    let m = obj.get("metadata").cloned().unwrap_or(json!({}));
    json!({"kind": "PartialObjectMetadata", "apiVersion": format!("meta.k8s.io/{version}"), "metadata": m})
}

fn row(r: &ResourceInfo, obj: &Value, include: Include, version: &str, now: i64) -> Value {
    let cells = table::cells(r.group, r.kind, obj, now);
    let object = match include {
        Include::None => Value::Null,
        Include::Object => obj.clone(),
        Include::Metadata => {
            let mut m = obj.get("metadata").cloned().unwrap_or(json!({}));
            if let Some(map) = m.as_object_mut() {
                map.remove("managedFields");
            }
            json!({"kind": "PartialObjectMetadata", "apiVersion": format!("meta.k8s.io/{version}"), "metadata": m})
        }
    };
    if object.is_null() { json!({"cells": cells}) } else { json!({"cells": cells, "object": object}) }
}

/// A Table of `items` (borrowed, or decoded one at a time by the iterator); `with_columns` false omits the column definitions
/// (watch events after the first).
pub fn table(
    r: &ResourceInfo,
    items: impl IntoIterator<Item = impl std::borrow::Borrow<Value>>,
    list_meta: Value,
    include: Include,
    version: &str,
    with_columns: bool,
) -> Value {
    let now = now_unix();
    let rows: Vec<Value> = items.into_iter().map(|o| row(r, o.borrow(), include, version, now)).collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list_meta,
        "rows": rows,
    });
    t["columnDefinitions"] = if with_columns { json!(table::column_definitions(r.group, r.kind)) } else { json!([]) };
    t
}
