//! Field ownership and server-side apply, with upstream's structured-merge-diff
//! semantics for the built-in kinds (no maintained Rust implementation exists,
//! so this is one).
//!
//! Every write records which manager owns which fields in
//! `metadata.managedFields`:
//!
//! - an **update** (create, PUT, JSON/merge/strategic PATCH) takes the fields
//!   it added or changed from every other manager and adds them to its own
//!   `Update` entry; fields it removed leave every set;
//! - an **apply** (`application/apply-patch+yaml`) merges the applied
//!   configuration into the object, owns exactly the fields it names,
//!   removes the fields it named last time and no longer names (unless
//!   another manager owns them too), and fails with a conflict when it
//!   changes a field another manager owns, unless forced.
//!
//! List associativity (keyed, set, atomic) comes from the strategic merge
//! patch metadata in [`crate::patch`]; a few object fields are maps
//! (labels, annotations, …) or atomic structs (label selectors, key refs),
//! as upstream's schemas mark them.

use serde_json::{Map, Value, json};

use crate::fieldset::{FieldSet, path_string};
use crate::patch::{ListType, list_key_default, list_type};
use crate::status::{Cause, Reason, StatusError};

/// `operation` of a managedFields entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "Apply",
            Self::Update => "Update",
        }
    }
}

/// Who writes: what identifies a managedFields entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manager {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    /// `status`, `scale`: the subresource the write went through.
    pub subresource: Option<String>,
}

impl Manager {
    /// Upstream's identity: appliers are the same whatever version they apply with.
    fn same(&self, other: &Manager) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    /// How a conflict names this manager: `"kubectl"`,
    /// `"kubectl-client-side-apply" using apps/v1`.
    fn printed(&self) -> String {
        let mut out = quoted(&self.manager);
        if let Some(sub) = &self.subresource {
            out.push_str(&format!(" with subresource {}", quoted(sub)));
        }
        if self.operation == Operation::Update {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    who: Manager,
    time: Option<String>,
    fields: FieldSet,
}

/// The decoded `metadata.managedFields` of an object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManagedFields {
    entries: Vec<Entry>,
}

impl ManagedFields {
    /// Reads `metadata.managedFields` (absent: none).
    pub fn of(obj: &Value) -> Result<Self, String> {
        let Some(list) = obj.pointer("/metadata/managedFields").filter(|v| !v.is_null()) else {
            return Ok(Self::default());
        };
        let Some(list) = list.as_array() else { return Err("metadata.managedFields must be a list".into()) };
        let mut entries = Vec::with_capacity(list.len());
        for e in list {
            let text = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
            let operation = match e.get("operation").and_then(Value::as_str) {
                Some("Apply") => Operation::Apply,
                Some("Update") => Operation::Update,
                other => return Err(format!("metadata.managedFields: unknown operation {other:?}")),
            };
            if let Some(t) = text("fieldsType").filter(|t| t != "FieldsV1") {
                return Err(format!("metadata.managedFields: unknown fieldsType {t:?}"));
            }
            let fields = match e.get("fieldsV1") {
                Some(v) => FieldSet::from_fields_v1(v).map_err(|err| format!("metadata.managedFields: {err}"))?,
                None => FieldSet::new(),
            };
            entries.push(Entry {
                who: Manager {
                    manager: text("manager").unwrap_or_default(),
                    operation,
                    api_version: text("apiVersion").unwrap_or_default(),
                    subresource: text("subresource").filter(|s| !s.is_empty()),
                },
                time: text("time"),
                fields,
            });
        }
        Ok(Self { entries })
    }

    /// Writes the entries into `metadata.managedFields`, in upstream's order
    /// (operation, time, manager, apiVersion, subresource).
    pub fn write_to(&self, obj: &mut Value) {
        let mut entries: Vec<&Entry> = self.entries.iter().filter(|e| !e.fields.is_empty()).collect();
        entries.sort_by(|a, b| {
            (a.who.operation.as_str(), &a.time, &a.who.manager, &a.who.api_version, &a.who.subresource).cmp(&(
                b.who.operation.as_str(),
                &b.time,
                &b.who.manager,
                &b.who.api_version,
                &b.who.subresource,
            ))
        });
        let list: Vec<Value> = entries
            .iter()
            .map(|e| {
                let mut v = json!({
                    "manager": e.who.manager,
                    "operation": e.who.operation.as_str(),
                    "apiVersion": e.who.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": e.fields.to_fields_v1(),
                });
                if let Some(sub) = &e.who.subresource {
                    v["subresource"] = json!(sub);
                }
                v
            })
            .collect();
        let meta = crate::meta::metadata_mut(obj);
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }

    /// The fields `who` owns.
    pub fn fields_of(&self, who: &Manager) -> Option<&FieldSet> {
        self.entries.iter().find(|e| e.who.same(who)).map(|e| &e.fields)
    }

    fn set(&mut self, who: &Manager, fields: FieldSet, now: &str) {
        match self.entries.iter_mut().find(|e| e.who.same(who)) {
            Some(e) => {
                if e.fields != fields || e.who.api_version != who.api_version {
                    e.time = Some(now.to_owned());
                }
                e.who = who.clone();
                e.fields = fields;
            }
            None => self.entries.push(Entry { who: who.clone(), time: Some(now.to_owned()), fields }),
        }
        self.entries.retain(|e| !e.fields.is_empty());
    }

    /// Takes `changed` from everyone but `who`, and `removed` from everyone.
    fn take_from_others(&mut self, who: &Manager, changed: &FieldSet, removed: &FieldSet) {
        for e in self.entries.iter_mut().filter(|e| !e.who.same(who)) {
            e.fields = e.fields.difference(changed).difference(removed);
        }
    }
}

/// Which part of the object a write may change: the fields outside it are
/// not tracked (upstream's reset fields), nor is server-owned metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The main resource; `status` is ignored when it has its own subresource.
    Main { status_subresource: bool },
    /// The status subresource: only `status`.
    Status,
}

/// Metadata fields the server owns, never tracked (upstream's StripMeta).
const SERVER_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// The part of `obj` whose fields have owners.
pub fn tracked(obj: &Value, part: Part) -> Value {
    let Some(m) = obj.as_object() else { return Value::Object(Map::new()) };
    let mut out = Map::new();
    for (k, v) in m {
        match (k.as_str(), part) {
            ("status", Part::Status) => {
                out.insert(k.clone(), v.clone());
            }
            (_, Part::Status) | ("apiVersion" | "kind", _) => {}
            ("status", Part::Main { status_subresource: true }) => {}
            ("metadata", _) => {
                let mut meta = v.as_object().cloned().unwrap_or_default();
                meta.retain(|k, _| !SERVER_META.contains(&k.as_str()));
                if !meta.is_empty() {
                    out.insert(k.clone(), Value::Object(meta));
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Records an update by `who` from `old` to `new`: `who` owns what it added
/// or changed, which every other manager loses; removed fields leave every set.
pub fn update(managed: &mut ManagedFields, who: &Manager, old: &Value, new: &Value, part: Part, now: &str) {
    let c = compare(&tracked(old, part), &tracked(new, part));
    let changed = c.added.union(&c.modified);
    managed.take_from_others(who, &changed, &c.removed);
    let mine = managed.fields_of(who).cloned().unwrap_or_default().difference(&c.removed).union(&changed);
    managed.set(who, mine, now);
}

/// Applies `config` for `who` to `live` (`{}` when the object is new) and
/// returns the merged object. Changing a field another manager owns is a
/// 409 conflict unless `force`, which takes the field over.
pub fn apply(
    managed: &mut ManagedFields,
    who: &Manager,
    live: &Value,
    config: &Value,
    part: Part,
    force: bool,
    now: &str,
) -> Result<Value, StatusError> {
    let config = tracked(config, part);
    let applied = fields_of(&config);
    let mut merged = merge(live, &config, Ctx::Root);
    // Fields applied last time and not now go, unless someone still owns them.
    if let Some(last) = managed.fields_of(who) {
        let mut owned = applied.clone();
        for e in managed.entries.iter().filter(|e| !e.who.same(who)) {
            owned = owned.union(&e.fields);
        }
        prune(&mut merged, Ctx::Root, &last.difference(&applied), Some(&owned));
    }
    let c = compare(&tracked(live, part), &tracked(&merged, part));
    let changed = c.added.union(&c.modified);
    let mut conflicts = Vec::new();
    for e in managed.entries.iter().filter(|e| !e.who.same(who)) {
        for path in e.fields.intersection(&changed).paths() {
            conflicts.push((e.who.printed(), path_string(&path)));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    managed.take_from_others(who, &changed, &c.removed);
    managed.set(who, applied, now);
    Ok(merged)
}

/// Upstream's apply conflict: 409, one `FieldManagerConflict` cause per field.
fn conflict_error(conflicts: &[(String, String)]) -> StatusError {
    let message = if let [(manager, path)] = conflicts {
        format!("Apply failed with 1 conflict: conflict with {manager}: {path}")
    } else {
        let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for m in managers {
            lines.push(format!("conflicts with {m}:"));
            lines.extend(conflicts.iter().filter(|(cm, _)| cm == m).map(|(_, p)| format!("- {p}")));
        }
        format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
    };
    let mut err = StatusError::new(Reason::Conflict, message);
    err.details.causes = conflicts
        .iter()
        .map(|(manager, path)| Cause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with {manager}"),
            field: path.clone(),
        })
        .collect();
    err
}

/// Where a value sits: what decides how its fields are owned.
#[derive(Clone, Copy, Debug)]
enum Ctx<'a> {
    Root,
    Field(&'a str),
    /// An element of a keyed or set list.
    Element,
}

impl<'a> Ctx<'a> {
    fn field(self) -> Option<&'a str> {
        match self {
            Ctx::Field(f) => Some(f),
            _ => None,
        }
    }
}

/// Structs upstream marks atomic: owned and replaced whole.
fn is_atomic_object(ctx: Ctx, v: &Value) -> bool {
    match ctx.field() {
        Some("selector") => v.get("matchLabels").is_some() || v.get("matchExpressions").is_some(),
        Some(
            "namespaceSelector" | "podSelector" | "labelSelector" | "configMapKeyRef" | "secretKeyRef" | "fieldRef"
            | "resourceFieldRef",
        ) => true,
        _ => false,
    }
}

/// Object fields that are maps (names to values) rather than structs: an
/// update that makes one owns the map itself too (`"."`), as upstream.
fn is_map_field(ctx: Ctx) -> bool {
    matches!(
        ctx.field(),
        Some(
            "labels"
                | "annotations"
                | "nodeSelector"
                | "data"
                | "binaryData"
                | "stringData"
                | "limits"
                | "requests"
                | "capacity"
                | "allocatable"
                | "selector"
        )
    )
}

/// The list type, falling back to atomic when an element lacks its keys.
fn list_kind<'v>(ctx: Ctx, lists: impl IntoIterator<Item = &'v Vec<Value>> + Clone) -> ListType {
    let Some(field) = ctx.field() else { return ListType::Atomic };
    let sample = lists.clone().into_iter().find_map(|l| l.first());
    match list_type(field, sample) {
        ListType::Map(keys) => {
            if lists.into_iter().flatten().all(|e| element_key(keys, e).is_some()) {
                ListType::Map(keys)
            } else {
                ListType::Atomic
            }
        }
        other => other,
    }
}

/// `k:{"name":"nginx"}` for an element of a keyed list.
fn element_key(keys: &[&str], e: &Value) -> Option<String> {
    let obj = e.as_object()?;
    let mut key = Map::new();
    for k in keys {
        let v = obj.get(*k).filter(|v| !v.is_null()).cloned().or_else(|| list_key_default(k))?;
        key.insert((*k).to_owned(), v);
    }
    Some(format!("k:{}", serde_json::to_string(&key).ok()?))
}

/// `v:"x"` for an element of a set list.
fn value_element(v: &Value) -> String {
    format!("v:{}", serde_json::to_string(v).unwrap_or_default())
}

/// The fields an applied configuration names (upstream's ToFieldSet).
pub fn fields_of(config: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    walk(config, Ctx::Root, &mut Vec::new(), &mut set, false);
    set
}

/// Adds the fields of `v` at `path` to `set`. `own_maps`: maps that appear
/// are members themselves (an update making them), not only their entries.
fn walk(v: &Value, ctx: Ctx, path: &mut Vec<String>, set: &mut FieldSet, own_maps: bool) {
    if matches!(ctx, Ctx::Element) {
        set.insert(path);
    }
    match v {
        Value::Object(m) if m.is_empty() || is_atomic_object(ctx, v) => set.insert(path),
        Value::Object(m) => {
            if own_maps && is_map_field(ctx) {
                set.insert(path);
            }
            for (k, child) in m {
                path.push(format!("f:{k}"));
                walk(child, Ctx::Field(k), path, set, own_maps);
                path.pop();
            }
        }
        Value::Array(a) => match list_kind(ctx, [a]) {
            ListType::Atomic => set.insert(path),
            ListType::Set => {
                for e in a {
                    path.push(value_element(e));
                    set.insert(path);
                    path.pop();
                }
            }
            ListType::Map(keys) => {
                for e in a {
                    if let Some(k) = element_key(keys, e) {
                        path.push(k);
                        walk(e, Ctx::Element, path, set, own_maps);
                        path.pop();
                    }
                }
            }
        },
        _ => set.insert(path),
    }
}

/// What changed between two objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

/// Compares two objects field by field (upstream's TypedValue.Compare).
pub fn compare(old: &Value, new: &Value) -> Comparison {
    let mut c = Comparison::default();
    cmp(Some(old), Some(new), Ctx::Root, &mut Vec::new(), &mut c);
    c
}

fn cmp(old: Option<&Value>, new: Option<&Value>, ctx: Ctx, path: &mut Vec<String>, c: &mut Comparison) {
    let (o, n) = match (old, new) {
        (None, None) => return,
        (None, Some(n)) => return walk(n, ctx, path, &mut c.added, true),
        (Some(o), None) => return walk(o, ctx, path, &mut c.removed, true),
        (Some(o), Some(n)) => (o, n),
    };
    match (o, n) {
        (Value::Object(om), Value::Object(nm))
            if !(is_atomic_object(ctx, o) || is_atomic_object(ctx, n) || (om.is_empty() && nm.is_empty())) =>
        {
            for k in om.keys().chain(nm.keys().filter(|k| !om.contains_key(*k))) {
                path.push(format!("f:{k}"));
                cmp(om.get(k), nm.get(k), Ctx::Field(k), path, c);
                path.pop();
            }
        }
        (Value::Array(oa), Value::Array(na)) => match list_kind(ctx, [oa, na]) {
            ListType::Atomic => {
                if oa != na {
                    c.modified.insert(path);
                }
            }
            ListType::Set => {
                for (from, to, out) in [(na, oa, &mut c.added), (oa, na, &mut c.removed)] {
                    for e in from.iter().filter(|e| !to.contains(e)) {
                        path.push(value_element(e));
                        out.insert(path);
                        path.pop();
                    }
                }
            }
            ListType::Map(keys) => {
                let keyed = |l: &'_ Vec<Value>| -> Vec<(String, usize)> {
                    l.iter().enumerate().filter_map(|(i, e)| element_key(keys, e).map(|k| (k, i))).collect()
                };
                let (ok, nk) = (keyed(oa), keyed(na));
                let find = |ks: &[(String, usize)], k: &str| ks.iter().find(|(kk, _)| kk == k).map(|(_, i)| *i);
                let mut seen: Vec<&String> = Vec::new();
                for (k, _) in ok.iter().chain(nk.iter()) {
                    if seen.contains(&k) {
                        continue;
                    }
                    seen.push(k);
                    path.push(k.clone());
                    let (oe, ne) = (find(&ok, k).map(|i| &oa[i]), find(&nk, k).map(|i| &na[i]));
                    cmp(oe, ne, Ctx::Element, path, c);
                    path.pop();
                }
            }
        },
        _ => {
            if o != n {
                c.modified.insert(path);
            }
        }
    }
}

/// Merges an applied configuration into the live object: objects field by
/// field, keyed lists by key, set lists as a union, the rest replaced.
fn merge(live: &Value, config: &Value, ctx: Ctx) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) if !is_atomic_object(ctx, config) => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, cv, Ctx::Field(k)),
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => match list_kind(ctx, [l, c]) {
            ListType::Map(keys) => {
                let mut out = l.clone();
                for ce in c {
                    let key = element_key(keys, ce);
                    match out.iter().position(|le| element_key(keys, le) == key) {
                        Some(i) => out[i] = merge(&out[i], ce, Ctx::Element),
                        None => out.push(ce.clone()),
                    }
                }
                Value::Array(out)
            }
            ListType::Set => {
                let mut out = l.clone();
                out.extend(c.iter().filter(|e| !l.contains(e)).cloned());
                Value::Array(out)
            }
            ListType::Atomic => config.clone(),
        },
        _ => config.clone(),
    }
}

/// Removes from `v` the members of `remove` that nobody in `owned` still
/// owns (in whole or in part).
fn prune(v: &mut Value, ctx: Ctx, remove: &FieldSet, owned: Option<&FieldSet>) {
    for (element, sub) in remove.children() {
        let still = owned.and_then(|o| o.child(element));
        if sub.is_member() && still.is_none_or(FieldSet::is_empty) {
            remove_child(v, ctx, element);
            continue;
        }
        if let Some((child, child_ctx)) = child_mut(v, ctx, element) {
            prune(child, child_ctx, sub, still);
        }
    }
}

/// Where a path element leads inside `v`.
fn locate(v: &Value, ctx: Ctx, element: &str) -> Option<usize> {
    let list = v.as_array()?;
    if let Some(value) = element.strip_prefix("v:") {
        let value: Value = serde_json::from_str(value).ok()?;
        return list.iter().position(|e| *e == value);
    }
    if let Some(index) = element.strip_prefix("i:") {
        return index.parse().ok().filter(|i| *i < list.len());
    }
    match list_kind(ctx, [list]) {
        ListType::Map(keys) => list.iter().position(|e| element_key(keys, e).as_deref() == Some(element)),
        _ => None,
    }
}

fn child_mut<'v>(v: &'v mut Value, ctx: Ctx, element: &'v str) -> Option<(&'v mut Value, Ctx<'v>)> {
    if let Some(field) = element.strip_prefix("f:") {
        return v.as_object_mut()?.get_mut(field).map(|c| (c, Ctx::Field(field)));
    }
    let i = locate(v, ctx, element)?;
    v.as_array_mut()?.get_mut(i).map(|c| (c, Ctx::Element))
}

fn remove_child(v: &mut Value, ctx: Ctx, element: &str) {
    if let Some(field) = element.strip_prefix("f:") {
        if let Some(m) = v.as_object_mut() {
            m.remove(field);
        }
        return;
    }
    if let Some(i) = locate(v, ctx, element)
        && let Some(list) = v.as_array_mut()
    {
        list.remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00Z";
    const MAIN: Part = Part::Main { status_subresource: true };

    fn who(manager: &str, operation: Operation) -> Manager {
        Manager { manager: manager.into(), operation, api_version: "apps/v1".into(), subresource: None }
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": image, "ports": [{"containerPort": 80}]}]}}}})
    }

    #[test]
    fn applied_fields_are_in_upstreams_fields_v1_shape() {
        let set = fields_of(&tracked(&deployment(2, "nginx:1"), MAIN));
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                    }}}
                }}
            })
        );
    }

    #[test]
    fn an_update_owns_what_it_creates_with_maps_marked() {
        let mut m = ManagedFields::default();
        update(
            &mut m,
            &who("kubectl-client-side-apply", Operation::Update),
            &json!({}),
            &deployment(1, "a"),
            MAIN,
            NOW,
        );
        let set = m.fields_of(&who("kubectl-client-side-apply", Operation::Update)).expect("recorded");
        let v1 = set.to_fields_v1();
        assert_eq!(v1["f:metadata"]["f:labels"], json!({".": {}, "f:app": {}}));
        assert_eq!(v1["f:spec"]["f:replicas"], json!({}));
        assert!(v1["f:spec"].get(".").is_none(), "structs are not members: {v1}");
    }

    #[test]
    fn applying_a_field_another_manager_set_differently_conflicts() {
        let csa = who("kubectl-client-side-apply", Operation::Update);
        let ssa = who("kubectl", Operation::Apply);
        let mut m = ManagedFields::default();
        let live = deployment(1, "a");
        update(&mut m, &csa, &json!({}), &live, MAIN, NOW);
        let err = apply(&mut m.clone(), &ssa, &live, &deployment(3, "a"), MAIN, false, NOW).expect_err("conflicts");
        assert_eq!(err.code(), 409);
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        assert_eq!(err.details.causes[0].field, ".spec.replicas");
        assert_eq!(err.details.causes[0].reason, "FieldManagerConflict");

        let merged = apply(&mut m, &ssa, &live, &deployment(3, "a"), MAIN, true, NOW).expect("forced");
        assert_eq!(merged["spec"]["replicas"], 3);
        let path: Vec<String> = vec!["f:spec".into(), "f:replicas".into()];
        assert!(m.fields_of(&ssa).expect("applier").contains(&path));
        assert!(!m.fields_of(&csa).expect("still owns the rest").contains(&path));
    }

    #[test]
    fn the_same_value_is_shared_and_survives_the_appliers_removal() {
        let csa = who("kubectl-client-side-apply", Operation::Update);
        let ssa = who("kubectl", Operation::Apply);
        let mut m = ManagedFields::default();
        let live = deployment(1, "a");
        update(&mut m, &csa, &json!({}), &live, MAIN, NOW);
        let merged = apply(&mut m, &ssa, &live, &deployment(1, "a"), MAIN, false, NOW).expect("no conflict");
        let path: Vec<String> = vec!["f:spec".into(), "f:replicas".into()];
        assert!(m.fields_of(&ssa).expect("applier").contains(&path));
        assert!(m.fields_of(&csa).expect("updater").contains(&path));
        let mut without = deployment(1, "a");
        without["spec"].as_object_mut().expect("spec").remove("replicas");
        let merged = apply(&mut m, &ssa, &merged, &without, MAIN, false, NOW).expect("no conflict");
        assert_eq!(merged["spec"]["replicas"], 1, "still owned by the updater");
    }

    #[test]
    fn fields_the_applier_stops_naming_are_removed() {
        let ssa = who("kubectl", Operation::Apply);
        let mut m = ManagedFields::default();
        let mut first = deployment(2, "a");
        first["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("list")
            .push(json!({"name": "side", "image": "busybox"}));
        first["metadata"]["labels"]["tier"] = json!("front");
        let live = apply(&mut m, &ssa, &json!({}), &first, MAIN, false, NOW).expect("created");
        let live = apply(&mut m, &ssa, &live, &deployment(2, "a"), MAIN, false, NOW).expect("re-applied");
        let containers = live["spec"]["template"]["spec"]["containers"].as_array().expect("list");
        assert_eq!(containers.len(), 1, "{containers:?}");
        assert_eq!(live["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(live["spec"]["replicas"], 2);
    }

    #[test]
    fn an_update_takes_fields_from_the_applier() {
        let ssa = who("kubectl", Operation::Apply);
        let scale = Manager { subresource: Some("scale".into()), ..who("kubectl", Operation::Update) };
        let mut m = ManagedFields::default();
        let live = apply(&mut m, &ssa, &json!({}), &deployment(2, "a"), MAIN, false, NOW).expect("created");
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        update(&mut m, &scale, &live, &scaled, MAIN, NOW);
        let err = apply(&mut m, &ssa, &scaled, &deployment(2, "a"), MAIN, false, NOW).expect_err("conflict");
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas"
        );
    }

    #[test]
    fn managed_fields_round_trip_through_metadata() {
        let mut m = ManagedFields::default();
        let mut obj = deployment(1, "a");
        update(&mut m, &who("b", Operation::Update), &json!({}), &obj, MAIN, NOW);
        apply(&mut m, &who("a", Operation::Apply), &obj.clone(), &deployment(1, "a"), MAIN, false, NOW).expect("ok");
        m.write_to(&mut obj);
        let entries = obj["metadata"]["managedFields"].as_array().expect("written");
        assert_eq!(entries[0]["operation"], "Apply");
        assert_eq!(entries[0]["fieldsType"], "FieldsV1");
        assert_eq!(entries[1]["manager"], "b");
        assert_eq!(ManagedFields::of(&obj).expect("reads back"), {
            let mut sorted = m.clone();
            sorted.entries.sort_by(|a, b| a.who.operation.as_str().cmp(b.who.operation.as_str()));
            sorted
        });
    }

    #[test]
    fn set_lists_own_values() {
        let set = fields_of(&json!({"metadata": {"finalizers": ["a/b"]}}));
        assert_eq!(set.to_fields_v1(), json!({"f:metadata": {"f:finalizers": {"v:\"a/b\"": {}}}}));
    }
}
