//! NodeAffinity: `nodeSelector` and required node affinity must match the
//! node (Filter; terms are ORed, expressions within a term ANDed); the
//! weights of matching preferred terms are the score.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Pod, PreferredSchedulingTerm};

use crate::framework::{
    Code, CycleState, FilterPlugin, NodeInfo, Plugin, PreFilterPlugin, PreScorePlugin, ScorePlugin, Snapshot, Status,
    default_normalize,
};

pub const NAME: &str = "NodeAffinity";
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";
const STATE: &str = "PreFilterNodeAffinity";
const SCORE_STATE: &str = "PreScoreNodeAffinity";

#[derive(Debug, Default)]
pub struct NodeAffinity;

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// What the pod requires, resolved once.
#[derive(Clone, Debug, Default)]
struct Required {
    selector: BTreeMap<String, String>,
    terms: Option<Vec<NodeSelectorTerm>>,
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) =
                (value.and_then(|v| v.parse::<i64>().ok()), values.first().and_then(|b| b.parse::<i64>().ok()))
            else {
                return false;
            };
            if r.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

/// A term with no requirements matches nothing (upstream).
pub fn term_matches(term: &NodeSelectorTerm, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, Some(node_name)))
}

impl Required {
    fn of(pod: &Pod) -> Option<Self> {
        let spec = pod.spec.as_ref();
        let selector = spec.and_then(|s| s.node_selector.clone()).unwrap_or_default();
        let terms = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
            .map(|r| r.node_selector_terms.clone());
        if selector.is_empty() && terms.is_none() {
            return None;
        }
        Some(Self { selector, terms })
    }

    fn matches(&self, node: &NodeInfo) -> bool {
        let labels = node.labels();
        self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.terms.as_ref().is_none_or(|ts| ts.iter().any(|t| term_matches(t, &node.name, labels)))
    }
}

/// Whether the node satisfies the pod's nodeSelector and required node
/// affinity (upstream's RequiredNodeAffinity.Match).
pub fn required_matches(pod: &Pod, node: &NodeInfo) -> bool {
    Required::of(pod).is_none_or(|r| r.matches(node))
}

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, _snapshot: &Snapshot<'_>) -> Status {
        match Required::of(pod) {
            None => Status::skip(),
            Some(r) => {
                state.write(STATE, r);
                Status::success()
            }
        }
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Status {
        let Some(req) = state.read::<Required>(STATE) else { return Status::success() };
        if req.matches(node) { Status::success() } else { Status::new(Code::UnschedulableAndUnresolvable, REASON) }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(&self, state: &mut CycleState, pod: &Pod, _nodes: &[&NodeInfo], _snapshot: &Snapshot<'_>) -> Status {
        let preferred: Vec<PreferredSchedulingTerm> = pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| n.preferred_during_scheduling_ignored_during_execution.clone())
            .unwrap_or_default();
        if preferred.is_empty() {
            return Status::skip();
        }
        state.write(SCORE_STATE, preferred);
        Status::success()
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let Some(preferred) = state.read::<Vec<PreferredSchedulingTerm>>(SCORE_STATE) else { return Ok(0) };
        Ok(preferred
            .iter()
            .filter(|p| term_matches(&p.preference, &node.name, node.labels()))
            .map(|p| i64::from(p.weight))
            .sum())
    }

    fn normalize(&self, _state: &CycleState, _pod: &Pod, _nodes: &[&NodeInfo], scores: &mut [i64]) -> Status {
        default_normalize(scores, false);
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn expressions_in_a_term_are_anded_and_operators_behave_as_upstream() {
        let labels = BTreeMap::from([("zone".to_owned(), "a".to_owned()), ("cores".to_owned(), "8".to_owned())]);
        let term =
            |rs: Vec<NodeSelectorRequirement>| NodeSelectorTerm { match_expressions: Some(rs), match_fields: None };
        assert!(term_matches(&term(vec![req("zone", "In", &["a", "b"]), req("cores", "Gt", &["4"])]), "n", &labels));
        assert!(!term_matches(&term(vec![req("zone", "In", &["a"]), req("cores", "Lt", &["4"])]), "n", &labels));
        assert!(term_matches(&term(vec![req("gpu", "DoesNotExist", &[])]), "n", &labels));
        assert!(term_matches(&term(vec![req("zone", "NotIn", &["b"])]), "n", &labels));
        assert!(!term_matches(&term(vec![]), "n", &labels));
    }

    #[test]
    fn match_fields_select_a_node_by_name() {
        let t =
            NodeSelectorTerm { match_expressions: None, match_fields: Some(vec![req("metadata.name", "In", &["n1"])]) };
        assert!(term_matches(&t, "n1", &BTreeMap::new()));
        assert!(!term_matches(&t, "n2", &BTreeMap::new()));
    }
}
