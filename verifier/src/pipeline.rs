//! Pipelines: which tiers a topic flows through, and so which tier is compared with which.
//!
//! A pipeline is a chain of tiers (`producer → broker → mirror`) plus consumer tiers that each
//! read from the end of the chain (`consumer/billing`, `consumer/fraud`). Every tier after the
//! first is compared with its upstream tier.

use globset::{Glob, GlobMatcher};
use kaudit_schema::ConfigIssue;
use kaudit_schema::names::check_tier;
use serde::{Deserialize, Serialize};

/// One pipeline as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Topic globs this pipeline applies to (`orders.*`); the first matching pipeline wins.
    pub topics: Vec<String>,
    /// The chain of tiers in order, e.g. `["producer", "broker"]`; at least one.
    pub tiers: Vec<String>,
    /// Consumer tiers, each compared with the last tier of the chain.
    #[serde(default)]
    pub consumers: Vec<String>,
}

/// An upstream → downstream pair of tiers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Edge {
    pub upstream: String,
    pub downstream: String,
}

/// A checked pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    matchers: Vec<GlobMatcher>,
    tiers: Vec<String>,
    edges: Vec<Edge>,
}

impl PipelineConfig {
    /// Every problem, each at its key under `prefix` (e.g. `verifier.pipelines[0]`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.topics.is_empty() {
            issues.push(ConfigIssue::at(prefix, "topics", "name at least one topic glob"));
        }
        for (i, t) in self.topics.iter().enumerate() {
            if let Err(e) = Glob::new(t) {
                issues.push(ConfigIssue::at(prefix, &format!("topics[{i}]"), format!("invalid glob: {}", e.kind())));
            }
        }
        if self.tiers.is_empty() {
            issues.push(ConfigIssue::at(prefix, "tiers", "name at least one tier, e.g. [\"producer\", \"broker\"]"));
        }
        let mut seen = std::collections::HashSet::new();
        let named = self.tiers.iter().enumerate().map(|(i, t)| (format!("tiers[{i}]"), t));
        let consumers = self.consumers.iter().enumerate().map(|(i, t)| (format!("consumers[{i}]"), t));
        for (key, t) in named.chain(consumers) {
            if t.is_empty() || !seen.insert(t) {
                issues.push(ConfigIssue::at(prefix, "tiers", format!("tier {t:?} is empty or named twice")));
            } else if let Err(reason) = check_tier(t) {
                // Agents cannot report such a tier (the ingest API and the tap refuse it).
                issues.push(ConfigIssue::at(prefix, &key, reason));
            }
        }
        issues
    }

    /// Build; call after [`PipelineConfig::validate`] found nothing.
    pub fn build(&self) -> Pipeline {
        let matchers = self.topics.iter().map(|t| Glob::new(t).expect("validated").compile_matcher()).collect();
        let mut edges: Vec<Edge> =
            self.tiers.windows(2).map(|w| Edge { upstream: w[0].clone(), downstream: w[1].clone() }).collect();
        let last = self.tiers.last().expect("validated").clone();
        edges.extend(self.consumers.iter().map(|c| Edge { upstream: last.clone(), downstream: c.clone() }));
        let tiers = self.tiers.iter().chain(&self.consumers).cloned().collect();
        Pipeline { matchers, tiers, edges }
    }
}

impl Pipeline {
    pub fn matches(&self, topic: &str) -> bool {
        self.matchers.iter().any(|m| m.is_match(topic))
    }

    /// Every tier, chain first, in display order.
    pub fn tiers(&self) -> &[String] {
        &self.tiers
    }

    /// Every comparison to make.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }
}

/// The pipeline for `topic`: the first that matches.
pub fn pipeline_for<'a>(pipelines: &'a [Pipeline], topic: &str) -> Option<&'a Pipeline> {
    pipelines.iter().find(|p| p.matches(topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(topics: &[&str], tiers: &[&str], consumers: &[&str]) -> PipelineConfig {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        PipelineConfig { topics: s(topics), tiers: s(tiers), consumers: s(consumers) }
    }

    #[test]
    fn chain_and_consumers_become_edges() {
        let p = config(&["orders.*"], &["producer", "broker"], &["consumer/billing", "consumer/fraud"]).build();
        let edges: Vec<(&str, &str)> = p.edges().iter().map(|e| (e.upstream.as_str(), e.downstream.as_str())).collect();
        assert_eq!(edges, [("producer", "broker"), ("broker", "consumer/billing"), ("broker", "consumer/fraud")]);
        assert!(p.matches("orders.eu") && !p.matches("payments"));
        assert_eq!(p.tiers().len(), 4);
    }

    #[test]
    fn first_matching_pipeline_wins() {
        let ps = [config(&["orders.eu"], &["a", "b"], &[]).build(), config(&["orders.*"], &["x", "y"], &[]).build()];
        assert_eq!(pipeline_for(&ps, "orders.eu").unwrap().tiers()[0], "a");
        assert_eq!(pipeline_for(&ps, "orders.us").unwrap().tiers()[0], "x");
        assert!(pipeline_for(&ps, "clicks").is_none());
    }

    #[test]
    fn validation_names_the_problems() {
        let keys: Vec<String> =
            config(&["["], &[], &["c", "c"]).validate("pipelines[0]").into_iter().map(|i| i.path).collect();
        assert_eq!(keys, ["pipelines[0].topics[0]", "pipelines[0].tiers", "pipelines[0].tiers"]);
    }
}
