//! Field ownership of writes: which managedFields entry a write goes to, and
//! the glue from requests to [`waggle_api::fieldmanager`], which does the work.

use serde_json::{Value, json};
use waggle_api::fieldmanager::{self, ManagedFields, Manager, Operation, Part};
use waggle_api::{ResourceInfo, StatusError};

use crate::admission::now_rfc3339;

/// Who writes and how: the manager (`fieldManager`, else the User-Agent's
/// program name) and whether it applies or updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer {
    pub manager: String,
    pub operation: Operation,
}

impl Writer {
    pub fn update(manager: impl Into<String>) -> Self {
        Self { manager: manager.into(), operation: Operation::Update }
    }

    pub fn apply(manager: impl Into<String>) -> Self {
        Self { manager: manager.into(), operation: Operation::Apply }
    }

    /// The managedFields identity of this writer on `r` through `subresource`.
    pub fn manager(&self, r: &ResourceInfo, subresource: Option<&str>) -> Manager {
        Manager {
            manager: self.manager.clone(),
            operation: self.operation,
            api_version: r.api_version(),
            subresource: subresource.filter(|s| matches!(*s, "status" | "scale")).map(str::to_owned),
        }
    }
}

/// The fields a write through `subresource` may own.
pub fn part(r: &ResourceInfo, subresource: Option<&str>) -> Part {
    match subresource {
        Some("status") => Part::Status,
        _ => Part::Main { status_subresource: r.has_status_subresource() },
    }
}

fn decode(obj: &Value) -> Result<ManagedFields, StatusError> {
    ManagedFields::of(obj).map_err(StatusError::bad_request)
}

/// The managed fields a write starts from: the ones the client wrote when
/// they differ from the live ones (kubectl's client-side to server-side apply
/// upgrade rewrites them), else the live ones. Live ones that no longer decode
/// are dropped, as upstream resets them.
fn starting_point(current: Option<&Value>, new: &Value) -> Result<ManagedFields, StatusError> {
    let live = current.and_then(|c| c.pointer("/metadata/managedFields"));
    match new.pointer("/metadata/managedFields") {
        Some(client) if Some(client) != live => decode(new),
        _ => Ok(current.map(|c| ManagedFields::of(c).unwrap_or_default()).unwrap_or_default()),
    }
}

/// Records an update (create when `current` is None) by `writer` in `new`'s
/// managedFields.
pub fn record_update(
    r: &ResourceInfo,
    current: Option<&Value>,
    new: &mut Value,
    writer: &Writer,
    subresource: Option<&str>,
) -> Result<(), StatusError> {
    let mut managed = starting_point(current, new)?;
    let empty = json!({});
    let old = current.unwrap_or(&empty);
    let who = Writer { operation: Operation::Update, ..writer.clone() }.manager(r, subresource);
    fieldmanager::update(&mut managed, &who, old, new, part(r, subresource), &now_rfc3339());
    managed.write_to(new);
    Ok(())
}

/// Applies `config` by `writer` to `live` (`{}` for a new object): the merged
/// object, with its managedFields, or a 409 conflict.
pub fn apply(
    r: &ResourceInfo,
    live: &Value,
    config: &Value,
    writer: &Writer,
    subresource: Option<&str>,
    force: bool,
) -> Result<Value, StatusError> {
    let mut managed = ManagedFields::of(live).unwrap_or_default();
    let who = writer.manager(r, subresource);
    let mut merged =
        fieldmanager::apply(&mut managed, &who, live, config, part(r, subresource), force, &now_rfc3339())?;
    managed.write_to(&mut merged);
    Ok(merged)
}
