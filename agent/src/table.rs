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

use std::hash::{Hash, Hasher};

use hashbrown::{Equivalent, HashMap};
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
}

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
        }
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
        let (bucket_time, latency) = match obs.event_time {
            EventTime::Valid(t) => (t, Some(arrival_ms.saturating_sub(t))),
            EventTime::Missing | EventTime::Malformed => (arrival_ms, None),
        };
        let start = self.width.start_of(bucket_time);
        let late = start < self.frontier;
        let late_generation = if late { self.late_generation } else { 0 };
        let stream = self.stream_mut(topic, tier);
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
        self.streams.push(Stream { key, buckets: Vec::new(), counters: StreamCounters::default() });
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
            for b in stream.buckets.iter_mut().filter(|b| b.dirty) {
                b.dirty = false;
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
        FlushBatch { rows, offsets: Vec::new() }
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

#[cfg(test)]
mod tests;
