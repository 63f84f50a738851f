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
    /// Billing stops reading at `from_ms` for this long, then catches up (0: never).
    pub pause_ms: u64,
    /// The producer's agent crashes at this time and a new instance takes over.
    pub crash_at_ms: Option<EpochMillis>,
    /// Buckets whose broker-vs-producer verdict the crash may leave indeterminate: from the bucket
    /// of its last flush before the crash to the bucket of the moment it is taken for dead.
    pub crash_window: Option<(EpochMillis, EpochMillis)>,
}

impl FaultPlan {
    pub fn applies_to(&self, event_ms: EpochMillis) -> bool {
        event_ms >= self.from_ms
    }

    /// Whether the crash may leave the bucket starting at `bucket` indeterminate.
    pub fn in_crash_window(&self, bucket: EpochMillis) -> bool {
        self.crash_window.is_some_and(|(from, to)| (from..=to).contains(&bucket))
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
    /// Billing's processing latency, counted only while a pause is injected: messages processed,
    /// and those later than 0.95 × and 1.05 × the delay threshold (around the threshold the p99
    /// sketch's 1 % rounding decides, so there either verdict is right).
    pub billing: BillingLatency,
}

/// Billing's processing latency in one bucket, against the delay threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BillingLatency {
    pub processed: u64,
    pub over_low: u64,
    pub over_high: u64,
}

impl BillingLatency {
    /// `Some(flag)` when billing's p99 must be over (or under) the threshold, `None` when it is
    /// too close to say: over when more than 1.1 % were later than 1.05 × the threshold, under
    /// when fewer than 0.9 % were later than 0.95 × it. Nothing counted (no pause): on time.
    pub fn expected_delay(&self) -> Option<bool> {
        let n = self.processed as f64;
        if self.processed == 0 {
            return Some(false);
        }
        if self.over_high as f64 > 0.011 * n {
            Some(true)
        } else if (self.over_low as f64) < 0.009 * n {
            Some(false)
        } else {
            None
        }
    }
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

    /// Billing processed a message of `bucket` `latency_ms` after its creation.
    pub fn billing_latency(&mut self, bucket: EpochMillis, latency_ms: i64, threshold_ms: u64) {
        let b = &mut self.buckets.entry(bucket).or_default().billing;
        b.processed += 1;
        b.over_low += (latency_ms as f64 > 0.95 * threshold_ms as f64) as u64;
        b.over_high += (latency_ms as f64 > 1.05 * threshold_ms as f64) as u64;
    }

    pub fn buckets(&self) -> &BTreeMap<EpochMillis, BucketFaults> {
        &self.buckets
    }

    /// (lost, duplicated, delayed) over every bucket.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.buckets.values().fold((0, 0, 0), |(l, d, y), b| (l + b.lost.len() as u64, d + b.duplicated, y + b.delayed))
    }

    /// The alerts these faults must raise, by dedup key (`kind/topic/tier`), and those they may
    /// raise (a loss only inside the crash window, billing's delay around the threshold).
    pub fn expected_alerts(&self, plan: &FaultPlan, delay_threshold_ms: u64) -> (BTreeSet<String>, BTreeSet<String>) {
        let (mut must, mut may) = (BTreeSet::new(), BTreeSet::new());
        let lossy = self.buckets.iter().filter(|(_, b)| !b.lost.is_empty());
        let (crashed, clean): (Vec<_>, Vec<_>) = lossy.partition(|(at, _)| plan.in_crash_window(**at));
        let loss = format!("loss/{TOPIC}/{BROKER}");
        if !clean.is_empty() {
            must.insert(loss.clone());
        } else if !crashed.is_empty() {
            may.insert(loss);
        }
        if self.buckets.values().any(|b| b.duplicated > 0) {
            must.insert(format!("duplicates/{TOPIC}/{BILLING}"));
        }
        if self.buckets.values().any(|b| b.delayed > 0) && plan.delay_ms > delay_threshold_ms {
            must.insert(format!("delay/{TOPIC}/{ANALYTICS}"));
        }
        if plan.pause_ms > 0 {
            must.insert(format!("lag/{TOPIC}/{BILLING}"));
        }
        let billing_delay = format!("delay/{TOPIC}/{BILLING}");
        match self.buckets.values().map(|b| b.billing.expected_delay()).collect::<BTreeSet<_>>() {
            flags if flags.contains(&Some(true)) => must.insert(billing_delay),
            flags if flags.contains(&None) => may.insert(billing_delay),
            _ => false,
        };
        (must, may)
    }
}
