//! What the demo injects, and the ledger of it: the truth [`super::check`] holds the verdicts to.
//! Pure logic, no I/O.
//!
//! The demo's pipeline is `producer → broker`, with `consumer/billing` and `consumer/analytics`
//! both reading from the broker. Faults go where each is detectable on its own edge, because loss
//! and duplicates on the same edge in the same bucket net out in the counts:
//! * **loss** between producer and broker (the producer's agent counted the message as delivered,
//!   the broker never had it: an acknowledged write lost by an unclean leader election);
//! * **duplicates** at `consumer/billing` (billing processes a message a second time, as after a
//!   crash before its offset commit);
//! * **delay** at `consumer/analytics` (it processes each message `delay_ms` after it was created).
//!
//! Faults apply to messages whose event time is at or after [`FaultPlan::from_ms`], a bucket
//! boundary, so every bucket is either clean or faulty throughout.

use std::collections::{BTreeMap, BTreeSet};

use kaudit_schema::EpochMillis;

pub const TOPIC: &str = "orders";
pub const PRODUCER: &str = "producer";
pub const BROKER: &str = "broker";
pub const BILLING: &str = "consumer/billing";
pub const ANALYTICS: &str = "consumer/analytics";

/// The faults asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultPlan {
    /// Probability that a produced message is lost before the broker.
    pub loss: f64,
    /// Probability that billing processes a message twice.
    pub duplicates: f64,
    /// How long after its creation analytics processes a message, ms (0: at once).
    pub delay_ms: u64,
    /// Messages with an event time at or after this (a bucket boundary) are subject to faults.
    pub from_ms: EpochMillis,
}

impl FaultPlan {
    pub fn applies_to(&self, event_ms: EpochMillis) -> bool {
        event_ms >= self.from_ms
    }
}

/// What was done to one bucket's messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketFaults {
    /// Messages the producer created (lost ones included).
    pub produced: u64,
    /// Fingerprints of the messages lost before the broker.
    pub lost: Vec<u64>,
    /// Messages billing processed twice.
    pub duplicated: u64,
    /// Messages analytics processed late.
    pub delayed: u64,
}

/// Ground truth per bucket (start, ms).
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    buckets: BTreeMap<EpochMillis, BucketFaults>,
}

impl Ledger {
    pub fn produced(&mut self, bucket: EpochMillis) {
        self.buckets.entry(bucket).or_default().produced += 1;
    }

    pub fn lost(&mut self, bucket: EpochMillis, fingerprint: u64) {
        self.buckets.entry(bucket).or_default().lost.push(fingerprint);
    }

    pub fn duplicated(&mut self, bucket: EpochMillis) {
        self.buckets.entry(bucket).or_default().duplicated += 1;
    }

    pub fn delayed(&mut self, bucket: EpochMillis) {
        self.buckets.entry(bucket).or_default().delayed += 1;
    }

    pub fn buckets(&self) -> &BTreeMap<EpochMillis, BucketFaults> {
        &self.buckets
    }

    /// (lost, duplicated, delayed) over every bucket.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.buckets.values().fold((0, 0, 0), |(l, d, y), b| (l + b.lost.len() as u64, d + b.duplicated, y + b.delayed))
    }

    /// The alerts these faults must raise, by dedup key (`kind/topic/tier`).
    pub fn expected_alerts(&self, delay_threshold_ms: u64, delay_ms: u64) -> BTreeSet<String> {
        let (lost, duplicated, delayed) = self.totals();
        let mut keys = BTreeSet::new();
        if lost > 0 {
            keys.insert(format!("loss/{TOPIC}/{BROKER}"));
        }
        if duplicated > 0 {
            keys.insert(format!("duplicates/{TOPIC}/{BILLING}"));
        }
        if delayed > 0 && delay_ms > delay_threshold_ms {
            keys.insert(format!("delay/{TOPIC}/{ANALYTICS}"));
        }
        keys
    }
}
