//! Tap mode: consume topics on a cluster as tier T with the tap's own consumer group, and tally
//! every message, exactly once across crashes.
//!
//! Each assigned partition has its own tally table under a *stable* agent id
//! (`<name>:<topic>:<partition>`) and its own next offset. A flush writes the changed tallies of a
//! partition together with its next offset, in one atomic store write. On assignment the tap reads
//! both back, seeds the table with the stored cumulative tallies and starts reading at the stored
//! offset; so after a crash (even `kill -9`) the tallies resume exactly at the state that matches
//! the offset, and the re-read messages are counted once. The tap never commits offsets to Kafka.
//! On revocation the partition's state is written before the partition is released, so the next
//! owner starts from it.
//!
//! The poll loop runs on its own thread (librdkafka calls the rebalance callback on it, inside
//! `poll`); store reads and writes from there block on the tokio runtime's handle.

use hashbrown::HashMap as FastMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kaudit_schema::{BucketWidth, Clock, FlushBatch, OffsetRow, Store};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::auditor::observe;
use crate::flusher::BatchSource;
use crate::kafka::KafkaMessage;
use crate::metrics::AgentMetrics;
use crate::rules::TopicRules;
use crate::table::{StreamCounters, TallyTable};

/// `[tap]`: what to consume and as which tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapConfig {
    /// The tier these messages are counted as, e.g. `broker` or `mirror`.
    pub tier: String,
    /// Topic names, or regular expressions starting with `^` (librdkafka subscription patterns).
    pub topics: Vec<String>,
    /// The tap's consumer group. Default `kaudit-tap-<tier>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Where a partition without a stored offset starts: `earliest` (default) or `latest`.
    #[serde(default)]
    pub start_from: StartFrom,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
}

impl TapConfig {
    pub fn group_id(&self) -> String {
        self.group_id.clone().unwrap_or_else(|| format!("kaudit-tap-{}", self.tier))
    }

    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut issues = Vec::new();
        if self.tier.is_empty() {
            issues.push((format!("{prefix}.tier"), "name the tier, e.g. \"broker\"".into()));
        }
        if self.topics.is_empty() || self.topics.iter().any(String::is_empty) {
            issues.push((format!("{prefix}.topics"), "name at least one topic or ^regex".into()));
        }
        issues
    }
}

/// The stable agent id of one partition's rows.
pub fn partition_agent_id(name: &str, topic: &str, partition: i32) -> String {
    format!("{name}:{topic}:{partition}")
}

struct PartitionState {
    table: TallyTable,
    next_offset: i64,
    offset_dirty: bool,
}

/// State shared by the poll thread, the rebalance callback and the flusher.
pub struct TapShared {
    partitions: Mutex<FastMap<String, FastMap<i32, PartitionState>>>,
    store: Arc<dyn Store>,
    runtime: tokio::runtime::Handle,
    rules: TopicRules,
    name: String,
    tier: String,
    width: BucketWidth,
    close_after_ms: i64,
    start_from: StartFrom,
    clock: Arc<dyn Clock>,
    /// How long a revocation keeps trying to write before releasing anyway (logged).
    revoke_timeout: Duration,
    /// Messages counted since start (this process).
    seen: AtomicU64,
}

/// Everything a tap needs.
pub struct TapOptions {
    pub name: String,
    pub config: TapConfig,
    pub rules: TopicRules,
    pub width: BucketWidth,
    pub close_after_ms: i64,
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
            clock: Arc::new(crate::SystemClock),
            store,
            runtime: tokio::runtime::Handle::current(),
            revoke_timeout: Duration::from_millis(agent.shutdown_timeout_ms),
        }
    }
}

impl TapShared {
    pub fn new(o: TapOptions) -> Arc<Self> {
        Arc::new(Self {
            partitions: Mutex::default(),
            store: o.store,
            runtime: o.runtime,
            rules: o.rules,
            name: o.name,
            tier: o.config.tier,
            width: o.width,
            close_after_ms: o.close_after_ms,
            start_from: o.config.start_from,
            clock: o.clock,
            revoke_timeout: o.revoke_timeout,
            seen: AtomicU64::new(0),
        })
    }

    /// Count one consumed message seen at `now_ms` and advance its partition's next offset.
    pub fn record(&self, msg: &BorrowedMessage<'_>, now: i64) {
        let topic = msg.topic();
        let obs = observe(&self.rules, topic, &KafkaMessage(msg));
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
        state.table.record(topic, &self.tier, obs, now);
        state.next_offset = msg.offset() + 1;
        state.offset_dirty = true;
        self.seen.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages counted by this process since it started.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Load a partition's stored tallies and next offset, retrying until the store answers.
    fn load(&self, topic: &str, partition: i32) -> Option<i64> {
        let agent_id = partition_agent_id(&self.name, topic, partition);
        let now = self.clock.now_ms();
        let from = self.width.start_of(now - self.close_after_ms) - self.width.as_millis();
        let to = now + 3_600_000; // event times a little in the future (clock skew)
        let mut delay = Duration::from_millis(200);
        let (offsets, rows) = loop {
            let attempt = self.runtime.block_on(async {
                let offsets = self.store.load_offsets(&agent_id).await?;
                let rows = self.store.read_range(topic, from, to).await?;
                Ok::<_, kaudit_schema::StoreError>((offsets, rows))
            });
            match attempt {
                Ok(found) => break found,
                Err(error) => {
                    tracing::warn!(topic, partition, %error, "cannot load the tap's state; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        let mut table = TallyTable::resuming(agent_id.clone(), self.width, self.close_after_ms, now);
        let mut seeded = 0;
        for row in rows.into_iter().filter(|r| r.key.agent_id == agent_id) {
            table.seed(&row.key.topic, &row.key.tier, row.key.bucket_start_ms, row.tally);
            seeded += 1;
        }
        let next = offsets.iter().find(|o| o.topic == topic && o.partition == partition).map(|o| o.next_offset);
        tracing::info!(topic, partition, next_offset = ?next, seeded_rows = seeded, "tap partition assigned");
        let state = PartitionState { table, next_offset: next.unwrap_or(-1), offset_dirty: false };
        self.partitions
            .lock()
            .expect("tap state poisoned")
            .entry(topic.to_string())
            .or_default()
            .insert(partition, state);
        next
    }

    /// Changed rows and offsets of every partition (or of `only`), in one batch.
    fn snapshot(&self, only: Option<&[(String, i32)]>) -> FlushBatch {
        let now = self.clock.now_ms();
        let mut batch = FlushBatch::default();
        let mut parts = self.partitions.lock().expect("tap state poisoned");
        for (topic, by_partition) in parts.iter_mut() {
            for (partition, state) in by_partition.iter_mut() {
                if only.is_some_and(|o| !o.iter().any(|(t, p)| t == topic && p == partition)) {
                    continue;
                }
                let rows = state.table.snapshot(now);
                if rows.rows.is_empty() && !state.offset_dirty {
                    continue;
                }
                let version = rows.rows.first().map_or_else(|| state.table.last_version(), |r| r.version);
                batch.rows.extend(rows.rows);
                if state.next_offset >= 0 {
                    batch.offsets.push(OffsetRow {
                        agent_id: state.table.agent_id().to_string(),
                        topic: topic.clone(),
                        partition: *partition,
                        next_offset: state.next_offset,
                        version,
                    });
                }
                state.offset_dirty = false;
            }
        }
        batch
    }

    /// Write the state of revoked partitions, then forget them.
    fn release(&self, revoked: &[(String, i32)]) {
        let batch = self.snapshot(Some(revoked));
        let deadline = Instant::now() + self.revoke_timeout;
        let mut delay = Duration::from_millis(100);
        while !batch.is_empty() {
            match self.runtime.block_on(self.store.write(&batch)) {
                Ok(()) => break,
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(%error, "cannot write revoked partitions' state; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(error) => {
                    tracing::error!(%error, partitions = ?revoked, "releasing partitions whose last tallies are not stored: their next owner will recount them");
                    break;
                }
            }
        }
        let mut parts = self.partitions.lock().expect("tap state poisoned");
        for (topic, partition) in revoked {
            if let Some(p) = parts.get_mut(topic) {
                p.remove(partition);
            }
        }
    }

    /// Per-stream counters of every partition since the last call.
    fn take_counters(&self) -> Vec<(String, String, StreamCounters)> {
        let mut parts = self.partitions.lock().expect("tap state poisoned");
        parts.values_mut().flat_map(|p| p.values_mut()).flat_map(|state| state.table.take_counters()).collect()
    }

    /// Assigned partitions, for readiness and tests.
    pub fn assigned(&self) -> Vec<(String, i32)> {
        let parts = self.partitions.lock().expect("tap state poisoned");
        let mut out: Vec<(String, i32)> =
            parts.iter().flat_map(|(t, p)| p.keys().map(move |k| (t.clone(), *k))).collect();
        out.sort();
        out
    }
}

/// The flusher's view of the tap: all partitions' rows and offsets.
pub struct TapSource(pub Arc<TapShared>);

impl BatchSource for TapSource {
    fn take_batch(&mut self) -> FlushBatch {
        self.0.snapshot(None)
    }

    fn report(&mut self, metrics: &AgentMetrics) {
        metrics.record_streams(&self.0.take_counters());
    }
}

/// The consumer context: loads state on assignment, writes it on revocation.
pub struct TapContext(pub Arc<TapShared>);

impl ClientContext for TapContext {}

impl ConsumerContext for TapContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let listed: Vec<(String, i32)> =
            tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                for (topic, partition) in &listed {
                    let offset = match self.0.load(topic, *partition) {
                        Some(next) => Offset::Offset(next),
                        None if self.0.start_from == StartFrom::Latest => Offset::End,
                        None => Offset::Beginning,
                    };
                    if let Err(error) = tpl.set_partition_offset(topic, *partition, offset) {
                        tracing::error!(topic, partition, %error, "cannot set the start offset");
                    }
                }
                if let Err(error) = consumer.assign(tpl) {
                    tracing::error!(%error, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.0.release(&listed);
                if let Err(error) = consumer.unassign() {
                    tracing::error!(%error, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error; releasing all partitions");
                self.0.release(&self.0.assigned());
                let _ = consumer.unassign();
            }
        }
    }
}

/// A running tap: the poll thread. The flusher runs apart (see [`TapSource`]).
pub struct TapRunner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The librdkafka settings the tap owns; a `kafka.options` entry for one of them is rejected.
pub const TAP_OWNED_OPTIONS: &[&str] =
    &["group.id", "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset"];

impl TapRunner {
    /// Subscribe and start polling on a new thread.
    pub fn start(shared: Arc<TapShared>, config: &TapConfig, mut client: ClientConfig) -> KafkaResult<Self> {
        client
            .set("group.id", config.group_id())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", if config.start_from == StartFrom::Latest { "latest" } else { "earliest" });
        let consumer: BaseConsumer<TapContext> = client.create_with_context(TapContext(shared.clone()))?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kaudit-tap".into())
            .spawn(move || {
                let mut last_error: Option<Instant> = None;
                // The wall clock is read once per 32 messages (and after every idle poll): at these
                // rates that is well under a millisecond of error, and a clock read is ~40 ns.
                let (mut now, mut since_read) = (shared.clock.now_ms(), 0u32);
                while !stopping.load(Ordering::Relaxed) {
                    if since_read >= 32 {
                        (now, since_read) = (shared.clock.now_ms(), 0);
                    }
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(msg)) => {
                            since_read += 1;
                            shared.record(&msg, now);
                        }
                        Some(Err(error)) if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) => {
                            tracing::warn!(%error, "tap consumer error");
                            last_error = Some(Instant::now());
                        }
                        Some(Err(_)) => {}
                        None => since_read = u32::MAX,
                    }
                }
                // Leaving the group revokes every partition, which writes their state.
                consumer.unsubscribe();
                let _ = consumer.poll(Duration::from_millis(100));
                shared.release(&shared.assigned());
            })
            .expect("spawn tap thread");
        Ok(Self { stop, thread: Some(thread) })
    }

    /// Stop polling, write every partition's state, leave the group.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TapRunner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
