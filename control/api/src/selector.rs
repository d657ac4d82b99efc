//! Label and field selectors, parsed as upstream parses them.

use std::collections::BTreeMap;

use serde_json::Value;

/// A selector that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct ParseError(pub String);

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Gt(String, i64),
    Lt(String, i64),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Exists(k) => labels.contains_key(k),
            Self::NotExists(k) => !labels.contains_key(k),
            Self::Equals(k, v) => labels.get(k) == Some(v),
            Self::NotEquals(k, v) => labels.get(k) != Some(v),
            Self::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Self::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Self::Gt(k, n) => labels.get(k).and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
            Self::Lt(k, n) => labels.get(k).and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
        }
    }
}

/// A label selector: every requirement must hold. Empty selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax: `a=b,c!=d,e in (f,g),!h,i`.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let mut requirements = Vec::new();
        for part in split_top_level(input) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self { requirements })
    }

    /// Converts a `metav1.LabelSelector` object (`matchLabels`,
    /// `matchExpressions`). `null` or `{}` selects everything.
    pub fn from_object(selector: &Value) -> Result<Self, ParseError> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                let v = v.as_str().ok_or_else(|| ParseError(format!("matchLabels[{k}] is not a string")))?;
                requirements.push(Requirement::Equals(k.clone(), v.to_owned()));
            }
        }
        if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key =
                    e.get("key").and_then(Value::as_str).ok_or_else(|| ParseError("expression without key".into()))?;
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| vs.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default();
                let op = e.get("operator").and_then(Value::as_str).unwrap_or_default();
                requirements.push(match op {
                    "In" => Requirement::In(key.into(), values),
                    "NotIn" => Requirement::NotIn(key.into(), values),
                    "Exists" => Requirement::Exists(key.into()),
                    "DoesNotExist" => Requirement::NotExists(key.into()),
                    other => return Err(ParseError(format!("{other:?} is not a valid label selector operator"))),
                });
            }
        }
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches the labels of a JSON object (`metadata.labels`).
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.is_empty() {
            return true;
        }
        self.matches(&labels_of(obj))
    }
}

/// `metadata.labels` of an object as a map.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
        .unwrap_or_default()
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(input: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&input[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<Requirement, ParseError> {
    let bad = || ParseError(part.to_owned());
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        validate_key(key).map_err(|_| bad())?;
        return Ok(Requirement::NotExists(key.into()));
    }
    for (op, make) in [
        ("!=", Requirement::NotEquals as fn(String, String) -> Requirement),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((k, v)) = part.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            validate_key(k).map_err(|_| bad())?;
            validate_value(v).map_err(|_| bad())?;
            return Ok(make(k.into(), v.into()));
        }
    }
    for (op, gt) in [(">", true), ("<", false)] {
        if let Some((k, v)) = part.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            validate_key(k).map_err(|_| bad())?;
            let n: i64 = v.parse().map_err(|_| bad())?;
            return Ok(if gt { Requirement::Gt(k.into(), n) } else { Requirement::Lt(k.into(), n) });
        }
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().trim();
    let rest = words.next().unwrap_or_default().trim();
    validate_key(key).map_err(|_| bad())?;
    if rest.is_empty() {
        return Ok(Requirement::Exists(key.into()));
    }
    let (set_op, set) = if let Some(s) = rest.strip_prefix("notin") {
        ("notin", s)
    } else if let Some(s) = rest.strip_prefix("in") {
        ("in", s)
    } else {
        return Err(bad());
    };
    let set = set.trim();
    let inner = set.strip_prefix('(').and_then(|s| s.strip_suffix(')')).ok_or_else(bad)?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect();
    for v in &values {
        validate_value(v).map_err(|_| bad())?;
    }
    Ok(if set_op == "in" { Requirement::In(key.into(), values) } else { Requirement::NotIn(key.into(), values) })
}

/// A label key: optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 characters of `[A-Za-z0-9._-]` starting and ending alphanumeric.
pub fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty()
            || p.len() > 253
            || !p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'))
    {
        return Err(format!("invalid label key prefix {p:?}"));
    }
    if !is_qualified_name_part(name) {
        return Err(format!("invalid label key {key:?}"));
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters like a key's name part.
pub fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_qualified_name_part(value) {
        Ok(())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

fn is_qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// One term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub value: String,
    pub negated: bool,
}

/// A field selector: `metadata.name=x,status.phase!=Running`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub terms: Vec<FieldTerm>,
}

impl FieldSelector {
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let mut terms = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, negated) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, false)
            } else {
                return Err(ParseError(format!("invalid field selector: {part}")));
            };
            terms.push(FieldTerm { field: field.trim().into(), value: value.trim().into(), negated });
        }
        Ok(Self { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value `metadata.name=` pins, if any (lets a list read one key).
    pub fn exact_name(&self) -> Option<&str> {
        self.terms.iter().find(|t| t.field == "metadata.name" && !t.negated).map(|t| t.value.as_str())
    }

    /// Checks that every field is one `supported` allows.
    pub fn check_supported(&self, supported: &[&str]) -> Result<(), String> {
        for t in &self.terms {
            if !supported.contains(&t.field.as_str()) {
                return Err(format!("field label not supported: {}", t.field));
            }
        }
        Ok(())
    }

    /// Matches an object: each field is read by its dotted path; a missing
    /// field reads as the empty string, as upstream's field sets do.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let actual = field_value(obj, &t.field);
            (actual == t.value) != t.negated
        })
    }
}

/// The string form of a dotted field of an object.
pub fn field_value(obj: &Value, field: &str) -> String {
    let mut cur = obj;
    for part in field.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn parses_every_operator_kubectl_sends() {
        let s = LabelSelector::parse("app=web,tier!=db,env in (prod, staging),release notin (canary),track,!legacy")
            .expect("parses");
        assert_eq!(s.requirements.len(), 6);
        assert!(s.matches(&labels(&[("app", "web"), ("env", "prod"), ("track", "x")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev"), ("track", "x")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod"), ("track", "x"), ("legacy", "1")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod")])));
    }

    #[test]
    fn double_equals_and_prefixed_keys_work() {
        let s = LabelSelector::parse("kubernetes.io/cluster-service==true").expect("parses");
        assert!(s.matches(&labels(&[("kubernetes.io/cluster-service", "true")])));
    }

    #[test]
    fn rejects_garbage() {
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("=x").is_err());
        assert!(LabelSelector::parse("a b c").is_err());
    }

    #[test]
    fn empty_selector_selects_everything() {
        assert!(LabelSelector::parse("").expect("parses").matches(&labels(&[])));
    }

    #[test]
    fn label_selector_objects_convert() {
        let s = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]
        }))
        .expect("converts");
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "b")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn field_selectors_match_dotted_paths() {
        let pod = json!({"metadata": {"name": "p1", "namespace": "ns"}, "spec": {"nodeName": "n1"}});
        let s = FieldSelector::parse("metadata.name=p1,spec.nodeName!=n2").expect("parses");
        assert!(s.matches_object(&pod));
        assert_eq!(s.exact_name(), Some("p1"));
        assert!(!FieldSelector::parse("spec.nodeName=n2").expect("parses").matches_object(&pod));
        assert!(FieldSelector::parse("spec.nodeName=").expect("parses").matches_object(&json!({})));
        assert!(s.check_supported(&["metadata.name"]).is_err());
    }
}
