//! The [`Auditor`]: the handle producers, consumers and sidecars count messages through.
//!
//! Besides tallies, every [`Auditor::snapshot`] carries one heartbeat per (topic, tier) stream and
//! its progress (see [`crate::table`]). What progress rests on is kept with the tallies: producer
//! wrappers count hand-offs ([`Auditor::hand_off`]) and delivery reports settle them; consumer
//! wrappers note the partition of each message read and register a [`PartitionProbe`], asked at
//! each snapshot (on the flusher's task, before any lock is taken) where the consumer stands in its
//! assigned partitions.
//!
//! ## No shared lock on the clients' threads
//! Messages counted from Kafka clients (producer delivery callbacks, consumer reads, hand-offs,
//! delivery failures) go to *delta tables* ([`TallyTable::delta`]), one per shard, two shards per
//! core; each thread has a home shard (threads are spread over them in turn as they first
//! count). A thread takes its shard with `try_lock` and, if the flusher or another thread holds it,
//! moves on to the next shard: nothing on these paths sleeps on a lock, and threads do not share a
//! cache line. Every snapshot (and every read of the totals) first folds each shard into the
//! merged table ([`TallyTable::absorb`]), which alone snapshots, closes buckets and decides what
//! is late; so a message is in the first snapshot taken after it was counted, as before. Ingest
//! requests, which count whole batches all or nothing against the stream cap, count straight into
//! the merged table (on the server's task, not a client's callback thread).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kaudit_schema::{BucketWidth, EpochMillis, FlushBatch};
use spin::mutex::SpinMutex;
use spin::relax::Yield;

use crate::clock::{Clock, CoarseClock};
use crate::extract::{AuditMessage, EventTime};
use crate::fingerprint::fingerprint;
use crate::ingest::{IngestBatch, IngestLine};
use crate::metrics::RefusedReason;
use crate::rules::TopicRules;
use crate::table::{
    DEFAULT_MAX_FUTURE_MS, DEFAULT_MAX_STREAMS, Observation, PartitionPosition, PerStream, ProgressBasis,
    StreamCapExceeded, StreamCounters, TallyTable, TierPositions,
};

/// Where a consumer stands in the partitions assigned to it. Asked once per flush, from the
/// flusher's task: it must answer from local state, never wait on the network.
pub trait PartitionProbe: Send + Sync + 'static {
    /// Every partition assigned now; `None` once the consumer is gone (the probe is then dropped).
    fn positions(&self) -> Option<Vec<PartitionPosition>>;
}

/// Counts messages into event-time tallies. Cheap to clone; clones share one table, and every
/// method may be called from any thread (librdkafka's delivery callbacks included).
///
/// ```
/// use kaudit_agent::{Auditor, AuditorOptions};
///
/// let auditor = Auditor::new(AuditorOptions::named("billing"));
/// auditor.record("orders", "producer", b"order-42", br#"{"amount":1999}"#, Some(1_700_000_000_000));
/// let batch = auditor.snapshot();
/// assert_eq!(batch.rows[0].tally.count, 1);
/// assert_eq!(batch.rows[0].key.bucket_start_ms, 1_699_999_980_000); // the 60 s bucket it falls in
/// assert!(batch.rows[0].key.agent_id.starts_with("billing-"));
/// ```
#[derive(Clone)]
pub struct Auditor {
    inner: Arc<Inner>,
}

/// A consumer probe and the tier its consumer counts as.
type TierProbe = (Arc<str>, Box<dyn PartitionProbe>);

struct Inner {
    /// The merged table: snapshots, ingest.
    table: Mutex<TallyTable>,
    /// Delta tables the clients' threads count into, folded into `table` at every snapshot.
    shards: Box<[Shard]>,
    probes: Mutex<Vec<TierProbe>>,
    rules: TopicRules,
    clock: Arc<dyn Clock>,
    agent_id: String,
    max_streams: usize,
    /// When the stream cap was last logged (at most every [`CAP_LOG_INTERVAL`]).
    cap_logged: Mutex<Option<Instant>>,
}

/// One delta table and the delivery failures counted with it, alone on its cache lines. A spin
/// lock: taking it is one compare-and-swap and releasing it one plain store (a `Mutex` pays a
/// second atomic swap to release, to wake sleepers; nobody sleeps on a shard). Clients' threads
/// only ever try it; the flusher, which may wait, spins on it, yielding its core.
#[repr(align(128))]
struct Shard(SpinMutex<Delta, Yield>);

struct Delta {
    table: TallyTable,
    failures: PerStream<u64>,
}

/// Shards per core: enough that a thread nearly always finds its home shard free (and if not, the
/// next), few enough that the deltas' memory bound (each as many buckets as the table) stays small.
const SHARDS_PER_CORE: usize = 2;
/// At most this many shards, however many cores (a power of two, as every shard count is).
const MAX_SHARDS: usize = 32;

/// Which shard each thread starts from: threads take the next number as they first count.
static NEXT_HOME: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static HOME: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's shard number (taken on first use), to be reduced modulo the shard count.
#[inline]
fn home() -> usize {
    HOME.with(|h| {
        let mut home = h.get();
        if home == usize::MAX {
            home = NEXT_HOME.fetch_add(1, Ordering::Relaxed);
            h.set(home);
        }
        home
    })
}

/// Refusals for the stream cap are logged at most this often.
const CAP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How to build an [`Auditor`].
pub struct AuditorOptions {
    /// Configured agent name; the agent id is this plus an instance id chosen at start.
    pub name: String,
    pub bucket_width: BucketWidth,
    /// How long after a bucket's end it stays open for late messages, in ms.
    pub close_after_ms: i64,
    pub rules: TopicRules,
    pub clock: Arc<dyn Clock>,
    /// Fix the instance id (tests); `None` picks a random one.
    pub instance_id: Option<String>,
    /// Most distinct (topic, tier) streams (see [`crate::table`]'s bounds).
    pub max_streams: usize,
    /// Event times further than this ahead of the clock count as malformed, ms.
    pub max_future_ms: i64,
    /// Most buckets open at once (see [`crate::table`]'s bounds).
    pub max_open_buckets: usize,
    /// The difference sketch of every row (`None`: rows carry counts only).
    pub sketch: Option<kaudit_schema::difference::Geometry>,
}

impl AuditorOptions {
    /// Defaults: 60 s buckets, kept open 10 min, key and Kafka timestamp for every topic.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            bucket_width: BucketWidth::DEFAULT,
            close_after_ms: 600_000,
            rules: TopicRules::default(),
            clock: Arc::new(CoarseClock),
            instance_id: None,
            max_streams: DEFAULT_MAX_STREAMS,
            max_future_ms: DEFAULT_MAX_FUTURE_MS,
            max_open_buckets: crate::table::DEFAULT_MAX_OPEN_BUCKETS,
            sketch: Some(kaudit_schema::difference::DEFAULT_GEOMETRY),
        }
    }
}

/// Extract and fingerprint `msg` by the rule for `topic` in `rules`.
#[inline(always)]
pub fn observe<M: AuditMessage + ?Sized>(rules: &TopicRules, topic: &str, msg: &M) -> Observation {
    let extracted = rules.rule_for(topic).extract(msg);
    let payload = msg.payload();
    Observation {
        fingerprint: fingerprint(&extracted.business_id, payload),
        bytes: payload.len() as u64,
        event_time: extracted.event_time,
        malformed_id: extracted.malformed_id,
        locator: None,
    }
}

/// A fresh random instance id: 12 hex digits, unique per agent start for all practical purposes.
pub fn new_instance_id() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

impl Auditor {
    pub fn new(options: AuditorOptions) -> Self {
        let instance = options.instance_id.unwrap_or_else(new_instance_id);
        let agent_id = format!("{}-{instance}", options.name);
        let mut table = TallyTable::new(agent_id.clone(), options.bucket_width, options.close_after_ms);
        table.set_started_at(options.clock.now_ms());
        table.set_max_streams(options.max_streams);
        table.set_max_future_ms(options.max_future_ms);
        table.set_max_open_buckets(options.max_open_buckets);
        table.set_sketch(options.sketch);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = (cores * SHARDS_PER_CORE).next_power_of_two().min(MAX_SHARDS);
        // The deltas' bucket bound: each may hold as many buckets as the table (the same bucket
        // in several deltas counts in each), shared so one busy thread may use the others' room.
        let delta_buckets = options.max_open_buckets.saturating_mul(shards);
        let shards = (0..shards)
            .map(|_| {
                let mut delta = table.delta();
                delta.set_max_open_buckets(delta_buckets);
                Shard(SpinMutex::new(Delta { table: delta, failures: PerStream::new() }))
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                table: Mutex::new(table),
                shards,
                probes: Mutex::default(),
                rules: options.rules,
                clock: options.clock,
                agent_id,
                max_streams: options.max_streams,
                cap_logged: Mutex::new(None),
            }),
        }
    }

    /// Count a validated ingest request, all or nothing, under one lock: `Err` (nothing counted,
    /// the records counted as refused) when its new streams would pass the stream cap. `Ok` is the
    /// number of snapshots taken before it was counted: its records are in the next one.
    pub fn count_batch(&self, batch: &IngestBatch) -> Result<u64, StreamCapExceeded> {
        let now = self.inner.clock.now_ms();
        let mut table = self.table();
        if let Err(e) = table.admit(batch.streams()) {
            table.refuse_for_stream_cap(batch.len() as u64);
            return Err(e);
        }
        for r in &batch.records {
            table.record(&r.topic, &r.tier, r.observation, now);
        }
        for p in &batch.progress {
            table.declare_progress(&p.topic, &p.tier, p.event_time_ms);
        }
        Ok(table.snapshots_taken())
    }

    /// Count valid UDP lines one by one, under one lock: a line of a new stream past the cap is
    /// refused (counted as refused), the others count. Returns (counted, refused).
    pub fn count_lines(&self, lines: &[IngestLine]) -> (u64, u64) {
        let now = self.inner.clock.now_ms();
        let mut table = self.table();
        let mut refused = 0;
        for line in lines {
            let (topic, tier) = line.stream();
            if !table.has_room_for(topic, tier) {
                refused += 1;
                continue;
            }
            match line {
                IngestLine::Record(r) => {
                    table.record(topic, tier, r.observation, now);
                }
                IngestLine::Progress(p) => table.declare_progress(topic, tier, p.event_time_ms),
            }
        }
        table.refuse_for_stream_cap(refused);
        (lines.len() as u64 - refused, refused)
    }

    /// Snapshots taken so far (see [`TallyTable::snapshots_taken`]).
    pub fn snapshots_taken(&self) -> u64 {
        self.table().snapshots_taken()
    }

    /// Cumulative rows of every tally changed since the last snapshot, and nothing else (no
    /// heartbeats, no progress, no bucket closes): an early flush for durable acknowledgements.
    pub fn snapshot_rows_only(&self) -> FlushBatch {
        let now = self.inner.clock.now_ms();
        self.merged(now).snapshot_rows_only(now)
    }

    /// Records refused or overflowed for the stream cap since the last call; logged at most every
    /// 10 s.
    pub fn take_refused(&self) -> u64 {
        self.take_refused_for(RefusedReason::StreamCap)
    }

    /// Records refused or diverted for `reason` since the last call; logged at most every 10 s.
    pub fn take_refused_for(&self, reason: RefusedReason) -> u64 {
        let now = self.inner.clock.now_ms();
        if reason == RefusedReason::BucketCap {
            let diverted = self.merged(now).take_refused_bucket_cap();
            if diverted > 0 {
                tracing::warn!(
                    diverted,
                    "messages that would open a bucket past agent.max_open_buckets counted as malformed in their \
                     arrival bucket"
                );
            }
            return diverted;
        }
        let refused = self.merged(now).take_refused_stream_cap();
        if refused > 0 {
            let mut logged = self.inner.cap_logged.lock().expect("cap log poisoned");
            if logged.is_none_or(|t| t.elapsed() >= CAP_LOG_INTERVAL) {
                *logged = Some(Instant::now());
                tracing::warn!(
                    refused,
                    cap = self.inner.max_streams,
                    "records of new (topic, tier) streams past agent.max_streams: refused (ingest) or counted as \
                     malformed in the ~overflow stream (Kafka clients); logged at most every 10 s"
                );
            }
        }
        refused
    }

    /// This agent's id: `name-instance`.
    pub fn agent_id(&self) -> &str {
        &self.inner.agent_id
    }

    /// Count a message given its parts. `event_time` is ms since the epoch; `None` counts it in
    /// the bucket of its arrival as `no_time`.
    pub fn record(&self, topic: &str, tier: &str, business_id: &[u8], payload: &[u8], event_time: Option<EpochMillis>) {
        let obs = Observation {
            fingerprint: fingerprint(business_id, payload),
            bytes: payload.len() as u64,
            event_time: event_time.map_or(EventTime::Missing, crate::extract::from_epoch_number),
            malformed_id: false,
            locator: None,
        };
        self.observe(topic, tier, obs);
    }

    /// Count a Kafka message, extracting id and event time by the rule for its topic.
    #[inline]
    pub fn record_message<M: AuditMessage + ?Sized>(&self, topic: &str, tier: &str, msg: &M) {
        let obs = self.observation(topic, msg);
        self.observe(topic, tier, obs);
    }

    /// Extract and fingerprint `msg` by its topic's rule, without counting it yet.
    #[inline(always)]
    pub fn observation<M: AuditMessage + ?Sized>(&self, topic: &str, msg: &M) -> Observation {
        observe(&self.inner.rules, topic, msg)
    }

    /// The extraction rule that applies to `topic`.
    pub fn rule_for(&self, topic: &str) -> &crate::extract::ExtractRule {
        self.inner.rules.rule_for(topic)
    }

    /// Count one message already extracted and fingerprinted: by [`Auditor::observation`], or by an
    /// app that hashed its own payload (ingest validates a whole request into observations first,
    /// then counts them here, so a bad record never leaves a request half counted).
    #[inline(always)]
    pub fn observe(&self, topic: &str, tier: &str, obs: Observation) {
        let now = self.inner.clock.now_ms();
        self.with_shard(|d| {
            d.table.record(topic, tier, obs, now);
        });
    }

    /// Count a message read from `partition` by a consumer, noting how far that partition is read.
    #[inline]
    pub fn record_read<M: AuditMessage + ?Sized>(&self, topic: &str, tier: &str, partition: i32, msg: &M) {
        self.record_read_at(topic, tier, partition, None, msg);
    }

    /// [`Auditor::record_read`] of the message at `offset` of `partition`: its row's sketch keeps
    /// where it lives, so a loss can be named with it.
    #[inline]
    pub fn record_read_at<M: AuditMessage + ?Sized>(
        &self,
        topic: &str,
        tier: &str,
        partition: i32,
        offset: Option<i64>,
        msg: &M,
    ) {
        let mut obs = self.observation(topic, msg);
        obs.locator = offset.map(|offset| kaudit_schema::difference::Locator { partition, offset });
        let now = self.inner.clock.now_ms();
        self.with_shard(|d| d.table.record_read(topic, tier, partition, obs, now));
    }

    /// The time `msg` is bucketed by (its event time, else now), reading only the event time.
    #[inline]
    pub fn bucket_time<M: AuditMessage + ?Sized>(&self, topic: &str, msg: &M) -> EpochMillis {
        self.bucket_time_of(self.inner.rules.rule_for(topic).event_time(msg))
    }

    /// The time a message with `event_time` is bucketed by if counted now.
    #[inline]
    pub fn bucket_time_of(&self, event_time: EventTime) -> EpochMillis {
        match event_time {
            EventTime::Valid(t) => t,
            EventTime::Missing | EventTime::Malformed => self.inner.clock.now_ms(),
        }
    }

    /// A message bucketed at `bucket_time` was handed to a producer: it is in flight, holding this
    /// stream's progress back, until [`Auditor::settle`] or [`Auditor::observe_delivered`].
    #[inline]
    pub fn hand_off(&self, topic: &str, tier: &str, bucket_time: EpochMillis) {
        self.with_shard(|d| d.table.hand_off(topic, tier, bucket_time));
    }

    /// A message handed off at `bucket_time` will not be delivered (or its fate is unknown).
    pub fn settle(&self, topic: &str, tier: &str, bucket_time: EpochMillis) {
        self.with_shard(|d| d.table.settle(topic, tier, bucket_time));
    }

    /// Count a delivered message and settle its hand-off, in one shard. `sent_bucket_time` is
    /// the bucket time of the hand-off when known (a future producer), else the delivered
    /// message's own is used (see [`TallyTable::settle`] for when they differ).
    #[inline]
    pub fn observe_delivered(&self, topic: &str, tier: &str, obs: Observation, sent_bucket_time: Option<EpochMillis>) {
        let now = self.inner.clock.now_ms();
        let sent = sent_bucket_time.unwrap_or(match obs.event_time {
            EventTime::Valid(t) => t,
            EventTime::Missing | EventTime::Malformed => now,
        });
        self.with_shard(|d| {
            d.table.record(topic, tier, obs, now);
            d.table.settle(topic, tier, sent);
        });
    }

    /// The app says it has reported everything of (topic, tier) with an event time before
    /// `event_time_ms` (an ingest progress record).
    pub fn declare_progress(&self, topic: &str, tier: &str, event_time_ms: EpochMillis) {
        self.table().declare_progress(topic, tier, event_time_ms);
    }

    /// What progress means for streams without partition positions: [`ProgressBasis::Delivery`]
    /// unless set (ingest sets [`ProgressBasis::LargestSeen`]).
    pub fn set_progress_basis(&self, basis: ProgressBasis) {
        self.table().set_progress_basis(basis);
    }

    /// Report the partitions of tier `tier` through `probe` at every snapshot, until it answers
    /// `None`.
    pub fn add_probe(&self, tier: &str, probe: Box<dyn PartitionProbe>) {
        self.inner.probes.lock().expect("probe list poisoned").push((tier.into(), probe));
    }

    /// Messages handed to a producer and not settled yet.
    pub fn in_flight(&self) -> u64 {
        self.merged(self.inner.clock.now_ms()).in_flight()
    }

    fn table(&self) -> MutexGuard<'_, TallyTable> {
        self.inner.table.lock().expect("tally table poisoned")
    }

    /// Run `f` on a shard's delta table without ever waiting for a lock: this thread's home shard
    /// if free, else the next free one. Only when every shard is held at the same moment (more
    /// threads counting at once than shards, or the flusher on the last free one) does it go
    /// round again, yielding its core first (a holder may have been preempted), never sleeping on
    /// a lock.
    #[inline]
    fn with_shard<R>(&self, f: impl FnOnce(&mut Delta) -> R) -> R {
        let shards = &self.inner.shards;
        let mask = shards.len() - 1;
        let mut i = home() & mask;
        loop {
            for _ in 0..shards.len() {
                if let Some(mut delta) = shards[i].0.try_lock() {
                    return f(&mut delta);
                }
                i = (i + 1) & mask;
            }
            std::thread::yield_now();
        }
    }

    /// The merged table, with every shard folded in: holds each shard's lock only while folding it.
    /// Delivery reports are taken from every shard first and applied after every hand-off (see
    /// [`TallyTable::take_settles`]).
    fn merged(&self, now: EpochMillis) -> MutexGuard<'_, TallyTable> {
        let mut table = self.table();
        let mut settles = Vec::new();
        for shard in &self.inner.shards {
            shard.0.lock().table.take_settles(&mut settles);
        }
        for shard in &self.inner.shards {
            table.absorb(&mut shard.0.lock().table, now);
        }
        for s in settles {
            table.settle_n(&s.topic, &s.tier, s.start, s.count);
        }
        table
    }

    /// Ask every probe; drop those whose consumer is gone.
    fn positions(&self) -> Vec<TierPositions> {
        let mut probes = self.inner.probes.lock().expect("probe list poisoned");
        let mut out = Vec::with_capacity(probes.len());
        probes.retain(|(tier, probe)| match probe.positions() {
            Some(p) => {
                out.push((tier.clone(), p));
                true
            }
            None => false,
        });
        out
    }

    /// Note a message that was *not* delivered (a producer's failed delivery report): it is not
    /// counted as sent, only reported in metrics.
    pub fn record_failure(&self, topic: &str, tier: &str) {
        self.with_shard(|d| match d.failures.iter_mut().find(|(t, r, _)| t == topic && r == tier) {
            Some(entry) => entry.2 += 1,
            None => d.failures.push((topic.to_string(), tier.to_string(), 1)),
        });
    }

    /// Cumulative rows of every tally changed since the last snapshot, with a heartbeat and the
    /// progress of every stream; closes old buckets.
    pub fn snapshot(&self) -> FlushBatch {
        let positions = self.positions();
        let now = self.inner.clock.now_ms();
        let mut table = self.merged(now);
        let mut batch = table.snapshot(now);
        table.add_progress(now, &positions, &mut batch);
        batch
    }

    /// Per-stream counters since the last call, and delivery failures, for metrics.
    pub fn take_counters(&self) -> (PerStream<StreamCounters>, PerStream<u64>) {
        let counters = self.merged(self.inner.clock.now_ms()).take_counters();
        let mut failures = PerStream::<u64>::new();
        for shard in &self.inner.shards {
            for (topic, tier, n) in std::mem::take(&mut shard.0.lock().failures) {
                match failures.iter_mut().find(|(t, r, _)| *t == topic && *r == tier) {
                    Some(entry) => entry.2 += n,
                    None => failures.push((topic, tier, n)),
                }
            }
        }
        (counters, failures)
    }

    /// Open buckets held in memory.
    pub fn open_buckets(&self) -> usize {
        self.merged(self.inner.clock.now_ms()).open_buckets()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::extract::OwnedMessage;

    #[test]
    fn clones_share_one_table_across_threads() {
        let clock = ManualClock::new(1_000_000);
        let auditor = Auditor::new(AuditorOptions {
            clock: Arc::new(clock.clone()),
            instance_id: Some("i1".into()),
            ..AuditorOptions::named("app")
        });
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let a = auditor.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u32 {
                        a.record("t", "consumer", format!("{n}-{i}").as_bytes(), b"p", Some(1_000_000));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let batch = auditor.snapshot();
        assert_eq!(batch.rows.len(), 1);
        assert_eq!(batch.rows[0].tally.count, 4000);
        assert_eq!(batch.rows[0].key.agent_id, "app-i1");
    }

    /// Hand-offs on the senders' threads, delivery reports on another, snapshots taken meanwhile:
    /// every message is in the snapshots exactly once and nothing stays in flight.
    #[test]
    fn threads_count_into_shards_while_snapshots_fold_them() {
        let auditor = Auditor::new(AuditorOptions {
            clock: Arc::new(ManualClock::new(1_000_000)),
            instance_id: Some("i1".into()),
            ..AuditorOptions::named("app")
        });
        assert!(auditor.inner.shards.len() >= SHARDS_PER_CORE);
        let (tx, rx) = std::sync::mpsc::sync_channel::<u32>(64);
        let senders: Vec<_> = (0..3u32)
            .map(|n| {
                let (a, tx) = (auditor.clone(), tx.clone());
                std::thread::spawn(move || {
                    for i in 0..2000u32 {
                        a.hand_off("t", "producer", 1_000_000);
                        tx.send(n * 10_000 + i).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let callback = {
            let a = auditor.clone();
            std::thread::spawn(move || {
                for id in rx {
                    let obs = Observation {
                        fingerprint: fingerprint(&id.to_be_bytes(), b"p"),
                        bytes: 1,
                        event_time: EventTime::Valid(1_000_000),
                        malformed_id: false,
                        locator: None,
                    };
                    if id % 100 == 0 {
                        a.record_failure("t", "producer");
                        a.settle("t", "producer", 1_000_000);
                    } else {
                        a.observe_delivered("t", "producer", obs, Some(1_000_000));
                    }
                }
            })
        };
        let mut latest = None;
        while !callback.is_finished() {
            if let Some(row) = auditor.snapshot().rows.pop() {
                latest = Some(row.tally);
            }
        }
        senders.into_iter().for_each(|t| t.join().unwrap());
        callback.join().unwrap();
        if let Some(row) = auditor.snapshot().rows.pop() {
            latest = Some(row.tally);
        }
        let tally = latest.expect("counted");
        assert_eq!(tally.count, 3 * 2000 - 3 * 20, "cumulative: the last row has every delivered message");
        let sent: u64 = (0..3u32)
            .flat_map(|n| (0..2000u32).map(move |i| n * 10_000 + i))
            .filter(|id| id % 100 != 0)
            .fold(0, |x, id| x ^ fingerprint(&id.to_be_bytes(), b"p"));
        assert_eq!(tally.fp_xor, sent);
        assert_eq!(auditor.in_flight(), 0);
        let (_, failures) = auditor.take_counters();
        assert_eq!(failures, vec![("t".to_string(), "producer".to_string(), 60)]);
    }

    /// While the flusher (here the test) holds every shard but one, a client's thread still counts
    /// at once, in the free one; the count is in the next snapshot.
    #[test]
    fn a_thread_whose_shard_is_held_counts_in_another_without_waiting() {
        let auditor = Auditor::new(AuditorOptions {
            clock: Arc::new(ManualClock::new(1_000_000)),
            instance_id: Some("i1".into()),
            ..AuditorOptions::named("app")
        });
        let shards = &auditor.inner.shards;
        let held: Vec<_> = shards[..shards.len() - 1].iter().map(|s| s.0.lock()).collect();
        // Four threads: their home shards differ (threads take the next home as they first count),
        // so at least one of them starts on a held shard.
        let counting: Vec<_> = (0..4u32)
            .map(|n| {
                let a = auditor.clone();
                std::thread::spawn(move || {
                    for i in 0..25u32 {
                        a.record("t", "consumer", &(n * 100 + i).to_be_bytes(), b"p", Some(1_000_000));
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !counting.iter().all(|t| t.is_finished()) {
            assert!(Instant::now() < deadline, "a counting thread waited for a held shard");
            std::thread::sleep(Duration::from_millis(1));
        }
        counting.into_iter().for_each(|t| t.join().unwrap());
        assert!(held.iter().all(|d| d.table.open_buckets() == 0), "the held shards were not touched");
        drop(held);
        assert_eq!(auditor.snapshot().rows[0].tally.count, 100);
    }

    /// Threads counting the same buckets (each in its own shard) are not held to the bucket cap
    /// once per shard: the cap counts the table's buckets, not their copies.
    #[test]
    fn threads_counting_the_same_buckets_stay_under_the_bucket_cap() {
        const T0: i64 = 1_700_000_040_000; // a minute boundary, in ms since the epoch
        let auditor = Auditor::new(AuditorOptions {
            clock: Arc::new(ManualClock::new(T0 + 10 * 60_000)),
            instance_id: Some("i1".into()),
            max_open_buckets: 2,
            ..AuditorOptions::named("app")
        });
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4u32)
            .map(|n| {
                let (a, barrier) = (auditor.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..50u32 {
                        let event = if i % 2 == 0 { T0 + 8 * 60_000 } else { T0 + 9 * 60_000 };
                        a.record("t", "consumer", &(n * 100 + i).to_be_bytes(), b"p", Some(event));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(auditor.take_refused_for(RefusedReason::BucketCap), 0);
        let counts: Vec<_> = auditor.snapshot().rows.iter().map(|r| (r.key.bucket_start_ms, r.tally.count)).collect();
        assert_eq!(counts, vec![(T0 + 8 * 60_000, 100), (T0 + 9 * 60_000, 100)]);
    }

    #[test]
    fn records_messages_by_topic_rule_and_failures_apart() {
        let auditor =
            Auditor::new(AuditorOptions { clock: Arc::new(ManualClock::new(5_000)), ..AuditorOptions::named("a") });
        let msg =
            OwnedMessage { key: Some(b"k".to_vec()), payload: b"hello".to_vec(), timestamp_ms: None, headers: vec![] };
        auditor.record_message("t", "producer", &msg);
        auditor.record_failure("t", "producer");
        auditor.record_failure("t", "producer");
        let row = &auditor.snapshot().rows[0];
        assert_eq!((row.tally.count, row.tally.no_time, row.tally.bytes), (1, 1, 5));
        assert_eq!(row.tally.fp_xor, fingerprint(b"k", b"hello"));
        let (counters, failures) = auditor.take_counters();
        assert_eq!(counters[0].2.messages, 1);
        assert_eq!(failures, vec![("t".to_string(), "producer".to_string(), 2)]);
    }

    struct Probe(Arc<Mutex<Option<Vec<PartitionPosition>>>>);

    impl PartitionProbe for Probe {
        fn positions(&self) -> Option<Vec<PartitionPosition>> {
            self.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn probes_report_partitions_until_their_consumer_is_gone() {
        let auditor =
            Auditor::new(AuditorOptions { clock: Arc::new(ManualClock::new(90_000)), ..AuditorOptions::named("c") });
        let answer =
            Arc::new(Mutex::new(Some(vec![PartitionPosition { topic: "t".into(), partition: 3, caught_up: true }])));
        auditor.add_probe("consumer", Box::new(Probe(answer.clone())));
        let msg = OwnedMessage { key: None, payload: vec![], timestamp_ms: Some(80_000), headers: vec![] };
        auditor.record_read("t", "consumer", 3, &msg);
        let batch = auditor.snapshot();
        let got: Vec<_> = batch.progress.iter().map(|p| (p.stream.to_string(), p.watermark_ms, p.caught_up)).collect();
        assert_eq!(got, vec![("p:3".to_string(), 80_000, true)]);
        assert_eq!(batch.heartbeats[0].started_at_ms, 90_000);

        *answer.lock().unwrap() = None; // the consumer was dropped
        assert!(auditor.snapshot().progress.is_empty(), "its partitions' last reports stand");
        assert!(auditor.inner.probes.lock().unwrap().is_empty(), "the probe was dropped");
    }

    #[test]
    fn instance_ids_differ_between_starts() {
        let a = Auditor::new(AuditorOptions::named("x"));
        let b = Auditor::new(AuditorOptions::named("x"));
        assert_ne!(a.agent_id(), b.agent_id());
        assert!(a.agent_id().starts_with("x-"));
    }
}
