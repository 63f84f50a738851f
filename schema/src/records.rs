//! The verifier's records at rest: verdicts, alert state and the notification outbox.

use serde::{Deserialize, Serialize};

use crate::bucket::EpochMillis;

/// One stored verdict: a tier against its upstream tier for one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictRow {
    pub topic: String,
    pub bucket_start_ms: EpochMillis,
    pub tier: String,
    pub upstream_tier: String,
    /// `complete`, `loss`, `duplicates`, `content_mismatch`, `missing_tier`, and `+delay` when the
    /// bucket is also late.
    pub kind: String,
    pub upstream_count: u64,
    pub count: u64,
    /// The lost message's fingerprint when exactly one was lost.
    pub lost_fingerprint: Option<u64>,
    pub p99_ms: Option<u64>,
    pub evaluated_at_ms: EpochMillis,
}

/// An alert's last known state, by dedup key. `body` is the alert as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub dedup_key: String,
    /// `firing` or `resolved`.
    pub state: String,
    pub body: String,
    pub updated_at_ms: EpochMillis,
}

/// A notification waiting for a sink, delivered in `seq` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub sink: String,
    pub seq: i64,
    pub dedup_key: String,
    /// The notification, as JSON; the sink renders it for its receiver.
    pub payload: String,
    pub attempts: u32,
}
