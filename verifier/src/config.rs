//! The `[verifier]` section of the configuration file.

use kaudit_schema::ConfigIssue;
use serde::{Deserialize, Serialize};

use crate::coordination::CoordinationConfig;
use crate::cusum::CusumParams;
use crate::evaluate::Thresholds;
use crate::pipeline::PipelineConfig;

/// Verifier settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifierConfig {
    /// Topic patterns mapped to tiers (`[[verifier.pipelines]]`).
    pub pipelines: Vec<PipelineConfig>,
    /// A bucket is evaluated once `now > bucket_end + grace_ms`. Default: 2 × the agents'
    /// flush interval + 30 s (40000 with 5 s flushes), so every agent has flushed it.
    pub grace_ms: Option<u64>,
    /// How long after its end a bucket is re-evaluated when late tallies change it, ms.
    /// Default 3600000 (1 h).
    pub lateness_ms: u64,
    /// An agent instance silent for longer than this without a clean stop has crashed, ms: the
    /// buckets it held open are `indeterminate`, and a tier with no live instance is `tier_down`.
    /// Default: 3 × the agents' flush interval + 5 s (20000 with 5 s flushes): an agent that
    /// missed three flushes in a row is gone.
    pub agent_timeout_ms: Option<u64>,
    /// How often the verifier evaluates, ms. Default 5000.
    pub evaluate_interval_ms: u64,
    /// An alert resolves once this many newer buckets of its edge are clean. Default 3.
    pub resolve_after_buckets: u32,
    /// Absolute alert thresholds.
    pub thresholds: Thresholds,
    /// CUSUM allowance `k` and decision interval `h`, in sigmas (defaults 0.5 and 5).
    pub cusum: CusumParams,
    /// In-control buckets the CUSUM baseline (median, MAD) is estimated from. Default 256.
    pub baseline_window: usize,
    /// Buckets to learn before the CUSUM may alarm. Default 64.
    pub baseline_min_samples: usize,
    /// Smallest sigma for loss and duplicate ratios. Default 0.0001.
    pub sigma_floor_ratio: f64,
    /// Smallest sigma for p99 delay, ms. Default 10.
    pub sigma_floor_delay_ms: f64,
    /// Address of the HTTP API and `/metrics`. Default `127.0.0.1:9464`.
    pub listen: String,
    /// New topics taken under watch per evaluation pass; the rest wait for later passes (the
    /// `kaudit_verifier_topics_waiting` gauge). Bounds the work a burst of new topic names can
    /// add to one pass. Default 100.
    pub max_new_topics_per_pass: usize,
    /// Topics watched at all; past it new topics are ignored (`kaudit_verifier_topics_ignored`,
    /// and a WARN at most every 10 s) until a restart. Default 10000.
    pub max_topics: usize,
    /// `[verifier.coordination]`: share the topics with other instances through a Kafka consumer
    /// group (needs `[kafka]` and a shared store). Absent: this instance evaluates every topic.
    pub coordination: Option<CoordinationConfig>,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            pipelines: Vec::new(),
            grace_ms: None,
            lateness_ms: 3_600_000,
            agent_timeout_ms: None,
            evaluate_interval_ms: 5_000,
            resolve_after_buckets: 3,
            thresholds: Thresholds::default(),
            cusum: CusumParams::default(),
            baseline_window: 256,
            baseline_min_samples: 64,
            sigma_floor_ratio: 0.0001,
            sigma_floor_delay_ms: 10.0,
            listen: "127.0.0.1:9464".into(),
            max_new_topics_per_pass: 100,
            max_topics: 10_000,
            coordination: None,
        }
    }
}

impl VerifierConfig {
    /// The grace period given the agents' flush interval.
    pub fn grace_ms(&self, flush_interval_ms: u64) -> u64 {
        self.grace_ms.unwrap_or(2 * flush_interval_ms + 30_000)
    }

    /// How long an agent may be silent before it counts as crashed, given the agents' flush
    /// interval.
    pub fn agent_timeout_ms(&self, flush_interval_ms: u64) -> u64 {
        self.agent_timeout_ms.unwrap_or(3 * flush_interval_ms + 5_000)
    }

    /// Problems that depend on the agents' flush interval, each at its key under `prefix`: an
    /// agent timeout no longer than one flush interval would take every agent for crashed between
    /// two of its flushes.
    pub fn validate_with_flush_interval(&self, prefix: &str, flush_interval_ms: u64) -> Vec<ConfigIssue> {
        match self.agent_timeout_ms {
            Some(t) if t > 0 && t <= flush_interval_ms => vec![ConfigIssue::at(
                prefix,
                "agent_timeout_ms",
                format!(
                    "{t} ms is not longer than agent.flush_interval_ms ({flush_interval_ms} ms); use at least three intervals"
                ),
            )],
            _ => Vec::new(),
        }
    }

    /// Every problem, each at its key under `prefix` (e.g. `verifier`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = Vec::new();
        for (i, p) in self.pipelines.iter().enumerate() {
            issues.extend(p.validate(&format!("{prefix}.pipelines[{i}]")));
        }
        let mut bad = |k: &str, m: &str| issues.push(ConfigIssue::at(prefix, k, m));
        if self.evaluate_interval_ms == 0 {
            bad("evaluate_interval_ms", "must be positive");
        }
        if !(self.cusum.k >= 0.0 && self.cusum.h > 0.0) {
            bad("cusum", "need k >= 0 and h > 0");
        }
        if self.baseline_window < 8 || self.baseline_min_samples > self.baseline_window {
            bad("baseline_window", "need at least 8, and at least baseline_min_samples");
        }
        if !(self.thresholds.loss_ratio >= 0.0 && self.thresholds.duplicate_ratio >= 0.0) {
            bad("thresholds", "ratios must be non-negative");
        }
        if self.thresholds.max_lag_ms == 0 {
            bad("thresholds.max_lag_ms", "must be positive (ms; default 300000)");
        }
        if self.agent_timeout_ms == Some(0) {
            bad("agent_timeout_ms", "must be positive (ms; default 3 × agent.flush_interval_ms + 5000)");
        }
        if self.max_new_topics_per_pass == 0 {
            bad("max_new_topics_per_pass", "must be positive (topics; default 100)");
        }
        if self.max_topics == 0 {
            bad("max_topics", "must be positive (topics; default 10000)");
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            bad("listen", "must be an address such as 127.0.0.1:9464");
        }
        if let Some(c) = &self.coordination {
            issues.extend(c.validate(&format!("{prefix}.coordination")));
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_and_liveness_settings_default_from_the_flush_interval_and_are_checked() {
        let c = VerifierConfig::default();
        assert_eq!((c.thresholds.max_lag_ms, c.agent_timeout_ms(5_000), c.grace_ms(5_000)), (300_000, 20_000, 40_000));
        assert!(c.validate("verifier").is_empty());
        let mut bad = VerifierConfig { agent_timeout_ms: Some(0), ..c.clone() };
        bad.thresholds.max_lag_ms = 0;
        let keys: Vec<String> = bad.validate("verifier").into_iter().map(|i| i.path).collect();
        assert_eq!(keys, ["verifier.thresholds.max_lag_ms", "verifier.agent_timeout_ms"]);
        let short = VerifierConfig { agent_timeout_ms: Some(5_000), ..c };
        assert_eq!(short.agent_timeout_ms(5_000), 5_000);
        let issues = short.validate_with_flush_interval("verifier", 5_000);
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].path, "verifier.agent_timeout_ms");
        assert!(short.validate_with_flush_interval("verifier", 1_000).is_empty());
    }
}
