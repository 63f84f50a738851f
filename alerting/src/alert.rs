//! The alert model.

use serde::{Deserialize, Serialize};

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Loss,
    Duplicates,
    ContentMismatch,
    Delay,
    MissingTier,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::Duplicates => "duplicates",
            Self::ContentMismatch => "content_mismatch",
            Self::Delay => "delay",
            Self::MissingTier => "missing_tier",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

/// The numbers behind an alert, over its bucket range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertNumbers {
    pub upstream_count: u64,
    pub count: u64,
    pub missing: u64,
    pub extra: u64,
    pub loss_ratio: f64,
    pub duplicate_ratio: f64,
    /// Worst downstream p99 latency over the range, ms.
    pub p99_ms: Option<u64>,
    /// Fingerprints (hex) of single lost messages, per bucket where exactly one was lost.
    pub lost_fingerprints: Vec<String>,
    /// The CUSUM statistic when the CUSUM detector raised it.
    pub cusum_statistic: Option<f64>,
}

/// One alert: a kind of fault on one edge (upstream → tier) of one topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `kind/topic/tier`: one alert per fault kind per edge, however many buckets it spans.
    pub dedup_key: String,
    pub kind: AlertKind,
    pub state: AlertState,
    pub severity: Severity,
    pub topic: String,
    pub upstream_tier: String,
    pub tier: String,
    /// First and last bucket (start, ms) that showed the fault.
    pub first_bucket_ms: i64,
    pub last_bucket_ms: i64,
    pub numbers: AlertNumbers,
    /// `threshold`, `cusum`, or both.
    pub detected_by: Vec<String>,
    pub starts_at_ms: i64,
    /// When it resolved.
    pub ends_at_ms: Option<i64>,
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 { word.to_string() } else { format!("{word}s") }
}

impl Alert {
    pub fn dedup_key(kind: AlertKind, topic: &str, tier: &str) -> String {
        format!("{}/{topic}/{tier}", kind.as_str())
    }

    /// One line for humans.
    pub fn summary(&self) -> String {
        let n = &self.numbers;
        let what = match self.kind {
            AlertKind::Loss => {
                format!("{} {} lost ({:.4} %)", n.missing, plural(n.missing, "message"), n.loss_ratio * 100.0)
            }
            AlertKind::Duplicates => {
                format!("{} duplicate {} ({:.4} %)", n.extra, plural(n.extra, "message"), n.duplicate_ratio * 100.0)
            }
            AlertKind::ContentMismatch => {
                "message content differs from upstream (same count, different fingerprints)".into()
            }
            AlertKind::Delay => format!("p99 delay {} ms", n.p99_ms.unwrap_or(0)),
            AlertKind::MissingTier => "a tier reported no tallies".into(),
        };
        format!(
            "[{}] kaudit {} on {} {} → {}: {what}",
            self.state.as_str().to_uppercase(),
            self.kind.as_str(),
            self.topic,
            self.upstream_tier,
            self.tier
        )
    }
}
