//! What the demo injects, and the ledger of it: the truth [`super::check`] holds the verdicts to.
//! Pure logic, no I/O.
//!
//! The demo's pipeline is `producer → broker`, with `consumer/billing` and `consumer/analytics`
//! both reading from the broker:
//! * **loss** between producer and broker (the producer's agent counted the message as delivered,
//!   the broker never had it: an acknowledged write lost by an unclean leader election);
//! * **loss and duplicates** at `consumer/billing`, on one edge and in the same buckets: billing
//!   drops a message it received (its offset moves on, it is never processed) and processes
//!   another twice (as after a crash before its offset commit). The counts net out; the tiers'
//!   difference sketches name each message, by partition and offset;
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
    /// Probability that billing drops a message it received.
    pub consumer_loss: f64,
    /// Whether the agents keep difference sketches, so that verdicts name the messages.
    pub sketches: bool,
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

/// A message a fault was injected into: its fingerprint and where it lives in the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Injected {
    pub fingerprint: u64,
    pub partition: i32,
    pub offset: i64,
}

/// What was done to one bucket's messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketFaults {
    /// Messages the producer created (lost ones included).
    pub produced: u64,
    /// Fingerprints of the messages lost before the broker (they never had an offset).
    pub lost: Vec<u64>,
    /// Messages billing received and dropped.
    pub billing_lost: Vec<Injected>,
    /// Messages billing processed twice.
    pub duplicated: Vec<Injected>,
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

/// What was injected over every bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub lost: u64,
    pub billing_lost: u64,
    pub duplicated: u64,
    pub delayed: u64,
}

impl Totals {
    pub fn any(&self) -> bool {
        self.lost + self.billing_lost + self.duplicated + self.delayed > 0
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

    pub fn billing_lost(&mut self, bucket: EpochMillis, message: Injected) {
        self.buckets.entry(bucket).or_default().billing_lost.push(message);
    }

    pub fn duplicated(&mut self, bucket: EpochMillis, message: Injected) {
        self.buckets.entry(bucket).or_default().duplicated.push(message);
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

    /// What was injected over every bucket.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for b in self.buckets.values() {
            t.lost += b.lost.len() as u64;
            t.billing_lost += b.billing_lost.len() as u64;
            t.duplicated += b.duplicated.len() as u64;
            t.delayed += b.delayed;
        }
        t
    }

    /// The alerts these faults must raise, by dedup key (`kind/topic/tier`), and those they may
    /// raise (a loss only inside the crash window, billing's delay around the threshold).
    /// `unnamed(bucket)`: billing's differences in that bucket were too many to name, so only
    /// their net count shows (a loss, duplicates or, when they balance, a content mismatch).
    pub fn expected_alerts(
        &self,
        plan: &FaultPlan,
        delay_threshold_ms: u64,
        unnamed: impl Fn(EpochMillis) -> bool,
    ) -> (BTreeSet<String>, BTreeSet<String>) {
        let (mut must, mut may) = (BTreeSet::new(), BTreeSet::new());
        let lossy = self.buckets.iter().filter(|(_, b)| !b.lost.is_empty());
        let (crashed, clean): (Vec<_>, Vec<_>) = lossy.partition(|(at, _)| plan.in_crash_window(**at));
        let loss = format!("loss/{TOPIC}/{BROKER}");
        if !clean.is_empty() {
            must.insert(loss.clone());
        } else if !crashed.is_empty() {
            may.insert(loss);
        }
        for (&at, b) in &self.buckets {
            let (l, d) = (b.billing_lost.len(), b.duplicated.len());
            let named = !unnamed(at);
            let mut alert = |kind: &str, surely: bool| {
                let key = format!("{kind}/{TOPIC}/{BILLING}");
                if surely {
                    must.insert(key)
                } else {
                    may.insert(key)
                };
            };
            if l > 0 {
                alert("loss", named || l > d);
            }
            if d > 0 {
                alert("duplicates", named || d > l);
            }
            if !named && l > 0 && l == d {
                alert("content_mismatch", false);
            }
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
        may.retain(|k| !must.contains(k));
        (must, may)
    }
}
