//! The `Store` trait: where agents put cumulative tallies and the verifier reads them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::bucket::EpochMillis;
use crate::progress::{HeartbeatRow, ProgressRow};
use crate::records::{AlertRecord, CusumStateRow, OutboxEntry, VerdictOwnerRow, VerdictRow};
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

/// One flush: rows and offsets that must land together, with the agent's progress and heartbeat
/// (which need not: a lost heartbeat is replaced by the next).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushBatch {
    pub rows: Vec<TallyRow>,
    pub offsets: Vec<OffsetRow>,
    /// Absent from spools written before progress existed.
    #[serde(default)]
    pub progress: Vec<ProgressRow>,
    #[serde(default)]
    pub heartbeats: Vec<HeartbeatRow>,
}

impl FlushBatch {
    /// Nothing to write at all.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.offsets.is_empty() && self.progress.is_empty() && self.heartbeats.is_empty()
    }
}

/// One tally row written: which bucket of which topic changed, and when the store took it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Change {
    /// When the write was made, ms, by the writer's clock (the store's host for SQLite).
    pub written_ms: EpochMillis,
    pub topic: String,
    pub bucket_start_ms: EpochMillis,
    pub tier: String,
    pub agent_id: String,
}

/// What changed of one topic: each bucket (or [`REPORTS_CHANGED`]) once, with its latest write,
/// whichever tiers and agents wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicChanges {
    pub topic: String,
    /// `(bucket_start_ms, written_ms)` in bucket order.
    pub buckets: Vec<(EpochMillis, EpochMillis)>,
}

/// The changes written from some time on, per topic, and the time the read covers up to: the
/// next read continues from there (less an overlap for writes still in flight and clock skew).
/// 16 bytes a changed bucket and the topic's name once: a whole window of 10,000 topics flushed
/// at once (a backfill) reads as 10 MB, not a row per tier and agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub topics: Vec<TopicChanges>,
    pub until_ms: EpochMillis,
}

/// Change rows folded as they are read into [`Changes`]: each (topic, bucket) once.
#[derive(Debug, Default)]
pub struct ChangeFold {
    by_topic: std::collections::HashMap<String, std::collections::BTreeMap<EpochMillis, EpochMillis>>,
}

impl ChangeFold {
    pub fn add(&mut self, topic: &str, bucket_start_ms: EpochMillis, written_ms: EpochMillis) {
        let buckets = match self.by_topic.get_mut(topic) {
            Some(buckets) => buckets,
            None => self.by_topic.entry(topic.to_string()).or_default(),
        };
        let written = buckets.entry(bucket_start_ms).or_insert(written_ms);
        *written = (*written).max(written_ms);
    }

    /// What was folded, read up to `until_ms`.
    pub fn finish(self, until_ms: EpochMillis) -> Changes {
        let topics = self
            .by_topic
            .into_iter()
            .map(|(topic, buckets)| TopicChanges { topic, buckets: buckets.into_iter().collect() });
        Changes { topics: topics.collect(), until_ms }
    }
}

impl Changes {
    /// `changes` grouped by topic, each bucket once with its latest write.
    pub fn grouped(changes: impl IntoIterator<Item = Change>, until_ms: EpochMillis) -> Self {
        let mut fold = ChangeFold::default();
        changes.into_iter().for_each(|c| fold.add(&c.topic, c.bucket_start_ms, c.written_ms));
        fold.finish(until_ms)
    }

    /// Changed buckets in all, reports included.
    pub fn len(&self) -> usize {
        self.topics.iter().map(|t| t.buckets.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

/// One topic's latest progress and heartbeat rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicReports {
    pub topic: String,
    pub progress: Vec<ProgressRow>,
    pub heartbeats: Vec<HeartbeatRow>,
}

/// How long change rows are kept, ms: a verifier down longer reads everything again anyway.
pub const CHANGE_RETENTION_MS: EpochMillis = 86_400_000;

/// The `bucket_start_ms` of a change row that says a (topic, tier, agent)'s progress or heartbeat
/// was written, not a tally.
pub const REPORTS_CHANGED: EpochMillis = EpochMillis::MIN;

impl FlushBatch {
    /// The change-index entries of this batch, (topic, bucket, tier, agent), without repeats: one
    /// per tally row, and one [`REPORTS_CHANGED`] per (topic, tier, agent) that reported.
    pub fn change_keys(&self) -> Vec<(&str, EpochMillis, &str, &str)> {
        let rows = self
            .rows
            .iter()
            .map(|r| (r.key.topic.as_str(), r.key.bucket_start_ms, r.key.tier.as_str(), r.key.agent_id.as_str()));
        let progress =
            self.progress.iter().map(|p| (p.topic.as_str(), REPORTS_CHANGED, p.tier.as_str(), p.agent_id.as_str()));
        let heartbeats =
            self.heartbeats.iter().map(|h| (h.topic.as_str(), REPORTS_CHANGED, h.tier.as_str(), h.agent_id.as_str()));
        let mut keys: Vec<_> = rows.chain(progress).chain(heartbeats).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// A boxed cause, kept as the `source` of a [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A store operation failed. One variant per operation, so the message names what failed; the
/// backend's own error is the `source`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened or reached.
    #[error("cannot open store {target}")]
    Open {
        target: String,
        #[source]
        source: BoxError,
    },
    /// Migrating the schema failed.
    #[error("schema migration {version} failed")]
    Migrate {
        version: u32,
        #[source]
        source: BoxError,
    },
    /// Reading which migrations are applied failed.
    #[error("read of the schema version failed")]
    ReadSchemaVersion {
        #[source]
        source: BoxError,
    },
    /// A flush (tallies, offsets, progress, heartbeats) was refused or did not complete; keep the
    /// batch and retry.
    #[error("write of {rows} tally rows failed")]
    WriteTallies {
        rows: usize,
        #[source]
        source: BoxError,
    },
    /// Reading the tallies of a topic failed.
    #[error("read of tallies of topic {topic} failed")]
    ReadTallies {
        topic: String,
        #[source]
        source: BoxError,
    },
    /// Reading the bucket width a topic was registered with failed.
    #[error("read of the bucket width of topic {topic} failed")]
    ReadBucketWidth {
        topic: String,
        #[source]
        source: BoxError,
    },
    /// A read would walk more buckets than a backend reads at once.
    #[error("read of {buckets} buckets of topic {topic} refused: at most {max} at once")]
    RangeTooLarge { topic: String, buckets: i64, max: i64 },
    /// Listing the topics that have tallies failed.
    #[error("read of the topic list failed")]
    ReadTopics {
        #[source]
        source: BoxError,
    },
    /// Reading the progress reports of a topic failed.
    #[error("read of progress of topic {topic} failed")]
    ReadProgress {
        topic: String,
        #[source]
        source: BoxError,
    },
    /// Reading the heartbeats of a topic failed.
    #[error("read of heartbeats of topic {topic} failed")]
    ReadHeartbeats {
        topic: String,
        #[source]
        source: BoxError,
    },
    /// Reading a tap agent's stored offsets failed.
    #[error("read of the offsets of agent {agent_id} failed")]
    ReadOffsets {
        agent_id: String,
        #[source]
        source: BoxError,
    },
    /// Writing verdicts failed.
    #[error("write of {rows} verdicts failed")]
    WriteVerdicts {
        rows: usize,
        #[source]
        source: BoxError,
    },
    /// Reading the verdicts of a topic failed.
    #[error("read of verdicts of topic {topic} failed")]
    ReadVerdicts {
        topic: String,
        #[source]
        source: BoxError,
    },
    /// Writing an alert's state with its notifications failed; neither was stored.
    #[error("write of alert {dedup_key} with {notifications} notifications failed")]
    WriteAlert {
        dedup_key: String,
        notifications: usize,
        #[source]
        source: BoxError,
    },
    /// Listing the alerts failed.
    #[error("read of alerts failed")]
    ReadAlerts {
        #[source]
        source: BoxError,
    },
    /// Reading the notifications waiting for a sink failed.
    #[error("read of the outbox of sink {sink} failed")]
    ReadOutbox {
        sink: String,
        #[source]
        source: BoxError,
    },
    /// Removing a delivered notification from the outbox failed; it will be delivered again.
    #[error("outbox ack of notification {seq} of sink {sink} failed")]
    AckNotification {
        sink: String,
        seq: i64,
        #[source]
        source: BoxError,
    },
    /// Dropping the oldest notifications of a sink past its bound failed; the outbox stays longer.
    #[error("trim of the outbox of sink {sink} failed")]
    TrimOutbox {
        sink: String,
        #[source]
        source: BoxError,
    },
    /// Counting a failed delivery attempt failed.
    #[error("write of the attempt count of notification {seq} of sink {sink} failed")]
    RecordAttempt {
        sink: String,
        seq: i64,
        #[source]
        source: BoxError,
    },
    /// Reading the change index failed.
    #[error("cannot read the change index from {since_ms}")]
    ReadChanges {
        since_ms: i64,
        #[source]
        source: BoxError,
    },
    /// A stored row could not be decoded.
    #[error("stored row for topic {topic} is corrupt: {reason}")]
    Corrupt { topic: String, reason: String },
    /// Writing CUSUM detector states failed; the verifier writes them again after its next pass.
    #[error("write of {rows} cusum states failed")]
    WriteCusumStates {
        rows: usize,
        #[source]
        source: BoxError,
    },
    /// Reading CUSUM detector states failed; `scope` is `topic <name>` or `all topics`.
    #[error("read of the cusum states of {scope} failed")]
    ReadCusumStates {
        scope: String,
        #[source]
        source: BoxError,
    },
    /// Writing which instance wrote verdicts of which bucket in which shard epoch failed.
    #[error("write of {rows} verdict owner rows failed")]
    WriteVerdictOwners {
        rows: usize,
        #[source]
        source: BoxError,
    },
    /// Reading verdict owner rows failed; `scope` is `topic <name>` or `all topics`.
    #[error("read of the verdict owners of {scope} failed")]
    ReadVerdictOwners {
        scope: String,
        #[source]
        source: BoxError,
    },
}

/// Where tallies live. Writes are idempotent upserts; implementations must keep, per key, the row
/// with the highest version, and write a batch's rows and offsets atomically where they can.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Upsert every row, offset, progress report and heartbeat of `batch`, each keeping the
    /// highest version. A heartbeat is never stored before the tallies of its batch (so a clean
    /// stop's marker proves its final tallies are stored).
    async fn write(&self, batch: &FlushBatch) -> Result<(), StoreError>;

    /// Every row of `topic` whose bucket starts in `[from_ms, to_ms)`, across tiers and agents,
    /// ordered by (bucket, tier, agent).
    async fn read_range(
        &self,
        topic: &str,
        from_ms: EpochMillis,
        to_ms: EpochMillis,
    ) -> Result<Vec<TallyRow>, StoreError>;

    /// The rows of one agent's stream, (topic, tier, agent_id), whose bucket starts in
    /// `[from_ms, to_ms)`, ordered by bucket: what an agent resuming its own rows reads (a tap
    /// partition's new owner), without decoding every other agent's rows of the topic. By default
    /// [`Store::read_range`], filtered.
    async fn read_agent_range(
        &self,
        topic: &str,
        tier: &str,
        agent_id: &str,
        from_ms: EpochMillis,
        to_ms: EpochMillis,
    ) -> Result<Vec<TallyRow>, StoreError> {
        let mut rows = self.read_range(topic, from_ms, to_ms).await?;
        rows.retain(|r| r.key.tier == tier && r.key.agent_id == agent_id);
        Ok(rows)
    }

    /// Every topic that has tallies, sorted.
    async fn list_topics(&self) -> Result<Vec<String>, StoreError>;

    /// The latest progress report of every stream of every tier of `topic`.
    async fn read_progress(&self, topic: &str) -> Result<Vec<ProgressRow>, StoreError>;

    /// Every tally row (and, as [`REPORTS_CHANGED`], every progress or heartbeat report) written at
    /// or after `since_ms` (the change index), each (topic, bucket) once with its latest write by
    /// any tier or agent (an agent rewrites its open rows and reports every flush), topics in any
    /// order, and the time the read covers up to. Kept [`CHANGE_RETENTION_MS`]; reading further back than that
    /// misses changes (the verifier then reads everything).
    async fn read_changes(&self, since_ms: EpochMillis) -> Result<Changes, StoreError>;

    /// The latest heartbeat of every agent instance of every tier of `topic`.
    async fn read_heartbeats(&self, topic: &str) -> Result<Vec<HeartbeatRow>, StoreError>;

    /// [`Store::read_progress`] and [`Store::read_heartbeats`] of each of `topics`, in one call
    /// (a store may serve them in one round trip). Topics without rows are absent.
    async fn read_reports(&self, topics: &[String]) -> Result<Vec<TopicReports>, StoreError> {
        let mut out = Vec::with_capacity(topics.len());
        for topic in topics {
            let progress = self.read_progress(topic).await?;
            let heartbeats = self.read_heartbeats(topic).await?;
            out.push(TopicReports { topic: topic.clone(), progress, heartbeats });
        }
        Ok(out)
    }

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
    /// Coalescing: a notification replaces every waiting notification of its sink with the same
    /// dedup key, so a receiver that was down gets the alert's latest state, not every step.
    /// No notifications: the state alone is stored.
    async fn record_alert(&self, alert: &AlertRecord, notifications: &[OutboxEntry]) -> Result<(), StoreError>;

    /// Drop the oldest waiting notifications of `sink` past the newest `max`; returns how many
    /// were dropped.
    async fn trim_outbox(&self, sink: &str, max: usize) -> Result<usize, StoreError>;

    /// Every alert's last state.
    async fn list_alerts(&self) -> Result<Vec<AlertRecord>, StoreError>;

    /// The oldest `limit` notifications waiting for `sink`, in order.
    async fn outbox(&self, sink: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Remove a delivered notification.
    async fn ack_notification(&self, sink: &str, seq: i64) -> Result<(), StoreError>;

    /// Count a failed delivery attempt of a waiting notification.
    async fn record_attempt(&self, entry: &OutboxEntry) -> Result<(), StoreError>;

    /// Upsert CUSUM detector states. Per (topic, tier, signal) the row with the latest
    /// `last_bucket_ms` is kept: a row for an older bucket than the stored one is ignored, one for
    /// the same bucket replaces it (so writing a state twice is harmless).
    async fn write_cusum_states(&self, rows: &[CusumStateRow]) -> Result<(), StoreError>;

    /// The CUSUM detector states of `topic`, or of every topic for `None`, ordered by (topic,
    /// tier, signal).
    async fn read_cusum_states(&self, topic: Option<&str>) -> Result<Vec<CusumStateRow>, StoreError>;

    /// Upsert rows recording which instance wrote verdicts of which bucket in which shard epoch
    /// (writing one twice is harmless; the later `written_ms` is kept).
    async fn write_verdict_owners(&self, rows: &[VerdictOwnerRow]) -> Result<(), StoreError>;

    /// The verdict owner rows of `topic`, or of every topic for `None`, ordered by (topic,
    /// bucket_start_ms, epoch, owner).
    async fn read_verdict_owners(&self, topic: Option<&str>) -> Result<Vec<VerdictOwnerRow>, StoreError>;
}

/// Box any error for a [`StoreError`] source.
pub(crate) fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> BoxError {
    Box::new(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::StreamId;

    fn batch() -> FlushBatch {
        let key = TallyKey { topic: "t".into(), bucket_start_ms: 0, tier: "producer".into(), agent_id: "a".into() };
        let mut tally = Tally::default();
        tally.add(7, 100);
        FlushBatch {
            rows: vec![TallyRow { key, bucket_width_ms: 60_000, version: 3, tally }],
            offsets: vec![OffsetRow {
                agent_id: "a".into(),
                topic: "t".into(),
                partition: 0,
                next_offset: 9,
                version: 3,
            }],
            progress: vec![ProgressRow {
                topic: "t".into(),
                tier: "producer".into(),
                stream: StreamId::Agent("a".into()),
                agent_id: "a".into(),
                watermark_ms: 0,
                caught_up: true,
                reported_at_ms: 5,
                version: 3,
            }],
            heartbeats: vec![HeartbeatRow {
                topic: "t".into(),
                tier: "producer".into(),
                agent_id: "a".into(),
                started_at_ms: 0,
                heartbeat_ms: 5,
                open_from_ms: Some(0),
                stopped: false,
                resumes: false,
                version: 3,
            }],
        }
    }

    /// A spool segment written before progress existed has neither field: it still replays.
    #[test]
    fn an_old_spool_batch_still_deserializes() {
        let mut json = serde_json::to_value(batch()).unwrap();
        let fields = json.as_object_mut().unwrap();
        assert!(fields.remove("progress").is_some() && fields.remove("heartbeats").is_some());
        let old: FlushBatch = serde_json::from_value(json).unwrap();
        assert_eq!(old, FlushBatch { progress: vec![], heartbeats: vec![], ..batch() });
        let literal =
            r#"{"rows":[],"offsets":[{"agent_id":"a","topic":"t","partition":1,"next_offset":4,"version":2}]}"#;
        let old: FlushBatch = serde_json::from_str(literal).unwrap();
        assert_eq!((old.offsets.len(), old.progress.len(), old.heartbeats.len()), (1, 0, 0));
        assert!(!old.is_empty());
    }

    #[test]
    fn a_batch_round_trips_and_is_empty_only_when_all_parts_are() {
        let full = batch();
        assert_eq!(serde_json::from_slice::<FlushBatch>(&serde_json::to_vec(&full).unwrap()).unwrap(), full);
        assert!(FlushBatch::default().is_empty());
        let beat_only = FlushBatch { heartbeats: full.heartbeats.clone(), ..FlushBatch::default() };
        let progress_only = FlushBatch { progress: full.progress, ..FlushBatch::default() };
        assert!(!beat_only.is_empty() && !progress_only.is_empty());
    }
}
