//! The tap's state: per partition, a tally table, the next offset and how far it has been read,
//! shared by the poll thread, the rebalance callback and the flusher behind one mutex.
//!
//! A partition's rows and next offset belong to the tap's *group*, not to the process holding it
//! ([`partition_agent_id`]), so any member assigned the partition resumes exactly where the
//! previous one stopped, whatever the members' names. Each flush also reports per partition the
//! largest event time read and whether the partition is caught up (librdkafka's partition EOF
//! seen since the last message), and one heartbeat per topic under this process's own id, with
//! `resumes = true`: a tap that crashes resumes from its stored state, so its crash leaves nothing
//! indeterminate.

use hashbrown::HashMap as FastMap;
use kaudit_schema::difference::Locator;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kaudit_schema::progress::{HeartbeatRow, ProgressRow, StreamId};
use kaudit_schema::{BucketWidth, Clock, EpochMillis, FlushBatch, OffsetRow, Store, StoreError, TallyRow};
use rdkafka::message::{BorrowedMessage, Message};

use super::config::{StartFrom, TapConfig};
use crate::auditor::{new_instance_id, observe};
use crate::extract::EventTime;
use crate::flusher::BatchSource;
use crate::kafka::KafkaMessage;
use crate::metrics::AgentMetrics;
use crate::rules::TopicRules;
use crate::table::{PerStream, StreamCounters, TallyTable};

/// The stable agent id of one partition's rows and next offset: the tap's consumer group's, so
/// whichever member of the group holds the partition continues the same rows.
pub fn partition_agent_id(group_id: &str, topic: &str, partition: i32) -> String {
    format!("{group_id}:{topic}:{partition}")
}

struct PartitionState {
    table: TallyTable,
    next_offset: i64,
    offset_dirty: bool,
    /// Largest bucket time read by this owner (event time, else arrival), ms; `None` before.
    read_to: Option<EpochMillis>,
    /// Partition EOF seen since the last message: nothing more to read.
    caught_up: bool,
}

impl PartitionState {
    /// This partition's progress report, if there is anything to say yet (read something, or
    /// reached the end); otherwise its last report, maybe by a previous owner, stands.
    fn progress(&self, topic: &str, partition: i32, tap: &TapShared, now: EpochMillis) -> Option<ProgressRow> {
        (self.read_to.is_some() || self.caught_up).then(|| ProgressRow {
            topic: topic.to_string(),
            tier: tap.tier.clone(),
            stream: StreamId::Partition(partition),
            agent_id: tap.agent_id.clone(),
            watermark_ms: self.read_to.unwrap_or(now),
            caught_up: self.caught_up,
            reported_at_ms: now,
            version: self.table.last_version(),
        })
    }
}

/// State shared by the poll thread, the rebalance callback and the flusher.
pub struct TapShared {
    partitions: Mutex<FastMap<String, FastMap<i32, PartitionState>>>,
    store: Arc<dyn Store>,
    runtime: tokio::runtime::Handle,
    rules: TopicRules,
    /// The consumer group: partitions' rows and offsets are stored under it.
    group_id: String,
    /// This process's id (`<name>-<instance>`), in heartbeats and progress reports.
    agent_id: String,
    started_at_ms: EpochMillis,
    /// Version of the latest heartbeats.
    heartbeat_version: AtomicU64,
    tier: String,
    width: BucketWidth,
    close_after_ms: i64,
    max_future_ms: i64,
    sketch: Option<kaudit_schema::difference::Geometry>,
    pub(super) start_from: StartFrom,
    pub(super) clock: Arc<dyn Clock>,
    /// How long a revocation keeps trying to write before releasing anyway (logged).
    revoke_timeout: Duration,
    /// Messages counted since start (this process).
    seen: AtomicU64,
}

/// Everything a tap needs.
pub struct TapOptions {
    /// The tap's name; its heartbeats are under `<name>-<instance id>`.
    pub name: String,
    pub config: TapConfig,
    pub rules: TopicRules,
    pub width: BucketWidth,
    pub close_after_ms: i64,
    /// Event times further than this ahead of the clock count as malformed, ms.
    pub max_future_ms: i64,
    /// Each row's difference sketch (`None`: counts only).
    pub sketch: Option<kaudit_schema::difference::Geometry>,
    pub clock: Arc<dyn Clock>,
    pub store: Arc<dyn Store>,
    pub runtime: tokio::runtime::Handle,
    pub revoke_timeout: Duration,
}

impl TapOptions {
    /// Options from the `[agent]` settings (rules, bucket width, closing, shutdown timeout), with
    /// the wall clock and the current tokio runtime.
    pub fn from_agent(agent: &crate::AgentConfig, name: String, config: TapConfig, store: Arc<dyn Store>) -> Self {
        Self {
            name,
            config,
            rules: agent.topic_rules(),
            width: BucketWidth::from_millis(agent.bucket_width_ms).expect("validated"),
            close_after_ms: agent.close_after_ms as i64,
            max_future_ms: agent.max_future_ms as i64,
            sketch: agent.sketch.geometry(),
            clock: Arc::new(crate::CoarseClock),
            store,
            runtime: tokio::runtime::Handle::current(),
            revoke_timeout: Duration::from_millis(agent.shutdown_timeout_ms),
        }
    }
}

impl TapShared {
    pub(super) fn new(o: TapOptions) -> Arc<Self> {
        Arc::new(Self {
            partitions: Mutex::default(),
            store: o.store,
            runtime: o.runtime,
            rules: o.rules,
            group_id: o.config.group_id(),
            agent_id: format!("{}-{}", o.name, new_instance_id()),
            started_at_ms: o.clock.now_ms(),
            heartbeat_version: AtomicU64::new(0),
            tier: o.config.tier,
            width: o.width,
            close_after_ms: o.close_after_ms,
            max_future_ms: o.max_future_ms,
            sketch: o.sketch,
            start_from: o.config.start_from,
            clock: o.clock,
            revoke_timeout: o.revoke_timeout,
            seen: AtomicU64::new(0),
        })
    }

    /// Count one consumed message seen at `now` (ms) and advance its partition's next offset.
    pub(super) fn record(&self, msg: &BorrowedMessage<'_>, now: i64) {
        let topic = msg.topic();
        let mut obs = observe(&self.rules, topic, &KafkaMessage(msg));
        obs.locator = Some(Locator { partition: msg.partition(), offset: msg.offset() });
        let mut parts = self.partitions.lock().expect("tap state poisoned");
        let Some(state) = parts.get_mut(topic).and_then(|p| p.get_mut(&msg.partition())) else {
            // librdkafka only hands out messages of assigned partitions, which were loaded.
            tracing::error!(
                topic,
                partition = msg.partition(),
                "message for a partition the tap did not load; not counted"
            );
            return;
        };
        let time = match obs.event_time {
            EventTime::Valid(t) => t,
            EventTime::Missing | EventTime::Malformed => now,
        };
        state.table.record(topic, &self.tier, obs, now);
        state.next_offset = msg.offset() + 1;
        state.offset_dirty = true;
        state.read_to = Some(state.read_to.map_or(time, |t| t.max(time)));
        state.caught_up = false;
        // The poll thread is the only writer: a plain store, not an atomic read-modify-write.
        self.seen.store(self.seen.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// librdkafka reached the end of `partition` (of some assigned topic: its event does not say
    /// which). When one assigned topic has that partition, it is caught up; when several do, those
    /// whose next offset has reached the high watermark librdkafka last saw (`watermarks(topic)`:
    /// low, high) are.
    pub(super) fn partition_eof(&self, partition: i32, watermarks: impl Fn(&str) -> Option<(i64, i64)>) {
        let mut parts = self.partitions.lock().expect("tap state poisoned");
        let holders = parts.values().filter(|p| p.contains_key(&partition)).count();
        for (topic, by_partition) in parts.iter_mut() {
            let Some(state) = by_partition.get_mut(&partition) else { continue };
            let at_end = holders == 1
                || watermarks(topic).is_some_and(|(low, high)| {
                    if state.next_offset >= 0 { state.next_offset >= high } else { low >= high }
                });
            state.caught_up |= at_end;
        }
    }

    /// This process's agent id, as its heartbeats and progress reports carry it.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// Messages counted by this process since it started.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Assigned partitions, for readiness and tests.
    pub fn assigned(&self) -> Vec<(String, i32)> {
        let parts = self.partitions.lock().expect("tap state poisoned");
        let mut out: Vec<(String, i32)> =
            parts.iter().flat_map(|(t, p)| p.keys().map(move |k| (t.clone(), *k))).collect();
        out.sort();
        out
    }

    /// Assigned partitions that are caught up now (their end reached since their last message).
    pub fn caught_up(&self) -> Vec<(String, i32)> {
        let parts = self.partitions.lock().expect("tap state poisoned");
        let mut out: Vec<(String, i32)> = parts
            .iter()
            .flat_map(|(t, p)| p.iter().filter(|(_, s)| s.caught_up).map(move |(k, _)| (t.clone(), *k)))
            .collect();
        out.sort();
        out
    }

    /// Load a partition's stored tallies and next offset; returns the offset, if one was stored.
    pub(super) fn load(&self, topic: &str, partition: i32) -> Option<i64> {
        let agent_id = partition_agent_id(&self.group_id, topic, partition);
        let now = self.clock.now_ms();
        let (offsets, rows) = self.read_stored(&agent_id, topic, partition, now);
        let mut table = TallyTable::resuming(agent_id.clone(), self.width, self.close_after_ms, now);
        table.set_max_future_ms(self.max_future_ms);
        table.set_sketch(self.sketch);
        let mut seeded = 0;
        for row in rows {
            table.seed(&row.key.topic, &row.key.tier, row.key.bucket_start_ms, row.tally);
            seeded += 1;
        }
        let next = offsets.iter().find(|o| o.topic == topic && o.partition == partition).map(|o| o.next_offset);
        tracing::info!(topic, partition, next_offset = ?next, seeded_rows = seeded, "tap partition assigned");
        let state = PartitionState {
            table,
            next_offset: next.unwrap_or(-1),
            offset_dirty: false,
            read_to: None,
            caught_up: false,
        };
        self.partitions
            .lock()
            .expect("tap state poisoned")
            .entry(topic.to_string())
            .or_default()
            .insert(partition, state);
        next
    }

    /// The stored offsets of `agent_id` and its rows of `topic` its table may still hold open at
    /// `now` (its own only: not every agent's rows of the topic), retrying until the store answers.
    fn read_stored(&self, agent_id: &str, topic: &str, partition: i32, now: i64) -> (Vec<OffsetRow>, Vec<TallyRow>) {
        let from = self.width.start_of(now - self.close_after_ms) - self.width.as_millis();
        let to = now + 3_600_000; // event times a little in the future (clock skew)
        let mut delay = Duration::from_millis(200);
        loop {
            let attempt = self.runtime.block_on(async {
                let offsets = self.store.load_offsets(agent_id).await?;
                let rows = self.store.read_agent_range(topic, &self.tier, agent_id, from, to).await?;
                Ok::<_, StoreError>((offsets, rows))
            });
            match attempt {
                Ok(found) => return found,
                Err(error) => {
                    tracing::warn!(topic, partition, %error, "cannot load the tap's state; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Changed rows and offsets of every partition (or of `only`) with their progress, in one
    /// batch; taken for every partition (the flusher's), also a heartbeat per topic the tap has
    /// been assigned partitions of since it started.
    fn snapshot(&self, only: Option<&[(String, i32)]>) -> FlushBatch {
        let now = self.clock.now_ms();
        let mut batch = FlushBatch::default();
        let mut parts = self.partitions.lock().expect("tap state poisoned");
        for (topic, by_partition) in parts.iter_mut() {
            let mut open_from: Option<EpochMillis> = None;
            for (partition, state) in by_partition.iter_mut() {
                if only.is_some_and(|o| !o.iter().any(|(t, p)| t == topic && p == partition)) {
                    continue;
                }
                let rows = state.table.snapshot(now);
                open_from = open_from.into_iter().chain(state.table.open_from()).min();
                batch.progress.extend(state.progress(topic, *partition, self, now));
                if rows.rows.is_empty() && !state.offset_dirty {
                    continue;
                }
                batch.rows.extend(rows.rows);
                if state.next_offset >= 0 {
                    batch.offsets.push(OffsetRow {
                        agent_id: state.table.agent_id().to_string(),
                        topic: topic.clone(),
                        partition: *partition,
                        next_offset: state.next_offset,
                        version: state.table.last_version(),
                    });
                }
                state.offset_dirty = false;
            }
            if only.is_none() {
                batch.heartbeats.push(self.heartbeat(topic, open_from, now));
            }
        }
        batch
    }

    /// This process's heartbeat for `topic`, with a version above the previous heartbeats'.
    fn heartbeat(&self, topic: &str, open_from_ms: Option<EpochMillis>, now: EpochMillis) -> HeartbeatRow {
        let floor = self.heartbeat_version.load(Ordering::Relaxed) + 1;
        let version = (now.max(0) as u64 * 1000).max(floor);
        self.heartbeat_version.fetch_max(version, Ordering::Relaxed);
        HeartbeatRow {
            topic: topic.to_string(),
            tier: self.tier.clone(),
            agent_id: self.agent_id.clone(),
            started_at_ms: self.started_at_ms,
            heartbeat_ms: now,
            open_from_ms,
            stopped: false,
            resumes: true,
            version,
        }
    }

    /// Write the state of revoked partitions, then forget them.
    pub(super) fn release(&self, revoked: &[(String, i32)]) {
        let batch = self.snapshot(Some(revoked));
        if !batch.is_empty()
            && let Err(error) = self.write_within(&batch, self.revoke_timeout)
        {
            tracing::error!(%error, partitions = ?revoked, "releasing partitions whose last tallies are not stored: their next owner will recount them");
        }
        let mut parts = self.partitions.lock().expect("tap state poisoned");
        for (topic, partition) in revoked {
            if let Some(p) = parts.get_mut(topic) {
                p.remove(partition);
            }
        }
    }

    /// Write `batch`, retrying for up to `timeout`; the last error if the store never took it.
    fn write_within(&self, batch: &FlushBatch, timeout: Duration) -> Result<(), StoreError> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(100);
        loop {
            match self.runtime.block_on(self.store.write(batch)) {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(%error, "cannot write revoked partitions' state; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Per-stream counters of every partition since the last call.
    fn take_counters(&self) -> PerStream<StreamCounters> {
        let mut parts = self.partitions.lock().expect("tap state poisoned");
        parts.values_mut().flat_map(|p| p.values_mut()).flat_map(|state| state.table.take_counters()).collect()
    }
}

/// The flusher's view of the tap: all partitions' rows and offsets.
pub(super) struct TapSource(pub(super) Arc<TapShared>);

impl BatchSource for TapSource {
    fn take_batch(&mut self) -> FlushBatch {
        self.0.snapshot(None)
    }

    fn report(&mut self, metrics: &AgentMetrics) {
        metrics.record_streams(&self.0.take_counters());
    }
}
