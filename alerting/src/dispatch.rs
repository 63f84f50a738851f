//! The durable outbox and its delivery.
//!
//! [`Dispatcher::record`] stores an alert's new state and one notification per sink in a single
//! atomic store write. One delivery loop per sink then sends its notifications oldest first; a
//! notification leaves the outbox only once its receiver answered 2xx (or refused it for good
//! with a 4xx, logged at ERROR and counted). Failures are retried with exponential backoff and
//! jitter, keeping order: a later notification never overtakes an earlier one for the same sink.
//! A verifier that restarts finds the outbox where it was.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use kaudit_schema::{AlertRecord, OutboxEntry, Shutdown, Store, StoreError};
use rand::Rng;

use crate::alert::Alert;
use crate::metrics::AlertMetrics;
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

/// Records alert transitions and delivers them to sinks.
#[derive(Clone)]
pub struct Dispatcher {
    store: Arc<dyn Store>,
    sinks: Arc<Vec<Sink>>,
    http: HttpService,
    metrics: AlertMetrics,
    backoff: Backoff,
    last_seq: Arc<AtomicI64>,
}

/// A delivery failure that stops a loop: the store itself failed.
pub type DeliveryError = StoreError;

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, sinks: Vec<Sink>, metrics: AlertMetrics, backoff: Backoff) -> Self {
        Self {
            store,
            sinks: Arc::new(sinks),
            http: HttpService::new(Duration::from_secs(10)),
            metrics,
            backoff,
            last_seq: Arc::new(AtomicI64::new(0)),
        }
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
        let record = AlertRecord {
            dedup_key: alert.dedup_key.clone(),
            state: alert.state.as_str().into(),
            body,
            updated_at_ms: now_ms,
        };
        self.store.record_alert(&record, &entries).await?;
        Ok(seq)
    }

    /// Try every waiting notification of `sink` once, oldest first, stopping at the first that must
    /// be retried. Returns (delivered, the attempt count of the one that failed, if any).
    pub async fn deliver_pending(&self, sink: &Sink) -> Result<(usize, Option<u32>), StoreError> {
        let entries = self.store.outbox(&sink.name, 100).await?;
        self.metrics.pending.with_label_values(&[sink.name.as_str()]).set(entries.len() as i64);
        let mut delivered = 0;
        for mut entry in entries {
            let alert: Alert = match serde_json::from_str(&entry.payload) {
                Ok(a) => a,
                Err(error) => {
                    tracing::error!(sink = %sink.name, seq = entry.seq, %error, "dropping unreadable notification");
                    self.store.ack_notification(&sink.name, entry.seq).await?;
                    continue;
                }
            };
            match self.http.send(&sink.request(&alert, entry.seq)).await {
                Outcome::Delivered => {
                    self.store.ack_notification(&sink.name, entry.seq).await?;
                    self.metrics.sent.with_label_values(&[sink.name.as_str()]).inc();
                    tracing::info!(sink = %sink.name, key = %alert.dedup_key, state = alert.state.as_str(), "notification delivered");
                    delivered += 1;
                }
                Outcome::Rejected(reason) => {
                    self.store.ack_notification(&sink.name, entry.seq).await?;
                    self.metrics.failed.with_label_values(&[sink.name.as_str(), "rejected"]).inc();
                    tracing::error!(sink = %sink.name, key = %alert.dedup_key, %reason, "receiver refused the notification; dropped");
                }
                Outcome::Retry(reason) => {
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

    /// Deliver for every sink until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let stop_all = Shutdown::new();
        let mut tasks = Vec::new();
        for sink in self.sinks.iter().cloned() {
            let me = self.clone();
            let stop = stop_all.signal();
            tasks.push(tokio::spawn(async move {
                loop {
                    let wait = match me.deliver_pending(&sink).await {
                        Ok((_, Some(attempts))) => me.backoff.delay(attempts),
                        Ok((_, None)) => me.backoff.poll,
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
