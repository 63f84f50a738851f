//! The durable outbox and its delivery.
//!
//! [`Dispatcher::record`] stores an alert's new state and one notification per sink in a single
//! atomic store write. One delivery loop per sink then sends its notifications oldest first; a
//! notification leaves the outbox only once its receiver answered 2xx (or refused it for good
//! with a 4xx, logged at ERROR and counted). Failures are retried with exponential backoff and
//! jitter, keeping order: a later notification never overtakes an earlier one for the same sink.
//! A verifier that restarts finds the outbox where it was.
//!
//! Bounded: a newer notification of an alert replaces its undelivered older one for that sink
//! (the store coalesces per dedup key), and past `max_outbox_per_sink` waiting notifications
//! [`Dispatcher::trim_outboxes`] drops the oldest, at ERROR and counted. How many transitions of
//! one pass get a notification at all is the verifier's flood guard (`max_notifications_per_pass`).
//!
//! Re-posts keep Alertmanager current (it forgets an alert it has not heard of lately): each
//! interval (`repost_interval_ms`), an Alertmanager sink's loop posts every alert the store holds
//! as firing again, straight to the receiver and not through the outbox, since a re-post carries
//! no news: lost, it is simply made again next interval, and it never queues behind or floods the
//! durable transitions. It runs in the same loop as the sink's outbox delivery and only when the
//! outbox is drained, so a resolve still waiting to be delivered cannot be overtaken by a stale
//! firing re-post (and one read just before a resolve is recorded is followed by that resolve,
//! which Alertmanager then takes as the newer). Alerts the flood guard held back are firing in the
//! store too, so they are re-posted: Alertmanager's own grouping bundles them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use kaudit_schema::{AlertRecord, OutboxEntry, Shutdown, Store, StoreError};
use rand::Rng;

use crate::alert::{Alert, AlertState};
use crate::metrics::AlertMetrics;
use crate::ownership::Ownership;
use crate::sinks::Sink;
use crate::sinks::service::{HttpService, Outcome};

/// A state change to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub seq: i64,
    pub alert: Alert,
}

/// Retry timing.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First retry delay. Default 500 ms.
    pub base: Duration,
    /// Longest delay. Default 60 s.
    pub max: Duration,
    /// How often an idle sink checks its outbox. Default 1 s.
    pub poll: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_millis(500), max: Duration::from_secs(60), poll: Duration::from_secs(1) }
    }
}

impl Backoff {
    /// Delay before retry number `attempts` (1-based): `base · 2^(attempts-1)` capped at `max`,
    /// the upper half of it jittered ("equal jitter"), so retries of many verifiers spread out but
    /// still grow.
    pub fn delay(&self, attempts: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        let cap = exp.min(self.max);
        let half = cap / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

/// Bounds on notifications (`[alerting]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Transitions of one evaluation pass notified one by one; past it, one summary alert. Default 5.
    pub max_notifications_per_pass: usize,
    /// Notifications waiting per sink; past it the oldest are dropped. Default 10000.
    pub max_outbox_per_sink: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_notifications_per_pass: 5, max_outbox_per_sink: 10_000 }
    }
}

/// Records alert transitions and delivers them to sinks.
#[derive(Clone)]
pub struct Dispatcher {
    store: Arc<dyn Store>,
    sinks: Arc<Vec<Sink>>,
    http: HttpService,
    metrics: AlertMetrics,
    backoff: Backoff,
    limits: Limits,
    last_seq: Arc<AtomicI64>,
    /// Which topics' notifications this instance delivers (all, for a sole verifier).
    ownership: Ownership,
}

/// A delivery failure that stops a loop: the store itself failed.
pub type DeliveryError = StoreError;

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, sinks: Vec<Sink>, metrics: AlertMetrics, backoff: Backoff) -> Self {
        for sink in &sinks {
            metrics.init_sink(&sink.name);
        }
        Self {
            store,
            sinks: Arc::new(sinks),
            http: HttpService::new(Duration::from_secs(10)),
            metrics,
            backoff,
            limits: Limits::default(),
            last_seq: Arc::new(AtomicI64::new(0)),
            ownership: Ownership::sole(""),
        }
    }

    /// The same dispatcher delivering only the notifications about topics `ownership` owns, each
    /// under its fence.
    pub fn with_ownership(self, ownership: Ownership) -> Self {
        Self { ownership, ..self }
    }

    /// The same dispatcher with `limits` instead of the defaults.
    pub fn with_limits(self, limits: Limits) -> Self {
        Self { limits, ..self }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn sinks(&self) -> &[Sink] {
        &self.sinks
    }

    /// A sequence number above every earlier one, also across restarts (µs of wall time).
    fn next_seq(&self, now_ms: i64) -> i64 {
        let candidate = now_ms.saturating_mul(1000);
        let mut last = self.last_seq.load(Ordering::SeqCst);
        loop {
            let next = candidate.max(last + 1);
            match self.last_seq.compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Store `alert`'s new state and queue it for every sink, atomically.
    pub async fn record(&self, alert: &Alert, now_ms: i64) -> Result<i64, StoreError> {
        let seq = self.next_seq(now_ms);
        let body = serde_json::to_string(alert).expect("alerts serialise");
        let entries: Vec<OutboxEntry> = self
            .sinks
            .iter()
            .map(|s| OutboxEntry {
                sink: s.name.clone(),
                seq,
                dedup_key: alert.dedup_key.clone(),
                payload: body.clone(),
                attempts: 0,
            })
            .collect();
        self.store.record_alert(&alert_record(alert, now_ms), &entries).await?;
        Ok(seq)
    }

    /// Store `alert`'s new state without a notification (a transition the flood guard held back:
    /// the API lists it, a restart knows it, no receiver hears of it on its own).
    pub async fn record_state(&self, alert: &Alert, now_ms: i64) -> Result<(), StoreError> {
        self.store.record_alert(&alert_record(alert, now_ms), &[]).await
    }

    /// Drop the oldest notifications of every sink past `max_outbox_per_sink`, each drop at
    /// ERROR (data lost: an operator should look at the receiver) and counted.
    pub async fn trim_outboxes(&self) -> Result<usize, StoreError> {
        let mut dropped = 0;
        for sink in self.sinks.iter() {
            let n = self.store.trim_outbox(&sink.name, self.limits.max_outbox_per_sink).await?;
            if n > 0 {
                self.metrics.dropped.with_label_values(&[sink.name.as_str()]).inc_by(n as u64);
                tracing::error!(
                    sink = %sink.name,
                    dropped = n,
                    max = self.limits.max_outbox_per_sink,
                    "outbox full: dropped the oldest undelivered notifications (alerting.max_outbox_per_sink)"
                );
            }
            dropped += n;
        }
        Ok(dropped)
    }

    /// Try every waiting notification of `sink` about an owned topic once, oldest first, stopping
    /// at the first that must be retried. Returns (delivered, the attempt count of the one that
    /// failed, if any).
    ///
    /// Sharded: the owned set is held for the round (a hand-over waits for it to end), each send
    /// is preceded by a fence and cut off when its lease runs out, so a replaced instance never
    /// delivers beside the new owner. A send cut off, or an instance that dies after the receiver
    /// took a notification but before its ack, leaves it waiting: the owner then delivers it again
    /// with the same `seq` (at least once; receivers can drop repeats of a `seq`).
    pub async fn deliver_pending(&self, sink: &Sink) -> Result<(usize, Option<u32>), StoreError> {
        let hold = match self.ownership.hold().await {
            Ok(hold) => hold,
            Err(fenced) => {
                tracing::warn!(sink = %sink.name, %fenced, "not delivering: membership not proven");
                return Ok((0, Some(1)));
            }
        };
        let sharded = self.ownership.shards().is_some();
        // Another instance's notifications may come first in the outbox: read past them.
        let limit = if sharded { 1_000 } else { 100 };
        let entries = self.store.outbox(&sink.name, limit).await?;
        let mut delivered = 0;
        let mut mine = Vec::new();
        for entry in entries {
            match serde_json::from_str::<Alert>(&entry.payload) {
                Ok(alert) if hold.owns(&alert.topic) => mine.push((entry, alert)),
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(sink = %sink.name, seq = entry.seq, %error, "dropping unreadable notification");
                    self.store.ack_notification(&sink.name, entry.seq).await?;
                }
            }
        }
        self.metrics.pending.with_label_values(&[sink.name.as_str()]).set(mine.len() as i64);
        for (mut entry, alert) in mine.into_iter().take(100) {
            if let Err(fenced) = hold.ensure().await {
                tracing::warn!(sink = %sink.name, %fenced, "delivery stopped: membership not proven");
                return Ok((delivered, Some(1)));
            }
            let request = sink.request(&alert, entry.seq);
            let send = self.http.send(&request);
            let outcome = match hold.remaining() {
                Some(left) => tokio::time::timeout(left, send)
                    .await
                    .unwrap_or_else(|_| Outcome::Retry("cut off at the end of the fence's lease".into())),
                None => send.await,
            };
            match outcome {
                Outcome::Delivered => {
                    self.store.ack_notification(&sink.name, entry.seq).await?;
                    self.metrics.sent.with_label_values(&[sink.name.as_str()]).inc();
                    tracing::info!(sink = %sink.name, key = %alert.dedup_key, state = alert.state.as_str(), "notification delivered");
                    delivered += 1;
                }
                Outcome::Rejected(reason) => {
                    let reason = sink.scrub(&reason);
                    self.store.ack_notification(&sink.name, entry.seq).await?;
                    self.metrics.failed.with_label_values(&[sink.name.as_str(), "rejected"]).inc();
                    tracing::error!(sink = %sink.name, key = %alert.dedup_key, %reason, "receiver refused the notification; dropped");
                }
                Outcome::Retry(reason) => {
                    let reason = sink.scrub(&reason);
                    entry.attempts += 1;
                    self.store.record_attempt(&entry).await?;
                    self.metrics.failed.with_label_values(&[sink.name.as_str(), "retry"]).inc();
                    tracing::warn!(sink = %sink.name, key = %alert.dedup_key, attempts = entry.attempts, %reason, "notification failed; will retry");
                    return Ok((delivered, Some(entry.attempts)));
                }
            }
        }
        Ok((delivered, None))
    }

    /// Post every alert the store holds as firing to `sink` once more, at `now_ms`: Alertmanager's
    /// refresh. Best effort: a failure is logged and the next interval tries again. Returns how many
    /// were accepted.
    pub async fn repost_firing(&self, sink: &Sink, now_ms: i64) -> Result<usize, StoreError> {
        let mut accepted = 0;
        let Ok(hold) = self.ownership.hold().await else { return Ok(0) };
        for record in self.store.list_alerts().await? {
            if record.state != AlertState::Firing.as_str() {
                continue;
            }
            let Ok(alert) = serde_json::from_str::<Alert>(&record.body) else { continue };
            if !hold.owns(&alert.topic) || hold.ensure().await.is_err() {
                continue;
            }
            match self.http.send(&sink.request_at(&alert, 0, now_ms)).await {
                Outcome::Delivered => accepted += 1,
                Outcome::Rejected(reason) | Outcome::Retry(reason) => {
                    let reason = sink.scrub(&reason);
                    tracing::warn!(sink = %sink.name, key = %alert.dedup_key, %reason, "re-post of a firing alert failed; next interval tries again");
                    return Ok(accepted);
                }
            }
        }
        Ok(accepted)
    }

    /// Deliver for every sink until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let stop_all = Shutdown::new();
        let mut tasks = Vec::new();
        for sink in self.sinks.iter().cloned() {
            let me = self.clone();
            let stop = stop_all.signal();
            tasks.push(tokio::spawn(async move {
                let repost = sink.repost_interval();
                let mut next_repost = tokio::time::Instant::now();
                loop {
                    let wait = match me.deliver_pending(&sink).await {
                        Ok((_, Some(attempts))) => me.backoff.delay(attempts),
                        Ok((_, None)) => match repost {
                            Some(every) => {
                                if tokio::time::Instant::now() >= next_repost {
                                    next_repost = tokio::time::Instant::now() + every;
                                    if let Err(error) = me.repost_firing(&sink, crate::time::now_ms()).await {
                                        tracing::warn!(sink = %sink.name, %error, "cannot list alerts to re-post; will retry");
                                    }
                                }
                                me.backoff.poll.min(next_repost.saturating_duration_since(tokio::time::Instant::now()))
                            }
                            None => me.backoff.poll,
                        },
                        Err(error) => {
                            tracing::warn!(sink = %sink.name, %error, "cannot read the outbox; will retry");
                            me.backoff.max.min(Duration::from_secs(5))
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.stopped() => return,
                    }
                }
            }));
        }
        shutdown.await;
        stop_all.trigger();
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// The stored form of `alert`'s state.
fn alert_record(alert: &Alert, now_ms: i64) -> AlertRecord {
    AlertRecord {
        dedup_key: alert.dedup_key.clone(),
        state: alert.state.as_str().into(),
        body: serde_json::to_string(alert).expect("alerts serialise"),
        updated_at_ms: now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_stays_capped() {
        let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(2), poll: Duration::from_secs(1) };
        for attempts in 1..=10u32 {
            let exp = Duration::from_millis(100 * (1 << (attempts - 1))).min(Duration::from_secs(2));
            for _ in 0..50 {
                let d = b.delay(attempts);
                assert!(d >= exp / 2 && d <= exp, "attempt {attempts}: {d:?} not in [{:?}, {exp:?}]", exp / 2);
            }
        }
        let spread: std::collections::HashSet<Duration> = (0..20).map(|_| b.delay(3)).collect();
        assert!(spread.len() > 1, "jitter varies the delay");
    }
}
