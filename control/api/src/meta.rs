//! Object metadata over JSON objects (the API server's working form).

use serde_json::{Map, Value};

/// `metadata.<field>` as a string, if present.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn name(obj: &Value) -> Option<&str> {
    meta_str(obj, "name").filter(|n| !n.is_empty())
}

pub fn namespace(obj: &Value) -> Option<&str> {
    meta_str(obj, "namespace").filter(|n| !n.is_empty())
}

pub fn resource_version(obj: &Value) -> Option<&str> {
    meta_str(obj, "resourceVersion").filter(|n| !n.is_empty())
}

pub fn uid(obj: &Value) -> Option<&str> {
    meta_str(obj, "uid").filter(|n| !n.is_empty())
}

/// `metadata`, created as an empty object when missing or not an object.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("made an object above");
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("made an object above")
}

/// Sets `metadata.<field>`; `None` removes it.
pub fn set_meta(obj: &mut Value, field: &str, value: Option<Value>) {
    let meta = metadata_mut(obj);
    match value {
        Some(v) => {
            meta.insert(field.to_owned(), v);
        }
        None => {
            meta.remove(field);
        }
    }
}

/// `metadata.finalizers` as strings.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// `metadata.ownerReferences[].uid`.
pub fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|o| o.get("uid")?.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The DNS-1123 subdomain rule upstream applies to most object names.
pub fn validate_dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Required value: name or generateName is required".into());
    }
    if name.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    let ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    if !ok {
        return Err(format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ));
    }
    Ok(())
}

/// The DNS-1123 label rule (namespaces, services).
pub fn validate_dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Required value: name or generateName is required".into());
    }
    let ok = name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_writes_metadata() {
        let mut obj = json!({"metadata": {"name": "a", "finalizers": ["x"]}});
        assert_eq!(name(&obj), Some("a"));
        set_meta(&mut obj, "resourceVersion", Some(json!("5")));
        assert_eq!(resource_version(&obj), Some("5"));
        assert_eq!(finalizers(&obj), vec!["x".to_owned()]);
        assert!(!is_deleting(&obj));
    }

    #[test]
    fn validates_names_like_upstream() {
        assert!(validate_dns_subdomain("web-1.example").is_ok());
        assert!(validate_dns_subdomain("Web").is_err());
        assert!(validate_dns_subdomain("-a").is_err());
        assert!(validate_dns_label("a.b").is_err());
        assert!(validate_dns_label("kube-system").is_ok());
    }
}
