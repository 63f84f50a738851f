//! The `Store` trait: where agents put cumulative tallies and the verifier reads them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::bucket::EpochMillis;
use crate::records::{AlertRecord, OutboxEntry, VerdictRow};
use crate::tally::Tally;

/// Identity of one stored tally row. An agent owns its rows: no two agents write the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TallyKey {
    pub topic: String,
    /// Start of the event-time bucket, ms since the epoch.
    pub bucket_start_ms: EpochMillis,
    pub tier: String,
    pub agent_id: String,
}

/// A cumulative tally as written by its agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TallyRow {
    pub key: TallyKey,
    /// Width of the bucket in ms, so readers can check that agents agree.
    pub bucket_width_ms: i64,
    /// Grows with every write of this row by its agent; a store keeps the row with the highest
    /// version, so a stale replay never overwrites a newer value.
    pub version: u64,
    pub tally: Tally,
}

/// The next offset a tap agent will read from one partition, written with its tallies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OffsetRow {
    pub agent_id: String,
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    /// Same meaning as [`TallyRow::version`].
    pub version: u64,
}

/// One flush: rows and offsets that must land together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushBatch {
    pub rows: Vec<TallyRow>,
    pub offsets: Vec<OffsetRow>,
}

impl FlushBatch {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.offsets.is_empty()
    }
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened or reached.
    #[error("cannot open store {target}")]
    Open {
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A write was refused or did not complete; the caller should keep the batch and retry.
    #[error("write of {rows} tally rows failed")]
    Write {
        rows: usize,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A read failed.
    #[error("read of {what} failed")]
    Read {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored row could not be decoded.
    #[error("stored row for topic {topic} is corrupt: {reason}")]
    Corrupt { topic: String, reason: String },
    /// Migrating the schema failed.
    #[error("schema migration {version} failed")]
    Migrate {
        version: u32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Where tallies live. Writes are idempotent upserts; implementations must keep, per key, the row
/// with the highest version, and write a batch's rows and offsets atomically where they can.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Upsert every row and offset of `batch`.
    async fn write(&self, batch: &FlushBatch) -> Result<(), StoreError>;

    /// Every row of `topic` whose bucket starts in `[from_ms, to_ms)`, across tiers and agents,
    /// ordered by (bucket, tier, agent).
    async fn read_range(
        &self,
        topic: &str,
        from_ms: EpochMillis,
        to_ms: EpochMillis,
    ) -> Result<Vec<TallyRow>, StoreError>;

    /// Every topic that has tallies, sorted.
    async fn list_topics(&self) -> Result<Vec<String>, StoreError>;

    /// The stored offsets of one agent.
    async fn load_offsets(&self, agent_id: &str) -> Result<Vec<OffsetRow>, StoreError>;

    /// Upsert verdicts (a revision overwrites the verdict it revises).
    async fn write_verdicts(&self, rows: &[VerdictRow]) -> Result<(), StoreError>;

    /// Verdicts of `topic` for buckets starting in `[from_ms, to_ms)`, ordered by (bucket, tier).
    async fn read_verdicts(
        &self,
        topic: &str,
        from_ms: EpochMillis,
        to_ms: EpochMillis,
    ) -> Result<Vec<VerdictRow>, StoreError>;

    /// Record an alert's new state together with the notifications it causes, atomically: after
    /// a crash either both are stored or neither, so a restart neither repeats nor loses one.
    async fn record_alert(&self, alert: &AlertRecord, notifications: &[OutboxEntry]) -> Result<(), StoreError>;

    /// Every alert's last state.
    async fn list_alerts(&self) -> Result<Vec<AlertRecord>, StoreError>;

    /// The oldest `limit` notifications waiting for `sink`, in order.
    async fn outbox(&self, sink: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Remove a delivered notification.
    async fn ack_notification(&self, sink: &str, seq: i64) -> Result<(), StoreError>;

    /// Count a failed delivery attempt of a waiting notification.
    async fn record_attempt(&self, entry: &OutboxEntry) -> Result<(), StoreError>;
}

/// Box any error for a [`StoreError`] source.
pub(crate) fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}
