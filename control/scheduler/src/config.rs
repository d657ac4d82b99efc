//! Reading upstream's KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1)
//! file: the parts this scheduler honours are `percentageOfNodesToScore`,
//! the first profile's `schedulerName` and NodeResourcesFit's
//! `scoringStrategy.type` (LeastAllocated or MostAllocated). Other fields
//! are accepted and ignored.

use serde::Deserialize;

use crate::plugins::node_resources_fit::ScoringStrategy;
use crate::{Error, SchedulerConfig};

pub const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KubeSchedulerConfiguration {
    api_version: Option<String>,
    kind: Option<String>,
    percentage_of_nodes_to_score: Option<i32>,
    #[serde(default)]
    profiles: Vec<ProfileConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileConfig {
    scheduler_name: Option<String>,
    #[serde(default)]
    plugin_config: Vec<PluginConfig>,
}

#[derive(Debug, Deserialize)]
struct PluginConfig {
    name: String,
    #[serde(default)]
    args: serde_json::Value,
}

impl SchedulerConfig {
    /// The settings a KubeSchedulerConfiguration file asks for, on top of the defaults.
    pub fn from_kube_scheduler_configuration(text: &str) -> Result<Self, Error> {
        let file: KubeSchedulerConfiguration = serde_saphyr::from_str(text)
            .map_err(|e| Error::Config(format!("reading the scheduler configuration: {e}")))?;
        if file.kind.as_deref().is_some_and(|k| k != "KubeSchedulerConfiguration") {
            return Err(Error::Config(format!("kind {:?} is not KubeSchedulerConfiguration", file.kind)));
        }
        if file.api_version.as_deref().is_some_and(|v| v != API_VERSION) {
            return Err(Error::Config(format!("apiVersion {:?} is not {API_VERSION}", file.api_version)));
        }
        if file.profiles.len() > 1 {
            return Err(Error::Config("only one scheduling profile is supported".into()));
        }
        let mut config = SchedulerConfig {
            percentage_of_nodes_to_score: file.percentage_of_nodes_to_score,
            ..SchedulerConfig::default()
        };
        if let Some(p) = config.percentage_of_nodes_to_score.filter(|p| !(0..=100).contains(p)) {
            return Err(Error::Config(format!("percentageOfNodesToScore {p} is not within 0..100")));
        }
        if let Some(profile) = file.profiles.into_iter().next() {
            if let Some(name) = profile.scheduler_name {
                config.scheduler_name = name;
            }
            for plugin in profile.plugin_config.iter().filter(|p| p.name == "NodeResourcesFit") {
                if let Some(kind) = plugin.args.pointer("/scoringStrategy/type").and_then(|v| v.as_str()) {
                    config.scoring_strategy = match kind {
                        "LeastAllocated" => ScoringStrategy::LeastAllocated,
                        "MostAllocated" => ScoringStrategy::MostAllocated,
                        other => return Err(Error::Config(format!("scoring strategy {other} is not supported"))),
                    };
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bin_packing_profile_selects_most_allocated() {
        let text = "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 30
profiles:
- schedulerName: packer
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources: [{name: cpu, weight: 1}]
";
        let c = SchedulerConfig::from_kube_scheduler_configuration(text).expect("parses");
        assert_eq!(c.scheduler_name, "packer");
        assert_eq!(c.scoring_strategy, ScoringStrategy::MostAllocated);
        assert_eq!(c.percentage_of_nodes_to_score, Some(30));
    }

    #[test]
    fn an_unknown_strategy_or_kind_is_refused() {
        let bad = "kind: KubeSchedulerConfiguration
profiles: [{pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: RequestedToCapacityRatio}}}]}]
";
        assert!(SchedulerConfig::from_kube_scheduler_configuration(bad).is_err());
        assert!(SchedulerConfig::from_kube_scheduler_configuration("kind: Pod\n").is_err());
    }
}
