//! The `[verifier]` section of the configuration file.

use kaudit_schema::ConfigIssue;
use serde::{Deserialize, Serialize};

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
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            pipelines: Vec::new(),
            grace_ms: None,
            lateness_ms: 3_600_000,
            evaluate_interval_ms: 5_000,
            resolve_after_buckets: 3,
            thresholds: Thresholds::default(),
            cusum: CusumParams::default(),
            baseline_window: 256,
            baseline_min_samples: 64,
            sigma_floor_ratio: 0.0001,
            sigma_floor_delay_ms: 10.0,
            listen: "127.0.0.1:9464".into(),
        }
    }
}

impl VerifierConfig {
    /// The grace period given the agents' flush interval.
    pub fn grace_ms(&self, flush_interval_ms: u64) -> u64 {
        self.grace_ms.unwrap_or(2 * flush_interval_ms + 30_000)
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
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            bad("listen", "must be an address such as 127.0.0.1:9464");
        }
        issues
    }
}
