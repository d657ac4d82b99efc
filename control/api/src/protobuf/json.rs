//! How Go's `encoding/json` writes one struct field, by Go type and tag.
//!
//! Go's generated protobuf code writes every non-pointer field, even when it
//! is zero (`name: ""`, `replicas`-style pointers only when set), so after
//! prost decoding `Some("")` and `None` mean the same thing for a Go `string`
//! but not for a Go `*string`. Reproducing the JSON kubectl 1.31 sent therefore
//! needs, per field, the Go shape upstream declares:
//!
//! | Go field                          | method          | zero value written as |
//! |-----------------------------------|-----------------|-----------------------|
//! | `string`/`int32`/`bool` omitempty | `string`, `int`, `bool` | omitted      |
//! | the same without omitempty        | `*_always`      | `""`, `0`, `false`    |
//! | `*string`/`*int32`/`*bool`        | `*_ptr`         | omitted when nil      |
//! | slice omitempty                   | `strings`, `list` | omitted when empty  |
//! | slice without omitempty           | `*_always`      | `null` when empty     |
//! | map omitempty                     | `map`, `bytes_map` | omitted when empty |
//! | struct (omitempty never applies)  | `object`        | always written        |
//! | `*Struct`                         | `object_ptr`    | omitted when nil      |

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::ProtobufError;

pub(super) type Result<T> = std::result::Result<T, ProtobufError>;

/// A JSON object being built field by field, in upstream's field order.
#[derive(Debug, Default)]
pub(super) struct Obj(Map<String, Value>);

impl Obj {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn build(self) -> Value {
        Value::Object(self.0)
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    fn put(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.to_owned(), value);
        self
    }

    /// Go `string` with `omitempty`.
    pub fn string(self, key: &str, v: Option<String>) -> Self {
        match v.filter(|s| !s.is_empty()) {
            Some(s) => self.put(key, Value::String(s)),
            None => self,
        }
    }

    /// Go `string` without `omitempty`.
    pub fn string_always(self, key: &str, v: Option<String>) -> Self {
        self.put(key, Value::String(v.unwrap_or_default()))
    }

    /// Go `*string`.
    pub fn string_ptr(self, key: &str, v: Option<String>) -> Self {
        match v {
            Some(s) => self.put(key, Value::String(s)),
            None => self,
        }
    }

    /// Go integer with `omitempty`.
    pub fn int<T: Into<i64>>(self, key: &str, v: Option<T>) -> Self {
        match v.map(Into::into).filter(|n| *n != 0) {
            Some(n) => self.put(key, n.into()),
            None => self,
        }
    }

    /// Go integer without `omitempty`.
    pub fn int_always<T: Into<i64>>(self, key: &str, v: Option<T>) -> Self {
        self.put(key, v.map_or(0, Into::into).into())
    }

    /// Go `*int32` / `*int64`.
    pub fn int_ptr<T: Into<i64>>(self, key: &str, v: Option<T>) -> Self {
        match v {
            Some(n) => self.put(key, n.into().into()),
            None => self,
        }
    }

    /// Go `bool` with `omitempty`.
    pub fn bool(self, key: &str, v: Option<bool>) -> Self {
        if v == Some(true) { self.put(key, Value::Bool(true)) } else { self }
    }

    /// Go `*bool`.
    pub fn bool_ptr(self, key: &str, v: Option<bool>) -> Self {
        match v {
            Some(b) => self.put(key, Value::Bool(b)),
            None => self,
        }
    }

    /// Go `[]string` with `omitempty`.
    pub fn strings(self, key: &str, v: Vec<String>) -> Self {
        self.list(key, v.into_iter().map(Value::String).collect())
    }

    /// Go `[]string` without `omitempty`: protobuf cannot tell a nil slice
    /// from an empty one, and Go decodes both as nil, which JSON writes as `null`.
    pub fn strings_always(self, key: &str, v: Vec<String>) -> Self {
        self.list_always(key, v.into_iter().map(Value::String).collect())
    }

    /// Go `map[string]string` with `omitempty`.
    pub fn map(self, key: &str, v: BTreeMap<String, String>) -> Self {
        if v.is_empty() {
            return self;
        }
        self.put(key, Value::Object(v.into_iter().map(|(k, v)| (k, Value::String(v))).collect()))
    }

    /// Go `map[string][]byte` with `omitempty`: values as standard base64.
    pub fn bytes_map(self, key: &str, v: BTreeMap<String, Vec<u8>>) -> Self {
        if v.is_empty() {
            return self;
        }
        let encoded = v.into_iter().map(|(k, b)| (k, Value::String(base64_std(&b)))).collect();
        self.put(key, Value::Object(encoded))
    }

    /// A non-pointer struct field: `omitempty` never applies to structs in Go.
    pub fn object(self, key: &str, v: Value) -> Self {
        self.put(key, v)
    }

    /// Go `*Struct` (and `*Time`, `*IntOrString`, …).
    pub fn object_ptr(self, key: &str, v: Option<Value>) -> Self {
        match v {
            Some(v) => self.put(key, v),
            None => self,
        }
    }

    /// A slice of structs with `omitempty`.
    pub fn list(self, key: &str, v: Vec<Value>) -> Self {
        if v.is_empty() { self } else { self.put(key, Value::Array(v)) }
    }

    /// A slice of structs without `omitempty` (`null` when empty, see
    /// [`Obj::strings_always`]).
    pub fn list_always(self, key: &str, v: Vec<Value>) -> Self {
        if v.is_empty() { self.put(key, Value::Null) } else { self.put(key, Value::Array(v)) }
    }

    /// A map of objects with `omitempty` (`map[string]Quantity`, …).
    pub fn object_map(self, key: &str, v: BTreeMap<String, Value>) -> Self {
        if v.is_empty() {
            return self;
        }
        self.put(key, Value::Object(v.into_iter().collect()))
    }
}

pub(super) fn base64_std(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Converts every element, stopping at the first error.
pub(super) fn each<T>(items: Vec<T>, convert: impl Fn(T) -> Result<Value>) -> Result<Vec<Value>> {
    items.into_iter().map(convert).collect()
}

/// Whether a decoded field carries nothing: what Go's marshaller writes for a
/// zero value (`""`, `0`, an empty struct) or leaves out.
pub(super) trait Unset {
    fn is_unset(&self) -> bool;
}

impl<T: Default + PartialEq> Unset for Option<T> {
    fn is_unset(&self) -> bool {
        self.as_ref().is_none_or(|v| *v == T::default())
    }
}

impl<T> Unset for Vec<T> {
    fn is_unset(&self) -> bool {
        self.is_empty()
    }
}

impl<K, V> Unset for BTreeMap<K, V> {
    fn is_unset(&self) -> bool {
        self.is_empty()
    }
}

/// Fails with [`ProtobufError::UnsupportedField`] when a field this module
/// does not translate carries a value, so nothing is dropped silently.
/// `reject_set!("PodSpec", affinity => "affinity", …)`.
macro_rules! reject_set {
    ($ty:literal, $($field:ident => $json:literal),+ $(,)?) => {
        $(
            if !$crate::protobuf::json::Unset::is_unset(&$field) {
                return Err($crate::protobuf::ProtobufError::UnsupportedField(concat!($ty, ".", $json)));
            }
        )+
    };
}
pub(super) use reject_set;
