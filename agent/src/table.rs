//! The in-memory table of open tallies: one per (topic, tier, event-time bucket).
//!
//! The hot path ([`TallyTable::record`]) finds its stream by comparing with the previous call's,
//! else by one hash probe on borrowed `(topic, tier)` without allocating; it then finds its bucket in a short vector searched from the newest end (a stream rarely
//! has more than two or three open buckets) and updates the tally in place.
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

use std::hash::{Hash, Hasher};

use hashbrown::{Equivalent, HashMap};
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

#[derive(Debug)]
struct OpenBucket {
    start: EpochMillis,
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
}

#[derive(Debug)]
struct Stream {
    key: StreamKey,
    buckets: Vec<OpenBucket>,
    counters: StreamCounters,
    /// Start of the oldest bucket the latest snapshot wrote; `None`: it wrote nothing.
    open_from: Option<EpochMillis>,
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
}

/// "No time yet" in [`StreamProgress`].
const NONE: EpochMillis = EpochMillis::MIN;

impl Default for StreamProgress {
    fn default() -> Self {
        Self { max_time: NONE, partitions: Vec::new(), per_partition: false, in_flight: Vec::new(), declared: NONE }
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
    /// Streams in order of first sight; never removed (one per topic × tier seen).
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
}

/// One message, ready to be counted.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    pub fingerprint: u64,
    pub bytes: u64,
    pub event_time: EventTime,
    /// The business id could not be extracted: count the message as malformed.
    pub malformed_id: bool,
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
        let stream = self.stream_mut(topic, tier);
        match stream.buckets.iter_mut().find(|b| b.start == bucket_start) {
            Some(b) => b.tally = tally,
            None => stream.buckets.push(OpenBucket { start: bucket_start, late_generation: 0, tally, dirty: false }),
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
        }
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
    #[inline]
    pub fn record(&mut self, topic: &str, tier: &str, obs: Observation, arrival_ms: EpochMillis) {
        let bucket_time = bucket_time(obs.event_time, arrival_ms);
        let latency = match obs.event_time {
            EventTime::Valid(t) => Some(arrival_ms.saturating_sub(t)),
            EventTime::Missing | EventTime::Malformed => None,
        };
        let start = self.width.start_of(bucket_time);
        let late = start < self.frontier;
        let late_generation = if late { self.late_generation } else { 0 };
        let stream = self.stream_mut(topic, tier);
        stream.progress.max_time = stream.progress.max_time.max(bucket_time);
        let c = &mut stream.counters;
        c.messages += 1;
        c.bytes += obs.bytes;
        c.late += late as u64;
        let bucket = match stream.buckets.iter().rposition(|b| b.start == start) {
            Some(i) => &mut stream.buckets[i],
            None => {
                stream.buckets.push(OpenBucket { start, late_generation, tally: Tally::default(), dirty: true });
                stream.buckets.last_mut().expect("just pushed")
            }
        };
        let t = &mut bucket.tally;
        t.add(obs.fingerprint, obs.bytes);
        match obs.event_time {
            EventTime::Valid(_) => {}
            EventTime::Missing => {
                t.no_time += 1;
                stream.counters.no_time += 1;
            }
            EventTime::Malformed => {
                t.malformed += 1;
                stream.counters.malformed += 1;
            }
        }
        if obs.malformed_id && obs.event_time != EventTime::Malformed {
            t.malformed += 1;
            stream.counters.malformed += 1;
        }
        if let Some(l) = latency {
            t.latency.record(l);
        }
        bucket.dirty = true;
    }

    /// Count one message read from `partition` (consumer wrappers), noting how far that partition
    /// has been read.
    #[inline]
    pub fn record_read(&mut self, topic: &str, tier: &str, partition: i32, obs: Observation, arrival_ms: EpochMillis) {
        self.record(topic, tier, obs, arrival_ms);
        let time = bucket_time(obs.event_time, arrival_ms);
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
        let in_flight = &mut self.stream_mut(topic, tier).progress.in_flight;
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
        let in_flight = &mut self.stream_mut(topic, tier).progress.in_flight;
        if in_flight.is_empty() {
            return;
        }
        let i = match in_flight.iter().rposition(|(b, _)| *b == start) {
            Some(i) => i,
            None => in_flight.iter().enumerate().min_by_key(|(_, (b, _))| *b).map(|(i, _)| i).expect("not empty"),
        };
        in_flight[i].1 -= 1;
        if in_flight[i].1 == 0 {
            in_flight.remove(i);
        }
    }

    /// The app says it has reported everything of (topic, tier) before `event_time_ms` (ingest).
    pub fn declare_progress(&mut self, topic: &str, tier: &str, event_time_ms: EpochMillis) {
        let p = &mut self.stream_mut(topic, tier).progress;
        p.declared = p.declared.max(event_time_ms);
    }

    /// Messages handed to a producer and not settled yet, over all streams.
    pub fn in_flight(&self) -> u64 {
        self.streams.iter().flat_map(|s| &s.progress.in_flight).map(|(_, n)| n).sum()
    }

    #[inline]
    fn stream_mut(&mut self, topic: &str, tier: &str) -> &mut Stream {
        let hit = self.streams.get(self.last).is_some_and(|s| *s.key.topic == *topic && *s.key.tier == *tier);
        if !hit {
            self.last = match self.index.get(&StreamRef(topic, tier)) {
                Some(&i) => i,
                None => self.add_stream(topic, tier),
            };
        }
        &mut self.streams[self.last]
    }

    #[cold]
    fn add_stream(&mut self, topic: &str, tier: &str) -> usize {
        let key = StreamKey { topic: topic.into(), tier: tier.into() };
        self.index.insert(key.clone(), self.streams.len());
        self.streams.push(Stream {
            key,
            buckets: Vec::new(),
            counters: StreamCounters::default(),
            open_from: None,
            progress: StreamProgress::default(),
        });
        self.streams.len() - 1
    }

    /// Every dirty tally as a cumulative row, then drop buckets closed at `now_ms`.
    ///
    /// Versions are microseconds of `now_ms`, bumped past the previous snapshot's so they grow
    /// strictly per agent even when the clock stalls or steps back.
    pub fn snapshot(&mut self, now_ms: EpochMillis) -> FlushBatch {
        let version = (now_ms.max(0) as u64 * 1000).max(self.last_version + 1);
        self.last_version = version;
        let new_frontier = self.width.start_of(now_ms.saturating_sub(self.close_after_ms));
        let mut rows = Vec::new();
        for stream in &mut self.streams {
            let key = &stream.key;
            stream.open_from = None;
            for b in stream.buckets.iter_mut().filter(|b| b.dirty) {
                b.dirty = false;
                stream.open_from = Some(stream.open_from.map_or(b.start, |o| o.min(b.start)));
                let agent_id = match b.late_generation {
                    0 => self.agent_id.clone(),
                    g => format!("{}~late{g}", self.agent_id),
                };
                rows.push(TallyRow {
                    key: TallyKey {
                        topic: key.topic.to_string(),
                        bucket_start_ms: b.start,
                        tier: key.tier.to_string(),
                        agent_id,
                    },
                    bucket_width_ms: self.width.as_millis(),
                    version,
                    tally: b.tally.clone(),
                });
            }
        }
        if new_frontier > self.frontier {
            for stream in &mut self.streams {
                stream.buckets.retain(|b| b.start >= new_frontier);
            }
            self.frontier = new_frontier;
            self.late_generation += 1;
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
                let i = self.stream_index(&p.topic, tier);
                self.streams[i].progress.per_partition = true;
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

/// The time a message is bucketed by: its event time, else its arrival.
#[inline]
fn bucket_time(event_time: EventTime, arrival_ms: EpochMillis) -> EpochMillis {
    match event_time {
        EventTime::Valid(t) => t,
        EventTime::Missing | EventTime::Malformed => arrival_ms,
    }
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
