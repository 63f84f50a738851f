//! The in-memory table of open tallies: one per (topic, tier, event-time bucket).
//!
//! The hot path ([`TallyTable::record`]) finds its stream by comparing with the previous call's,
//! else by one hash probe on borrowed `(topic, tier)` without allocating; it then finds its bucket
//! by comparing with the stream's newest bucket (where nearly every message lands), else in an
//! ordered map of the stream's open buckets (`O(log n)`, however many late or odd buckets a
//! stream holds), and updates the tally in place.
//!
//! ## Bounds
//! * Streams: at most `max_streams` distinct (topic, tier) pairs ([`TallyTable::set_max_streams`]).
//!   Past it, a message of a new stream is counted as malformed (in its arrival bucket) in the one
//!   *overflow stream* ([`OVERFLOW_TOPIC`], [`OVERFLOW_TIER`]: `~` is not allowed in Kafka topic
//!   names, so it names no real topic) and in the `stream_cap` refusal counter; ingest checks
//!   [`TallyTable::admit`] first and refuses such records instead (see `crate::ingest_server`).
//! * Future event times: an event time more than `max_future_ms` ahead of the arrival time is
//!   counted as malformed, in the arrival bucket, so a bucket far in the future (which would never
//!   close) is never opened.
//!
//! ## Closing buckets and late messages
//! A bucket closes once `now >= bucket_end + close_after`; the snapshot that sees it closed emits
//! its final value and drops it from memory (the flusher's backlog owns that value until the store
//! has it). All buckets before the *eviction frontier* are closed. A message that arrives later for
//! such a bucket cannot reuse the row: a fresh tally would overwrite the stored cumulative value
//! with a smaller one. It opens a *late row* instead, written under `"{agent_id}~late{generation}"`.
//! The generation grows every time the frontier moves, and every bucket before the frontier is
//! dropped when it moves, so a (bucket, generation) row is only ever written while it is in memory.
//!
//! ## Progress and liveness
//! Each stream also keeps, under the same lock and without allocating per message, what its
//! heartbeat and progress report need ([`TallyTable::add_progress`], once per flush): the start of
//! the oldest bucket the latest snapshot wrote (`open_from`), the largest bucket time counted
//! (overall and per partition read), the messages handed to a producer and not yet settled, by
//! bucket, and the progress an app declared. What a stream reports:
//!
//! * streams of a tier a consumer probe reports positions for: one row per assigned partition,
//!   the largest bucket time read there, caught up when the position reached the high watermark;
//! * otherwise, with [`ProgressBasis::Delivery`] (the default): the start of the oldest bucket
//!   still in flight, caught up when nothing is; a stream that never counts hand-offs (a bare
//!   producer context, direct `record` calls) is therefore caught up at every flush, and only the
//!   verifier's time grace guards it, as before progress existed;
//! * with [`ProgressBasis::LargestSeen`] (ingest): the largest event time seen or declared. A
//!   stream whose app never sent a progress record is caught up (at the report's time) when
//!   nothing was counted since the previous flush, so an app that knows nothing of progress and
//!   goes quiet is judged by time, as before; one that sends progress records is held exactly
//!   where they say.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hashbrown::{Equivalent, HashMap};
use kaudit_schema::difference::{DifferenceSketch, Geometry};
use kaudit_schema::progress::{HeartbeatRow, ProgressRow, StreamId};
use kaudit_schema::{BucketWidth, EpochMillis, FlushBatch, Tally, TallyKey, TallyRow};

use crate::extract::EventTime;

#[derive(Debug, Clone, PartialEq, Eq)]
struct StreamKey {
    topic: Box<str>,
    tier: Box<str>,
}

impl Hash for StreamKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        StreamRef(&self.topic, &self.tier).hash(h)
    }
}

/// Borrowed form of [`StreamKey`], hashing identically.
struct StreamRef<'a>(&'a str, &'a str);

impl Hash for StreamRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.hash(h);
        self.1.hash(h);
    }
}

impl Equivalent<StreamKey> for StreamRef<'_> {
    fn equivalent(&self, key: &StreamKey) -> bool {
        *key.topic == *self.0 && *key.tier == *self.1
    }
}

/// Topic of the overflow stream that counts messages of streams past the cap.
pub const OVERFLOW_TOPIC: &str = "~overflow";
/// Tier of the overflow stream.
pub const OVERFLOW_TIER: &str = "~overflow";
/// Default `max_open_buckets`: 20,000 open buckets across all streams (each holds a tally with a
/// latency histogram of a few KiB).
pub const DEFAULT_MAX_OPEN_BUCKETS: usize = 20_000;

/// Default `max_streams`: 10,000 distinct (topic, tier) streams.
pub const DEFAULT_MAX_STREAMS: usize = 10_000;
/// Default `max_future_ms`: event times up to one hour ahead of the clock are taken as real.
pub const DEFAULT_MAX_FUTURE_MS: i64 = 3_600_000;

#[derive(Debug)]
struct OpenBucket {
    /// 0 for a bucket opened before it closed; otherwise the late generation it was reopened in.
    late_generation: u64,
    tally: Tally,
    dirty: bool,
}

/// Values per (topic, tier) stream.
pub type PerStream<T> = Vec<(String, String, T)>;

/// Running totals of one stream, for metrics: read and reset by the flusher.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamCounters {
    pub messages: u64,
    pub bytes: u64,
    pub no_time: u64,
    pub malformed: u64,
    pub late: u64,
    /// Event times further ahead than `max_future_ms` (also counted in `malformed`).
    pub future: u64,
}

#[derive(Debug)]
struct Stream {
    key: StreamKey,
    /// Open buckets by start.
    buckets: BTreeMap<EpochMillis, OpenBucket>,
    counters: StreamCounters,
    /// Start of the oldest bucket the latest full snapshot (with any rows-only snapshots since the
    /// one before it) wrote; `None`: they wrote nothing.
    open_from: Option<EpochMillis>,
    /// Start of the oldest bucket rows-only snapshots wrote since the latest full one.
    written_from: Option<EpochMillis>,
    progress: StreamProgress,
}

/// What a stream's progress report rests on, kept with its tallies.
#[derive(Debug)]
struct StreamProgress {
    /// Largest bucket time counted (the event time, else the arrival time), ms; `NONE` before any.
    max_time: EpochMillis,
    /// Largest bucket time read per partition, indexed by partition number (consumer wrappers).
    partitions: Vec<EpochMillis>,
    /// A consumer probe reports this stream's tier: progress is per partition.
    per_partition: bool,
    /// Messages handed to a producer without a delivery report yet: (bucket start, count), none zero.
    in_flight: Vec<(EpochMillis, u64)>,
    /// Event time up to which the app said it has reported everything (ingest); `NONE` before.
    declared: EpochMillis,
    /// Delivery reports of a delta table, by the bucket they name: (bucket start, count), applied
    /// to the merged table after every hand-off (see [`TallyTable::take_settles`]).
    settled: Vec<(EpochMillis, u64)>,
}

/// "No time yet" in [`StreamProgress`].
const NONE: EpochMillis = EpochMillis::MIN;

impl Default for StreamProgress {
    fn default() -> Self {
        Self {
            max_time: NONE,
            partitions: Vec::new(),
            per_partition: false,
            in_flight: Vec::new(),
            declared: NONE,
            settled: Vec::new(),
        }
    }
}

/// What the progress of streams without per-partition positions means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProgressBasis {
    /// Producers: the oldest bucket with a message still in flight; caught up when none is.
    #[default]
    Delivery,
    /// Ingest: the largest event time seen or declared; without progress records, caught up when
    /// quiet since the last flush.
    LargestSeen,
}

/// Where a consumer stands in one partition assigned to it, reported at a flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPosition {
    pub topic: String,
    pub partition: i32,
    /// The consumer's position has reached the partition's high watermark.
    pub caught_up: bool,
}

/// Positions of every partition assigned to the consumers of one tier.
pub type TierPositions = (std::sync::Arc<str>, Vec<PartitionPosition>);

/// Open tallies of one agent.
#[derive(Debug)]
pub struct TallyTable {
    width: BucketWidth,
    close_after_ms: i64,
    agent_id: String,
    /// Streams in order of first sight; never removed (one per topic × tier seen, at most
    /// `max_streams` of them, and the overflow stream).
    streams: Vec<Stream>,
    index: HashMap<StreamKey, usize>,
    /// The stream of the previous `record`: most callers record runs of one topic and tier, and
    /// two short string compares beat hashing both strings.
    last: usize,
    frontier: EpochMillis,
    late_generation: u64,
    last_version: u64,
    /// When the agent started, for its heartbeats.
    started_at_ms: EpochMillis,
    basis: ProgressBasis,
    max_streams: usize,
    max_future_ms: i64,
    /// Most buckets open at once across all streams; past it a message that would open one more
    /// counts as malformed in its arrival bucket.
    max_open_buckets: usize,
    /// Buckets open now, across all streams.
    open_count: usize,
    /// Messages diverted by the bucket cap since last taken.
    refused_bucket_cap: u64,
    /// Index of the overflow stream, once it exists.
    overflow: Option<usize>,
    /// Messages and records refused or overflowed because of the stream cap, since last taken.
    refused_stream_cap: u64,
    /// Snapshots taken (full and rows-only).
    snapshots: u64,
    /// The geometry of each new bucket's difference sketch; `None`: counts only.
    sketch: Option<Geometry>,
    /// A delta table ([`TallyTable::delta`]): counts since the last [`TallyTable::absorb`], never
    /// snapshotted; its delivery reports wait in `settled`.
    delta: bool,
    /// Buckets open in this table's deltas, all of them: a delta opens one only while this is
    /// under the delta's `max_open_buckets` (a memory bound on the deltas together, where a bucket
    /// open in several deltas counts once in each; the table's own cap applies when they are
    /// absorbed), and absorbing gives its buckets back.
    delta_buckets: Arc<AtomicUsize>,
    /// A delta's hand-offs and delivery reports of streams past its own stream cap, kept by name
    /// so the table resolves both the same way (its own stream or its overflow stream) when they
    /// are folded in, whichever deltas they were counted in.
    spilled_hand_offs: Vec<Settles>,
    spilled_settles: Vec<Settles>,
}

/// One message, ready to be counted.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    pub fingerprint: u64,
    pub bytes: u64,
    pub event_time: EventTime,
    /// The business id could not be extracted: count the message as malformed.
    pub malformed_id: bool,
    /// Where the message lives in Kafka, when this tier knows: kept in the row's sketch.
    pub locator: Option<kaudit_schema::difference::Locator>,
}

impl TallyTable {
    /// A table that resumes at `now_ms` an agent id whose rows are already in the store: buckets
    /// closed by `now_ms` count as closed from the start (a late message for one opens a late row,
    /// never the stored row), and late generations start at `now_ms`, so they differ from any a
    /// previous run of the same agent id used.
    pub fn resuming(agent_id: impl Into<String>, width: BucketWidth, close_after_ms: i64, now_ms: EpochMillis) -> Self {
        let mut t = Self::new(agent_id, width, close_after_ms);
        t.frontier = width.start_of(now_ms.saturating_sub(t.close_after_ms));
        t.late_generation = now_ms.max(1) as u64;
        t
    }

    /// Put back a stored cumulative tally (not dirty: the store has it).
    pub fn seed(&mut self, topic: &str, tier: &str, bucket_start: EpochMillis, tally: Tally) {
        debug_assert!(!self.delta, "a delta table is never seeded");
        let i = self.stream_index(topic, tier);
        let bucket = OpenBucket { late_generation: 0, tally, dirty: false };
        if self.streams[i].buckets.insert(bucket_start, bucket).is_none() {
            self.open_count += 1;
        }
    }

    /// An empty table for `agent_id`, with buckets of `width` kept open `close_after_ms` past their end.
    pub fn new(agent_id: impl Into<String>, width: BucketWidth, close_after_ms: i64) -> Self {
        Self {
            width,
            close_after_ms: close_after_ms.max(0),
            agent_id: agent_id.into(),
            streams: Vec::new(),
            index: HashMap::new(),
            last: usize::MAX,
            frontier: EpochMillis::MIN,
            late_generation: 0,
            last_version: 0,
            started_at_ms: 0,
            basis: ProgressBasis::Delivery,
            max_streams: DEFAULT_MAX_STREAMS,
            max_future_ms: DEFAULT_MAX_FUTURE_MS,
            max_open_buckets: DEFAULT_MAX_OPEN_BUCKETS,
            open_count: 0,
            refused_bucket_cap: 0,
            overflow: None,
            refused_stream_cap: 0,
            snapshots: 0,
            sketch: Some(kaudit_schema::difference::DEFAULT_GEOMETRY),
            delta: false,
            delta_buckets: Arc::default(),
            spilled_hand_offs: Vec::new(),
            spilled_settles: Vec::new(),
        }
    }

    /// An empty *delta table* of this one: same bucket width and bounds, for one thread's (or
    /// shard's) counts between two [`TallyTable::absorb`]s into this table. It never snapshots and
    /// knows no frontier (whether a bucket is late is decided when it is absorbed); its delivery
    /// reports are kept apart, for [`TallyTable::take_settles`].
    pub fn delta(&self) -> TallyTable {
        let mut t = TallyTable::new(self.agent_id.clone(), self.width, self.close_after_ms);
        t.max_streams = self.max_streams;
        t.max_future_ms = self.max_future_ms;
        t.max_open_buckets = self.max_open_buckets;
        t.sketch = self.sketch;
        t.delta = true;
        t.delta_buckets = self.delta_buckets.clone();
        t
    }

    /// The difference sketch every new bucket's tally keeps (`None`: counts only). A sketch costs
    /// 40 bytes a cell per open bucket (3.2 KB at the default 80 cells), within `max_open_buckets`.
    pub fn set_sketch(&mut self, sketch: Option<Geometry>) {
        self.sketch = sketch;
    }

    /// At most `max_streams` distinct (topic, tier) streams; see the module doc.
    pub fn set_max_streams(&mut self, max_streams: usize) {
        self.max_streams = max_streams;
    }

    /// Past `max_open_buckets` open buckets, a message that would open another counts as
    /// malformed in its arrival bucket (far-past or scattered event times cannot exhaust memory).
    pub fn set_max_open_buckets(&mut self, max_open_buckets: usize) {
        self.max_open_buckets = max_open_buckets.max(1);
    }

    /// Messages diverted by the bucket cap since the last call.
    pub fn take_refused_bucket_cap(&mut self) -> u64 {
        std::mem::take(&mut self.refused_bucket_cap)
    }

    /// Event times more than `max_future_ms` ahead of the arrival time count as malformed.
    pub fn set_max_future_ms(&mut self, max_future_ms: i64) {
        self.max_future_ms = max_future_ms.max(0);
    }

    /// Snapshots taken so far, full and rows-only. A message counted when this was `n` is in
    /// snapshot `n + 1` (the `n + 1`-th) and, cumulatively, every later one that writes its bucket.
    pub fn snapshots_taken(&self) -> u64 {
        self.snapshots
    }

    /// Distinct (topic, tier) streams held, the overflow stream not included.
    pub fn streams(&self) -> usize {
        self.streams.len() - usize::from(self.overflow.is_some())
    }

    /// Whether a record of (topic, tier) would be counted in its own stream: it exists, or there
    /// is room for a new one.
    pub fn has_room_for(&self, topic: &str, tier: &str) -> bool {
        self.streams() < self.max_streams || self.index.contains_key(&StreamRef(topic, tier))
    }

    /// Check that the streams of a request fit under the cap, all or nothing: `Err` with the
    /// number of new streams (the request's distinct streams not held yet) when they do not.
    /// Nothing is added; the caller counts the request (adding its streams) under the same lock.
    pub fn admit<'a>(&self, streams: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), StreamCapExceeded> {
        let room = self.max_streams.saturating_sub(self.streams());
        let mut new: hashbrown::HashSet<(&str, &str)> = hashbrown::HashSet::new();
        for (topic, tier) in streams {
            if !self.index.contains_key(&StreamRef(topic, tier)) {
                new.insert((topic, tier));
            }
        }
        if new.len() <= room {
            return Ok(());
        }
        let mut sample: Vec<(String, String)> = new.iter().map(|(t, r)| (t.to_string(), r.to_string())).collect();
        sample.sort_unstable();
        sample.truncate(3);
        Err(StreamCapExceeded { cap: self.max_streams, held: self.streams(), new_streams: new.len(), sample })
    }

    /// Count `n` records refused for the stream cap (reported with the counters).
    pub fn refuse_for_stream_cap(&mut self, n: u64) {
        self.refused_stream_cap += n;
    }

    /// Records refused or overflowed for the stream cap since the last call.
    pub fn take_refused_stream_cap(&mut self) -> u64 {
        std::mem::take(&mut self.refused_stream_cap)
    }

    /// When the agent started (ms), as its heartbeats say.
    pub fn set_started_at(&mut self, started_at_ms: EpochMillis) {
        self.started_at_ms = started_at_ms;
    }

    /// What progress means for streams without partition positions.
    pub fn set_progress_basis(&mut self, basis: ProgressBasis) {
        self.basis = basis;
    }

    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The version of the latest snapshot (0 before the first).
    pub fn last_version(&self) -> u64 {
        self.last_version
    }

    pub fn width(&self) -> BucketWidth {
        self.width
    }

    /// Count one message seen at `arrival_ms`.
    ///
    /// Returns the time it was bucketed by.
    #[inline]
    pub fn record(&mut self, topic: &str, tier: &str, obs: Observation, arrival_ms: EpochMillis) -> EpochMillis {
        let (i, overflow) = self.locate(topic, tier);
        let future = matches!(obs.event_time, EventTime::Valid(t) if t > arrival_ms.saturating_add(self.max_future_ms));
        let mut event_time = if overflow || future { EventTime::Malformed } else { obs.event_time };
        let mut bucket_time = bucket_time(event_time, arrival_ms);
        let newest = self.streams[i].buckets.last_key_value().map(|(start, _)| *start);
        let mut start = start_near(self.width, newest, bucket_time);
        let mut diverted = false;
        if newest != Some(start) && !self.streams[i].buckets.contains_key(&start) && !self.room_for_a_bucket() {
            // No room for another bucket: count it where it arrived, as malformed.
            diverted = true;
            self.refused_bucket_cap += 1;
            event_time = EventTime::Malformed;
            bucket_time = arrival_ms;
            start = self.width.start_of(bucket_time);
        }
        let late = start < self.frontier;
        let late_generation = if late { self.late_generation } else { 0 };
        self.refused_stream_cap += overflow as u64;
        let Stream { buckets, counters: c, progress, .. } = &mut self.streams[i];
        progress.max_time = progress.max_time.max(bucket_time);
        c.messages += 1;
        c.bytes = c.bytes.saturating_add(obs.bytes);
        c.late += late as u64;
        c.future += future as u64;
        let (bucket, opened) = bucket_mut(buckets, start, late_generation, self.sketch);
        self.open_count += usize::from(opened);
        if opened && diverted && self.delta {
            // An arrival bucket opened past the cap (one per stream and bucket width at most):
            // taken from the deltas' count too, which absorbing gives back bucket by bucket.
            self.delta_buckets.fetch_add(1, Ordering::Relaxed);
        }
        let t = &mut bucket.tally;
        t.add_at(obs.fingerprint, obs.bytes, obs.locator);
        let malformed = match event_time {
            EventTime::Valid(event) => {
                t.latency.record(arrival_ms.saturating_sub(event));
                obs.malformed_id
            }
            EventTime::Missing => {
                t.no_time += 1;
                c.no_time += 1;
                obs.malformed_id
            }
            EventTime::Malformed => true,
        };
        if malformed {
            t.malformed += 1;
            c.malformed += 1;
        }
        bucket.dirty = true;
        bucket_time
    }

    /// Whether one more bucket may open: under `max_open_buckets` in this table; for a delta, under
    /// it across all deltas of its table (the slot is then taken).
    #[cold]
    fn room_for_a_bucket(&self) -> bool {
        if !self.delta {
            return self.open_count < self.max_open_buckets;
        }
        let taken = self.delta_buckets.fetch_add(1, Ordering::Relaxed);
        if taken < self.max_open_buckets {
            return true;
        }
        self.delta_buckets.fetch_sub(1, Ordering::Relaxed);
        false
    }

    /// Count one message read from `partition` (consumer wrappers), noting how far that partition
    /// has been read.
    #[inline]
    pub fn record_read(&mut self, topic: &str, tier: &str, partition: i32, obs: Observation, arrival_ms: EpochMillis) {
        let time = self.record(topic, tier, obs, arrival_ms);
        let read = &mut self.streams[self.last].progress.partitions;
        match read.get_mut(partition as usize) {
            Some(t) => *t = (*t).max(time),
            None => grow_partitions(read, partition, time),
        }
    }

    /// A message whose bucket time is `bucket_time` was handed to a producer: in flight until
    /// [`TallyTable::settle`].
    #[inline]
    pub fn hand_off(&mut self, topic: &str, tier: &str, bucket_time: EpochMillis) {
        let start = self.width.start_of(bucket_time);
        let (i, overflow) = self.locate(topic, tier);
        if overflow && self.delta {
            spill(&mut self.spilled_hand_offs, topic, tier, start);
            return;
        }
        let in_flight = &mut self.streams[i].progress.in_flight;
        match in_flight.iter_mut().rev().find(|(b, _)| *b == start) {
            Some((_, n)) => *n += 1,
            None => in_flight.push((start, 1)),
        }
    }

    /// A delivery report (success or failure) for a message handed off in the bucket of
    /// `bucket_time`. When that bucket has nothing in flight (the report's time differs from the
    /// hand-off's, e.g. a broker-stamped LogAppendTime), the oldest bucket in flight is settled
    /// instead: the total stays exact and the watermark errs towards holding back. Nothing in flight
    /// (a producer without an audited wrapper): nothing to do.
    #[inline]
    pub fn settle(&mut self, topic: &str, tier: &str, bucket_time: EpochMillis) {
        let start = self.width.start_of(bucket_time);
        let (i, overflow) = self.locate(topic, tier);
        if overflow && self.delta {
            spill(&mut self.spilled_settles, topic, tier, start);
            return;
        }
        let progress = &mut self.streams[i].progress;
        if self.delta {
            match progress.settled.iter_mut().rev().find(|(b, _)| *b == start) {
                Some((_, n)) => *n += 1,
                None => progress.settled.push((start, 1)),
            }
            return;
        }
        settle_in(&mut progress.in_flight, start, 1);
    }

    /// Take a delta table's delivery reports since the last call, as (topic, tier, bucket start,
    /// count). They are applied to the merged table ([`TallyTable::settle_n`]) only after every
    /// delta's hand-offs were absorbed: a report may be counted on another thread (so in another
    /// delta) than its hand-off, and taking every delta's reports *before* absorbing any hand-off
    /// means the hand-off of each report taken is absorbed by then (it happened before the report).
    pub fn take_settles(&mut self, out: &mut Vec<Settles>) {
        for stream in &mut self.streams {
            for (start, n) in stream.progress.settled.drain(..) {
                out.push(Settles { topic: stream.key.topic.clone(), tier: stream.key.tier.clone(), start, count: n });
            }
        }
        out.append(&mut self.spilled_settles);
    }

    /// `n` delivery reports naming the bucket starting at `start`: as `n` calls of
    /// [`TallyTable::settle`].
    pub fn settle_n(&mut self, topic: &str, tier: &str, start: EpochMillis, n: u64) {
        let (i, _) = self.locate(topic, tier);
        settle_in(&mut self.streams[i].progress.in_flight, start, n);
    }

    /// The app says it has reported everything of (topic, tier) before `event_time_ms` (ingest).
    /// Ignored for a stream past the cap (it would only hold back the overflow stream).
    pub fn declare_progress(&mut self, topic: &str, tier: &str, event_time_ms: EpochMillis) {
        if let (i, false) = self.locate(topic, tier) {
            let p = &mut self.streams[i].progress;
            p.declared = p.declared.max(event_time_ms);
        }
    }

    /// Messages handed to a producer and not settled yet, over all streams.
    pub fn in_flight(&self) -> u64 {
        self.streams.iter().flat_map(|s| &s.progress.in_flight).map(|(_, n)| n).sum()
    }

    /// The stream of (topic, tier), added if there is room under the cap; else the overflow
    /// stream, with `true`.
    #[inline]
    fn locate(&mut self, topic: &str, tier: &str) -> (usize, bool) {
        let hit = self.streams.get(self.last).is_some_and(|s| same(&s.key.topic, topic) && same(&s.key.tier, tier));
        if hit {
            return (self.last, false);
        }
        let (i, overflow) = match self.index.get(&StreamRef(topic, tier)) {
            Some(&i) => (i, false),
            None if self.streams() < self.max_streams => (self.add_stream(topic, tier), false),
            None => (self.overflow_stream(), true),
        };
        self.last = i;
        (i, overflow)
    }

    #[cold]
    fn overflow_stream(&mut self) -> usize {
        match self.overflow {
            Some(i) => i,
            None => {
                let i = self.add_stream(OVERFLOW_TOPIC, OVERFLOW_TIER);
                self.overflow = Some(i);
                i
            }
        }
    }

    #[cold]
    fn add_stream(&mut self, topic: &str, tier: &str) -> usize {
        let key = StreamKey { topic: topic.into(), tier: tier.into() };
        self.index.insert(key.clone(), self.streams.len());
        self.streams.push(Stream {
            key,
            buckets: BTreeMap::new(),
            counters: StreamCounters::default(),
            open_from: None,
            written_from: None,
            progress: StreamProgress::default(),
        });
        self.streams.len() - 1
    }

    /// Fold a delta table's counts ([`TallyTable::delta`]) into this one and empty it, as if each
    /// of its messages had been counted here now: a bucket before this table's frontier goes to a
    /// late row; a stream past this table's stream cap, and a bucket past its bucket cap, count as
    /// malformed in the bucket of `now_ms` (where such a message arriving now would), in the
    /// refusal counters too. Hand-offs, partitions read and counters add up; delivery reports stay
    /// in the delta for [`TallyTable::take_settles`]. Only empties and refills: the delta keeps its
    /// streams, so counting into it again allocates nothing but the buckets it opens.
    pub fn absorb(&mut self, delta: &mut TallyTable, now_ms: EpochMillis) {
        self.refused_stream_cap += std::mem::take(&mut delta.refused_stream_cap);
        self.refused_bucket_cap += std::mem::take(&mut delta.refused_bucket_cap);
        delta.delta_buckets.fetch_sub(delta.open_buckets(), Ordering::Relaxed);
        delta.open_count = 0;
        for (j, d) in delta.streams.iter_mut().enumerate() {
            let idle = d.buckets.is_empty()
                && d.progress.in_flight.is_empty()
                && d.progress.max_time == NONE
                && d.counters == StreamCounters::default();
            if idle {
                continue;
            }
            let (i, overflow) = if delta.overflow == Some(j) {
                (self.overflow_stream(), false) // counted as malformed already
            } else {
                self.locate(&d.key.topic, &d.key.tier)
            };
            let s = &mut self.streams[i];
            add_counters(&mut s.counters, std::mem::take(&mut d.counters));
            let p = &mut s.progress;
            p.max_time = p.max_time.max(std::mem::replace(&mut d.progress.max_time, NONE));
            for (partition, read) in d.progress.partitions.iter_mut().enumerate() {
                let time = std::mem::replace(read, NONE);
                if time == NONE {
                    continue;
                }
                match p.partitions.get_mut(partition) {
                    Some(t) => *t = (*t).max(time),
                    None => grow_partitions(&mut p.partitions, partition as i32, time),
                }
            }
            for (start, n) in d.progress.in_flight.drain(..) {
                match p.in_flight.iter_mut().rev().find(|(b, _)| *b == start) {
                    Some((_, m)) => *m += n,
                    None => p.in_flight.push((start, n)),
                }
            }
            for (start, bucket) in std::mem::take(&mut d.buckets) {
                self.absorb_bucket(i, overflow, start, bucket.tally, now_ms);
            }
        }
        for h in std::mem::take(&mut delta.spilled_hand_offs) {
            let (i, _) = self.locate(&h.topic, &h.tier);
            let in_flight = &mut self.streams[i].progress.in_flight;
            match in_flight.iter_mut().rev().find(|(b, _)| *b == h.start) {
                Some((_, n)) => *n += h.count,
                None => in_flight.push((h.start, h.count)),
            }
        }
        if delta.streams() >= delta.max_streams {
            delta.forget_idle_streams();
        }
    }

    /// Drop a delta's streams with nothing left in them (every one but those with delivery reports
    /// not taken yet). A delta that keeps every stream it ever counted would put streams past the
    /// cap into its own overflow stream, deciding apart from the merged table and the other deltas;
    /// forgetting them once it is full means only a delta counting more streams than the cap
    /// between two folds, with the table past its cap too, ever does.
    fn forget_idle_streams(&mut self) {
        self.streams.retain(|s| !s.progress.settled.is_empty());
        self.index.clear();
        self.overflow = None;
        for (i, s) in self.streams.iter().enumerate() {
            self.index.insert(s.key.clone(), i);
            if *s.key.topic == *OVERFLOW_TOPIC && *s.key.tier == *OVERFLOW_TIER {
                self.overflow = Some(i);
            }
        }
        self.last = usize::MAX;
    }

    /// Merge one delta bucket's tally into stream `i` (see [`TallyTable::absorb`]).
    fn absorb_bucket(
        &mut self,
        i: usize,
        overflow: bool,
        mut start: EpochMillis,
        mut tally: Tally,
        now_ms: EpochMillis,
    ) {
        let count = tally.count;
        let no_room =
            !overflow && self.open_count >= self.max_open_buckets && !self.streams[i].buckets.contains_key(&start);
        if overflow || no_room {
            if overflow {
                self.refused_stream_cap += count;
            } else {
                self.refused_bucket_cap += count;
            }
            let s = &mut self.streams[i];
            s.counters.malformed += count - tally.malformed;
            s.counters.no_time = s.counters.no_time.saturating_sub(tally.no_time);
            s.progress.max_time = s.progress.max_time.max(now_ms);
            tally.malformed = count;
            tally.no_time = 0;
            tally.latency = Default::default();
            start = self.width.start_of(now_ms);
        }
        let late = start < self.frontier;
        let late_generation = if late { self.late_generation } else { 0 };
        let s = &mut self.streams[i];
        s.counters.late += if late { count } else { 0 };
        let (bucket, opened) = bucket_mut(&mut s.buckets, start, late_generation, self.sketch);
        self.open_count += usize::from(opened);
        bucket.tally.merge(&tally);
        bucket.dirty = true;
    }

    /// Every dirty tally as a cumulative row, then drop buckets closed at `now_ms`.
    ///
    /// Versions are microseconds of `now_ms`, bumped past the previous snapshot's so they grow
    /// strictly per agent even when the clock stalls or steps back.
    pub fn snapshot(&mut self, now_ms: EpochMillis) -> FlushBatch {
        let batch = self.snapshot_rows(now_ms, true);
        let new_frontier = self.width.start_of(now_ms.saturating_sub(self.close_after_ms));
        if new_frontier > self.frontier {
            for stream in &mut self.streams {
                stream.buckets = stream.buckets.split_off(&new_frontier);
            }
            self.open_count = self.streams.iter().map(|s| s.buckets.len()).sum();
            self.frontier = new_frontier;
            self.late_generation += 1;
        }
        batch
    }

    /// Every dirty tally as a cumulative row, and nothing else: no bucket closes and the streams'
    /// `open_from` (what the next heartbeat says) keeps accumulating until the next full
    /// [`TallyTable::snapshot`]. For the early flushes that make ingest acknowledgements durable,
    /// between the regular ones.
    pub fn snapshot_rows_only(&mut self, now_ms: EpochMillis) -> FlushBatch {
        self.snapshot_rows(now_ms, false)
    }

    fn snapshot_rows(&mut self, now_ms: EpochMillis, full: bool) -> FlushBatch {
        debug_assert!(!self.delta, "a delta table is absorbed, never snapshotted");
        let version = (now_ms.max(0) as u64 * 1000).max(self.last_version + 1);
        self.last_version = version;
        self.snapshots += 1;
        let mut rows = Vec::new();
        for stream in &mut self.streams {
            let key = &stream.key;
            let mut oldest = stream.written_from.take();
            for (&start, b) in stream.buckets.iter_mut().filter(|(_, b)| b.dirty) {
                b.dirty = false;
                oldest = Some(oldest.map_or(start, |o| o.min(start)));
                let agent_id = match b.late_generation {
                    0 => self.agent_id.clone(),
                    g => format!("{}~late{g}", self.agent_id),
                };
                rows.push(TallyRow {
                    key: TallyKey {
                        topic: key.topic.to_string(),
                        bucket_start_ms: start,
                        tier: key.tier.to_string(),
                        agent_id,
                    },
                    bucket_width_ms: self.width.as_millis(),
                    version,
                    tally: b.tally.clone(),
                });
            }
            if full {
                stream.open_from = oldest;
            } else {
                stream.written_from = oldest;
            }
        }
        rows.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        FlushBatch { rows, ..FlushBatch::default() }
    }

    /// Start of the oldest bucket the latest snapshot wrote, over all streams.
    pub fn open_from(&self) -> Option<EpochMillis> {
        self.streams.iter().filter_map(|s| s.open_from).min()
    }

    /// Add to `batch` (the latest snapshot's) one heartbeat per stream and its progress (see the
    /// module doc), with the snapshot's version. `positions` are what the consumer probes of each
    /// tier report now; a stream of such a tier reports per partition, and a partition assigned
    /// but neither read nor caught up yet is left out (its last report, maybe by a previous owner,
    /// stands).
    pub fn add_progress(&mut self, now_ms: EpochMillis, positions: &[TierPositions], batch: &mut FlushBatch) {
        for (tier, assigned) in positions {
            for p in assigned {
                if let (i, false) = self.locate(&p.topic, tier) {
                    self.streams[i].progress.per_partition = true;
                }
            }
        }
        let version = self.last_version;
        for stream in &self.streams {
            let (topic, tier) = (&*stream.key.topic, &*stream.key.tier);
            batch.heartbeats.push(HeartbeatRow {
                topic: topic.to_string(),
                tier: tier.to_string(),
                agent_id: self.agent_id.clone(),
                started_at_ms: self.started_at_ms,
                heartbeat_ms: now_ms,
                open_from_ms: stream.open_from,
                stopped: false,
                resumes: false,
                version,
            });
            let row = |stream_id, watermark_ms, caught_up| ProgressRow {
                topic: topic.to_string(),
                tier: tier.to_string(),
                stream: stream_id,
                agent_id: self.agent_id.clone(),
                watermark_ms,
                caught_up,
                reported_at_ms: now_ms,
                version,
            };
            let p = &stream.progress;
            if p.per_partition {
                let assigned = positions.iter().filter(|(t, _)| **t == *tier).flat_map(|(_, a)| a);
                for pos in assigned.filter(|pos| pos.topic == topic) {
                    let read = p.partitions.get(pos.partition as usize).copied().unwrap_or(NONE);
                    if read != NONE || pos.caught_up {
                        let watermark = if read == NONE { now_ms } else { read };
                        batch.progress.push(row(StreamId::Partition(pos.partition), watermark, pos.caught_up));
                    }
                }
                continue;
            }
            let (watermark, caught_up) = match self.basis {
                // An app that sends progress records says itself how far it has got. One that
                // does not and has been quiet since the last flush holds nothing back here: it
                // may still send older records, which only the verifier's grace covers, as
                // before progress existed.
                ProgressBasis::LargestSeen => {
                    (p.max_time.max(p.declared), p.declared == NONE && stream.open_from.is_none())
                }
                ProgressBasis::Delivery => match p.in_flight.iter().map(|(b, _)| *b).min() {
                    Some(oldest) => (oldest, false),
                    None => (if p.max_time == NONE { now_ms } else { p.max_time }, true),
                },
            };
            batch.progress.push(row(StreamId::Agent(self.agent_id.clone()), watermark, caught_up));
        }
    }

    fn stream_index(&mut self, topic: &str, tier: &str) -> usize {
        match self.index.get(&StreamRef(topic, tier)) {
            Some(&i) => i,
            None => self.add_stream(topic, tier),
        }
    }

    /// Take the per-stream counters accumulated since the last call, for metrics.
    pub fn take_counters(&mut self) -> PerStream<StreamCounters> {
        self.streams
            .iter_mut()
            .filter(|s| s.counters != StreamCounters::default())
            .map(|s| (s.key.topic.to_string(), s.key.tier.to_string(), std::mem::take(&mut s.counters)))
            .collect()
    }

    /// Number of open buckets across all streams (bounded by streams × open window).
    pub fn open_buckets(&self) -> usize {
        self.streams.iter().map(|s| s.buckets.len()).sum()
    }
}

/// The open bucket starting at `start`, opened (in `late_generation`) if need be, and whether it was:
/// the newest bucket first, where nearly every message lands, then one look-up in the ordered map.
#[inline]
fn bucket_mut(
    buckets: &mut BTreeMap<EpochMillis, OpenBucket>,
    start: EpochMillis,
    late_generation: u64,
    sketch: Option<Geometry>,
) -> (&mut OpenBucket, bool) {
    if buckets.last_key_value().is_some_and(|(newest, _)| *newest == start) {
        return (buckets.last_entry().expect("not empty").into_mut(), false);
    }
    match buckets.entry(start) {
        std::collections::btree_map::Entry::Occupied(e) => (e.into_mut(), false),
        std::collections::btree_map::Entry::Vacant(e) => (e.insert(OpenBucket::new(late_generation, sketch)), true),
    }
}

impl OpenBucket {
    #[cold]
    fn new(late_generation: u64, sketch: Option<Geometry>) -> Self {
        let tally = Tally { sketch: sketch.map(DifferenceSketch::new), ..Tally::default() };
        Self { late_generation, tally, dirty: true }
    }
}

/// A request's new streams do not fit under the stream cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{new_streams} new (topic, tier) streams (e.g. {}) would pass this agent's cap of {cap} streams ({held} held); \
     raise agent.max_streams or send fewer distinct topics and tiers",
    sample_text(.sample)
)]
pub struct StreamCapExceeded {
    pub cap: usize,
    pub held: usize,
    pub new_streams: usize,
    /// Up to three of the new streams.
    pub sample: Vec<(String, String)>,
}

fn sample_text(sample: &[(String, String)]) -> String {
    sample.iter().map(|(topic, tier)| format!("{topic}/{tier}")).collect::<Vec<_>>().join(", ")
}

/// The time a message is bucketed by: its event time, else its arrival.
#[inline]
fn bucket_time(event_time: EventTime, arrival_ms: EpochMillis) -> EpochMillis {
    match event_time {
        EventTime::Valid(t) => t,
        EventTime::Missing | EventTime::Malformed => arrival_ms,
    }
}

fn add_counters(c: &mut StreamCounters, d: StreamCounters) {
    c.messages += d.messages;
    c.bytes = c.bytes.saturating_add(d.bytes);
    c.no_time += d.no_time;
    c.malformed += d.malformed;
    c.late += d.late;
    c.future += d.future;
}

/// `a == b`, inline: topic and tier names are short, and a call to `memcmp` for each costs more
/// than comparing them eight bytes at a time here (the last word overlapping the one before).
#[inline(always)]
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    if n < 8 {
        return a == b;
    }
    let mut at = 0;
    while at + 8 < n {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    word(a, n - 8) == word(b, n - 8)
}

/// The start of the bucket of `t`: `newest` (the start of a stream's newest bucket) when `t` falls
/// in it, as nearly every message's time does, without dividing; else by division.
#[inline(always)]
fn start_near(width: BucketWidth, newest: Option<EpochMillis>, t: EpochMillis) -> EpochMillis {
    match newest {
        Some(n) if t >= n && (t.wrapping_sub(n) as u64) < width.as_millis() as u64 => n,
        _ => width.start_of(t),
    }
}

/// Settle `n` hand-offs of the bucket starting at `start`: that bucket's first, then the oldest
/// bucket's (see [`TallyTable::settle`]); returns how many found nothing in flight.
fn settle_in(in_flight: &mut Vec<(EpochMillis, u64)>, start: EpochMillis, mut n: u64) -> u64 {
    while n > 0 && !in_flight.is_empty() {
        let i = match in_flight.iter().rposition(|(b, _)| *b == start) {
            Some(i) => i,
            None => in_flight.iter().enumerate().min_by_key(|(_, (b, _))| *b).map(|(i, _)| i).expect("not empty"),
        };
        let taken = n.min(in_flight[i].1);
        in_flight[i].1 -= taken;
        n -= taken;
        if in_flight[i].1 == 0 {
            in_flight.remove(i);
        }
    }
    n
}

/// Count one hand-off or report of (topic, tier) in the bucket starting at `start` by name (see
/// `TallyTable::spilled_hand_offs`), merged with the latest entries of the same key.
#[cold]
fn spill(list: &mut Vec<Settles>, topic: &str, tier: &str, start: EpochMillis) {
    let same = |s: &&mut Settles| s.start == start && *s.topic == *topic && *s.tier == *tier;
    match list.iter_mut().rev().take(16).find(same) {
        Some(s) => s.count += 1,
        None => list.push(Settles { topic: topic.into(), tier: tier.into(), start, count: 1 }),
    }
}

/// Delivery reports (or hand-offs) a delta table kept for one bucket of one stream
/// ([`TallyTable::take_settles`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settles {
    pub topic: Box<str>,
    pub tier: Box<str>,
    pub start: EpochMillis,
    pub count: u64,
}

#[cold]
fn grow_partitions(read: &mut Vec<EpochMillis>, partition: i32, time: EpochMillis) {
    if let Ok(p) = usize::try_from(partition) {
        read.resize(p + 1, NONE);
        read[p] = time;
    }
}

#[cfg(test)]
mod tests;
