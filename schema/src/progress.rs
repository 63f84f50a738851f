//! Progress and liveness at rest: how far each stream of a tier has got in event time, and which
//! agent instances are alive. The verifier derives each tier's *watermark* from these, and judges
//! an edge of a bucket only once both tiers have passed it (lag is not loss).
//!
//! * A **stream** is what one progress report is about. Kafka tiers (tap, consumer wrappers) report
//!   per partition ([`StreamId::Partition`]): the row belongs to the (topic, tier, partition), not
//!   to the process holding it, so when an owner dies its partition keeps holding the tier back at
//!   its last report until the next owner reports. Other tiers (producers, ingest) report per agent
//!   instance ([`StreamId::Agent`]).
//! * A **heartbeat** says an agent instance is alive, written with every flush per (topic, tier)
//!   it feeds, and once more with `stopped = true` after its final flush. An instance whose
//!   heartbeat goes stale without that marker crashed: the buckets it still had open may lack up
//!   to one flush interval of its counts, so edges it feeds are *indeterminate* there, not loss or
//!   duplicates (unless it `resumes` exactly, as a tap does from its stored offsets).
//!
//! Both are upserts that keep the highest version, like tallies.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bucket::EpochMillis;

/// Which stream of a (topic, tier) a progress row is about. Stored as `p:<partition>` or
/// `a:<agent_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamId {
    /// One partition of a Kafka tier, whoever reads it.
    Partition(i32),
    /// One agent instance of a tier that is not read from a partition (producers, ingest).
    Agent(String),
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamId::Partition(p) => write!(f, "p:{p}"),
            StreamId::Agent(id) => write!(f, "a:{id}"),
        }
    }
}

/// A stored stream id that is neither `p:<partition>` nor `a:<agent>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stream id {0:?}: expected p:<partition> or a:<agent_id>")]
pub struct UnknownStreamId(pub String);

impl FromStr for StreamId {
    type Err = UnknownStreamId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UnknownStreamId(s.to_string());
        match s.split_once(':') {
            Some(("p", n)) => n.parse().map(StreamId::Partition).map_err(|_| bad()),
            Some(("a", id)) if !id.is_empty() => Ok(StreamId::Agent(id.to_string())),
            _ => Err(bad()),
        }
    }
}

impl Serialize for StreamId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// How far one stream of one (topic, tier) has got, as last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressRow {
    pub topic: String,
    pub tier: String,
    pub stream: StreamId,
    /// The agent instance that made this report (for a partition: its owner at the time).
    pub agent_id: String,
    /// Every message of the stream with an event time before this has been counted (a producer:
    /// acknowledged or failed). For a partition: the largest event time read so far.
    pub watermark_ms: EpochMillis,
    /// Nothing more to read when reported (position at the partition's high watermark; a producer
    /// with nothing in flight): the stream does not hold its tier back, whatever `watermark_ms`.
    pub caught_up: bool,
    /// The agent's wall clock at the report; a caught-up stream counts as having reached it.
    pub reported_at_ms: EpochMillis,
    /// Grows with every report (across owners of a partition too: wall-clock microseconds).
    pub version: u64,
}

impl ProgressRow {
    /// The event time this stream has certainly reached.
    pub fn reached_ms(&self) -> EpochMillis {
        if self.caught_up { self.reported_at_ms.max(self.watermark_ms) } else { self.watermark_ms }
    }
}

/// One agent instance's liveness for one (topic, tier) it feeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRow {
    pub topic: String,
    pub tier: String,
    pub agent_id: String,
    /// When the instance started, ms.
    pub started_at_ms: EpochMillis,
    /// The agent's wall clock at its latest flush, ms.
    pub heartbeat_ms: EpochMillis,
    /// Start of the oldest bucket this (topic, tier) changed in the latest flush: where counts of
    /// the next interval would most likely have gone had the instance died. `None`: nothing
    /// changed.
    pub open_from_ms: Option<EpochMillis>,
    /// Written by a clean stop after the final flush: nothing was left unwritten.
    pub stopped: bool,
    /// The instance resumes exactly after a crash (a tap reloads tallies and offsets stored
    /// together), so its crash leaves nothing indeterminate.
    pub resumes: bool,
    pub version: u64,
}

impl HeartbeatRow {
    /// Whether the instance counts as alive at `now_ms`: not stopped, and heard from within
    /// `timeout_ms`.
    pub fn is_live(&self, now_ms: EpochMillis, timeout_ms: i64) -> bool {
        !self.stopped && now_ms - self.heartbeat_ms <= timeout_ms
    }

    /// Whether the instance vanished without its final flush: not stopped and silent for longer
    /// than `timeout_ms`.
    pub fn crashed(&self, now_ms: EpochMillis, timeout_ms: i64) -> bool {
        !self.stopped && now_ms - self.heartbeat_ms > timeout_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_round_trip_as_text() {
        for id in [StreamId::Partition(0), StreamId::Partition(-1), StreamId::Agent("producer-ab:c".into())] {
            assert_eq!(id.to_string().parse::<StreamId>(), Ok(id.clone()));
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(serde_json::from_str::<StreamId>(&json).unwrap(), id);
        }
        assert_eq!("p:7".parse(), Ok(StreamId::Partition(7)));
        for bad in ["", "p:", "p:x", "a:", "x:1", "7"] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_caught_up_stream_has_reached_its_report_time() {
        let mut row = ProgressRow {
            topic: "t".into(),
            tier: "broker".into(),
            stream: StreamId::Partition(0),
            agent_id: "a".into(),
            watermark_ms: 1_000,
            caught_up: false,
            reported_at_ms: 5_000,
            version: 1,
        };
        assert_eq!(row.reached_ms(), 1_000);
        row.caught_up = true;
        assert_eq!(row.reached_ms(), 5_000);
    }

    #[test]
    fn liveness_follows_heartbeat_and_stop_marker() {
        let mut hb = HeartbeatRow {
            topic: "t".into(),
            tier: "producer".into(),
            agent_id: "p-1".into(),
            started_at_ms: 0,
            heartbeat_ms: 10_000,
            open_from_ms: Some(0),
            stopped: false,
            resumes: false,
            version: 1,
        };
        assert!(hb.is_live(12_000, 5_000) && !hb.crashed(12_000, 5_000));
        assert!(!hb.is_live(16_000, 5_000) && hb.crashed(16_000, 5_000));
        hb.stopped = true;
        assert!(!hb.is_live(12_000, 5_000) && !hb.crashed(16_000, 5_000));
    }
}
