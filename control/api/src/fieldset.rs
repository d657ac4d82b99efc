//! Sets of field paths, as upstream's structured-merge-diff `fieldpath.Set`,
//! and their `FieldsV1` encoding in `metadata.managedFields`.
//!
//! A path is a list of elements, each written as upstream writes it:
//! `f:<field>` (a field of an object), `k:{"name":"nginx"}` (an element of an
//! associative list, by its keys), `v:"x"` (an element of a set list) and
//! `i:3` (a list index). In FieldsV1 every node is an object of its children;
//! `"."` marks a node that is itself a member while it has children, and a
//! member without children is `{}`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The `"."` child: the node itself is in the set.
const SELF: &str = ".";

/// A set of paths, as a tree. The root is never a member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// True when no path is in the set.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    /// Whether the node itself is a member.
    pub fn is_member(&self) -> bool {
        self.member
    }

    /// The subtree under one path element.
    pub fn child(&self, element: &str) -> Option<&FieldSet> {
        self.children.get(element)
    }

    /// The subtrees by path element.
    pub fn children(&self) -> impl Iterator<Item = (&String, &FieldSet)> {
        self.children.iter()
    }

    /// The node at `path`, made if missing (not a member by itself).
    pub fn node_mut(&mut self, path: &[String]) -> &mut FieldSet {
        let mut node = self;
        for element in path {
            node = node.children.entry(element.clone()).or_default();
        }
        node
    }

    /// Adds `path` to the set.
    pub fn insert(&mut self, path: &[String]) {
        if !path.is_empty() {
            self.node_mut(path).member = true;
        }
    }

    /// Whether `path` is in the set.
    pub fn contains(&self, path: &[String]) -> bool {
        let mut node = self;
        for element in path {
            match node.children.get(element) {
                Some(n) => node = n,
                None => return false,
            }
        }
        !path.is_empty() && node.member
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_in(other);
        out
    }

    fn union_in(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, v) in &other.children {
            self.children.entry(k.clone()).or_default().union_in(v);
        }
    }

    /// The paths of `self` that are not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { member: self.member && !other.member, children: BTreeMap::new() };
        for (k, v) in &self.children {
            let d = match other.children.get(k) {
                Some(o) => v.difference(o),
                None => v.clone(),
            };
            if !d.is_empty() {
                out.children.insert(k.clone(), d);
            }
        }
        out
    }

    /// The paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { member: self.member && other.member, children: BTreeMap::new() };
        for (k, v) in &self.children {
            if let Some(o) = other.children.get(k) {
                let i = v.intersection(o);
                if !i.is_empty() {
                    out.children.insert(k.clone(), i);
                }
            }
        }
        out
    }

    /// Every member path, depth first in element order.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect(&mut prefix, &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (k, v) in &self.children {
            prefix.push(k.clone());
            v.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The FieldsV1 JSON of the set.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(SELF.into(), Value::Object(Map::new()));
        }
        for (k, v) in &self.children {
            if !v.is_empty() {
                m.insert(k.clone(), v.to_fields_v1());
            }
        }
        Value::Object(m)
    }

    /// Reads a FieldsV1 object.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let mut set = FieldSet::read(v)?;
        set.member = false;
        Ok(set)
    }

    fn read(v: &Value) -> Result<FieldSet, String> {
        let Some(m) = v.as_object() else { return Err(format!("expected an object in fieldsV1, got {v}")) };
        let mut set = FieldSet { member: m.is_empty(), children: BTreeMap::new() };
        for (k, child) in m {
            if k == SELF {
                set.member = true;
                continue;
            }
            if !["f:", "k:", "v:", "i:"].iter().any(|p| k.starts_with(p)) {
                return Err(format!("unknown path element {k:?} in fieldsV1"));
            }
            set.children.insert(k.clone(), FieldSet::read(child)?);
        }
        Ok(set)
    }
}

/// A path as upstream prints it in conflicts: `.spec.replicas`,
/// `.spec.containers[name="nginx"].image`, `.metadata.finalizers[="x"]`.
pub fn path_string(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(key) = element.strip_prefix("k:") {
            let fields: Vec<String> = match serde_json::from_str::<Map<String, Value>>(key) {
                Ok(m) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                Err(_) => vec![key.to_owned()],
            };
            out.push('[');
            out.push_str(&fields.join(","));
            out.push(']');
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        } else if let Some(index) = element.strip_prefix("i:") {
            out.push_str(&format!("[{index}]"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(elements: &[&str]) -> Vec<String> {
        elements.iter().map(|e| (*e).to_owned()).collect()
    }

    #[test]
    fn fields_v1_round_trips_with_self_markers() {
        let v1 = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}
            }}}}
        });
        let set = FieldSet::from_fields_v1(&v1).expect("valid");
        assert!(set.contains(&p(&["f:spec", "f:replicas"])));
        assert!(set.contains(&p(&["f:metadata", "f:labels"])));
        assert!(!set.contains(&p(&["f:spec"])));
        assert!(set.contains(&p(&["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"nginx\"}"])));
        assert_eq!(set.to_fields_v1(), v1);
    }

    #[test]
    fn difference_and_intersection_work_on_members() {
        let mut a = FieldSet::new();
        a.insert(&p(&["f:spec", "f:replicas"]));
        a.insert(&p(&["f:spec", "f:paused"]));
        let mut b = FieldSet::new();
        b.insert(&p(&["f:spec", "f:replicas"]));
        assert_eq!(a.difference(&b).paths(), vec![p(&["f:spec", "f:paused"])]);
        assert_eq!(a.intersection(&b).paths(), vec![p(&["f:spec", "f:replicas"])]);
        assert!(b.difference(&a).is_empty());
        assert_eq!(a.union(&b), a);
    }

    #[test]
    fn paths_print_as_upstream_prints_them() {
        assert_eq!(path_string(&p(&["f:spec", "f:replicas"])), ".spec.replicas");
        assert_eq!(
            path_string(&p(&["f:spec", "f:containers", "k:{\"name\":\"nginx\"}", "f:image"])),
            ".spec.containers[name=\"nginx\"].image"
        );
        assert_eq!(
            path_string(&p(&["f:ports", "k:{\"containerPort\":80,\"protocol\":\"TCP\"}"])),
            ".ports[containerPort=80,protocol=\"TCP\"]"
        );
        assert_eq!(path_string(&p(&["f:metadata", "f:finalizers", "v:\"x\""])), ".metadata.finalizers[=\"x\"]");
    }

    #[test]
    fn malformed_fields_v1_is_an_error() {
        assert!(FieldSet::from_fields_v1(&json!({"spec": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!([])).is_err());
    }
}
