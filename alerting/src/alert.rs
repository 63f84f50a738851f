//! The alert model.
//!
//! Most kinds are about the verdicts of one edge (upstream → tier) over a range of buckets. Two
//! are about a tier's progress and liveness instead: `lag` (its watermark is too far behind its
//! upstream's: behind, not losing) and `tier_down` (no instance of it is alive, the last one
//! vanished without a clean stop). A resolved alert says what resolved it (`resolution`) and
//! carries the numbers as they stand at resolution, not those of the last faulty pass.

use std::collections::BTreeMap;

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
    /// A tier's watermark is further behind its upstream's than `max_lag_ms` (warning).
    Lag,
    /// No instance of a tier is alive and the last one vanished without a clean stop (critical).
    TierDown,
    /// More alert transitions in one pass than `alerting.max_notifications_per_pass`: the rest
    /// were stored without a notification each, and this one alert names them.
    Flood,
}

impl AlertKind {
    /// Every kind, in declaration order.
    pub const ALL: [AlertKind; 8] = [
        Self::Loss,
        Self::Duplicates,
        Self::ContentMismatch,
        Self::Delay,
        Self::MissingTier,
        Self::Lag,
        Self::TierDown,
        Self::Flood,
    ];

    /// The kind named `name` (as [`AlertKind::as_str`] writes it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::Duplicates => "duplicates",
            Self::ContentMismatch => "content_mismatch",
            Self::Delay => "delay",
            Self::MissingTier => "missing_tier",
            Self::Lag => "lag",
            Self::TierDown => "tier_down",
            Self::Flood => "flood",
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
    /// The first [`NAMED_IN_ALERT`] messages the tiers' sketches named over the range (lost,
    /// extra, altered), each with its partition and offset where known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named: Vec<kaudit_schema::NamedMessage>,
    /// Messages named in all over the range (`named` lists the first few).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub named_total: u64,
    /// `lag`: how far the tier's watermark is behind its upstream's (or the clock's), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<i64>,
    /// `lag`: the tier's watermark, ms since the epoch: it has counted nothing of what came after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind_since_ms: Option<i64>,
    /// `tier_down`: the last heartbeat of the tier's most recent instance, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_ms: Option<i64>,
    /// `flood`: transitions stored without their own notification since the flood began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
    /// `flood`: those transitions by alert kind (`loss`, `missing_tier`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub suppressed_kinds: BTreeMap<String, u64>,
    /// `flood`: the first few topics they concern.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressed_topics: Vec<String>,
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
    /// First and last bucket (start, ms) that showed the fault. `lag`: the tier's watermark and
    /// its upstream's (the range it has not reached); `tier_down`: the last heartbeat, twice.
    pub first_bucket_ms: i64,
    pub last_bucket_ms: i64,
    pub numbers: AlertNumbers,
    /// `threshold`, `cusum`, or both; `heartbeat` for `tier_down`.
    pub detected_by: Vec<String>,
    pub starts_at_ms: i64,
    /// When it resolved.
    pub ends_at_ms: Option<i64>,
    /// What resolved it ("revised to complete by late tallies", "3 clean buckets", "caught up (lag
    /// 0 s)", "an agent is live again"); `None` while firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 { word.to_string() } else { format!("{word}s") }
}

impl Alert {
    pub fn dedup_key(kind: AlertKind, topic: &str, tier: &str) -> String {
        format!("{}/{topic}/{tier}", kind.as_str())
    }

    /// One line for humans.
    /// The named messages as one line of text (`lost p3@1042 0000…`), `None` when none were.
    pub fn named_text(&self) -> Option<String> {
        let n = &self.numbers;
        if n.named.is_empty() {
            return None;
        }
        let each: Vec<String> = n
            .named
            .iter()
            .map(|m| {
                let at = match (m.partition, m.offset) {
                    (Some(p), Some(o)) => format!(" partition {p} offset {o}"),
                    _ => String::new(),
                };
                let copies = if m.copies > 1 { format!(" ×{}", m.copies) } else { String::new() };
                format!("{} {}{copies}{at}", m.kind.as_str(), m.fingerprint)
            })
            .collect();
        let more = n.named_total.saturating_sub(n.named.len() as u64);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        Some(format!("Named messages: {}{more}.", each.join("; ")))
    }

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
            AlertKind::Lag => format!(
                "{} behind (counted up to {})",
                duration_text(n.lag_ms.unwrap_or(0)),
                n.behind_since_ms.map_or("-".into(), crate::time::rfc3339)
            ),
            AlertKind::TierDown => format!(
                "no live agent; the last vanished without a clean stop after its heartbeat at {}",
                n.last_heartbeat_ms.map_or("-".into(), crate::time::rfc3339)
            ),
            AlertKind::Flood => flood_text(n),
        };
        let place = match self.kind {
            AlertKind::TierDown => format!(" on {} {}", self.topic, self.tier),
            AlertKind::Flood => String::new(),
            _ => format!(" on {} {} → {}", self.topic, self.upstream_tier, self.tier),
        };
        let (state, kind) = (self.state.as_str().to_uppercase(), self.kind.as_str());
        match &self.resolution {
            Some(why) => format!("[{state}] kaudit {kind}{place}: {what}; resolved: {why}"),
            None => format!("[{state}] kaudit {kind}{place}: {what}"),
        }
    }
}

/// `40002 alert changes without their own notification (missing_tier 40002); topics orders.card0,
/// orders.card1, ...`: what a flood alert says.
fn flood_text(n: &AlertNumbers) -> String {
    let total = n.suppressed.unwrap_or(0);
    let kinds: Vec<String> = n.suppressed_kinds.iter().map(|(k, c)| format!("{k} {c}")).collect();
    let more = if total as usize > n.suppressed_topics.len() { ", ..." } else { "" };
    format!(
        "{total} alert {} without their own notification ({}); topics {}{more}",
        plural(total, "change"),
        kinds.join(", "),
        n.suppressed_topics.join(", ")
    )
}

/// A duration for humans: `42 s`, `6 min 12 s`, `2 h 5 min`.
pub fn duration_text(ms: i64) -> String {
    let s = ms.max(0) / 1_000;
    match (s / 3_600, s % 3_600 / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Named messages an alert carries (the API and `kaudit lost` list them all).
pub const NAMED_IN_ALERT: usize = 10;
