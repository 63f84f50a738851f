//! The streaming verifier: every `evaluate_interval` it reads recent tallies, evaluates the buckets
//! past the watermark, stores new and revised verdicts, feeds the CUSUM detectors, and records
//! alert transitions for the dispatcher to deliver.
//!
//! Watermark: a bucket is evaluated once `now > bucket_end + grace`. Buckets stay under watch
//! until `lateness` after their end: late tallies that change a verdict revise it (and may resolve
//! an alert). A bucket feeds the detectors and the message counters once, at its first evaluation.
//! After a restart the engine reloads alert state and the verdicts already stored, so it neither
//! repeats a notification nor counts a bucket twice; CUSUM baselines are learned again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use kaudit_alerting::{Alert, AlertKind, AlertState, Dispatcher};
use kaudit_schema::{Clock, EpochMillis, Store, StoreError, VerdictRow};

use crate::alerts::{ALL_KINDS, EdgeState, desired_alert};
use crate::compare::Verdict;
use crate::config::VerifierConfig;
use crate::cusum::{Detector, Shift};
use crate::evaluate::{EdgeVerdict, evaluate_bucket, merge_rows};
use crate::metrics::VerifierMetrics;
use crate::pipeline::{Pipeline, pipeline_for};

/// The signals a CUSUM watches per edge, and the alert kind an upward shift raises.
const SIGNALS: [(&str, AlertKind); 3] =
    [("loss_ratio", AlertKind::Loss), ("duplicate_ratio", AlertKind::Duplicates), ("p99_delay_ms", AlertKind::Delay)];

type EdgeKey = (String, String); // (topic, tier)

/// What one evaluation pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    pub first_evaluations: usize,
    pub revisions: usize,
    pub notifications: usize,
}

pub struct Engine {
    store: Arc<dyn Store>,
    dispatcher: Option<Dispatcher>,
    pipelines: Vec<Pipeline>,
    config: VerifierConfig,
    grace_ms: i64,
    clock: Arc<dyn Clock>,
    metrics: VerifierMetrics,
    history: HashMap<EdgeKey, BTreeMap<EpochMillis, EdgeVerdict>>,
    upstream_of: HashMap<EdgeKey, String>,
    widths: HashMap<String, i64>,
    detectors: HashMap<(String, String, &'static str), Detector>,
    cusum_hits: HashMap<(String, String, AlertKind), BTreeMap<EpochMillis, f64>>,
    /// Verdicts already reached (this run or, per the store, an earlier one), by topic.
    evaluated: HashMap<String, HashMap<(EpochMillis, String), VerdictRow>>,
    alerts: HashMap<String, Alert>,
    loaded: bool,
    ready: Arc<std::sync::atomic::AtomicBool>,
}

impl Engine {
    /// An engine over `store`; `dispatcher` receives alert transitions (none: verdicts only).
    pub fn new(
        store: Arc<dyn Store>,
        dispatcher: Option<Dispatcher>,
        config: VerifierConfig,
        flush_interval_ms: u64,
        clock: Arc<dyn Clock>,
        metrics: VerifierMetrics,
    ) -> Self {
        let pipelines = config.pipelines.iter().map(|p| p.build()).collect();
        let grace_ms = config.grace_ms(flush_interval_ms) as i64;
        Self {
            store,
            dispatcher,
            pipelines,
            config,
            grace_ms,
            clock,
            metrics,
            history: HashMap::new(),
            upstream_of: HashMap::new(),
            widths: HashMap::new(),
            detectors: HashMap::new(),
            cusum_hits: HashMap::new(),
            evaluated: HashMap::new(),
            alerts: HashMap::new(),
            loaded: false,
            ready: Arc::default(),
        }
    }

    /// Set once a pass has succeeded (the API's `/readyz`).
    pub fn ready_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.ready.clone()
    }

    /// Current alerts by dedup key.
    pub fn alerts(&self) -> &HashMap<String, Alert> {
        &self.alerts
    }

    async fn load(&mut self) -> Result<(), StoreError> {
        for record in self.store.list_alerts().await? {
            match serde_json::from_str::<Alert>(&record.body) {
                Ok(alert) => {
                    self.alerts.insert(record.dedup_key, alert);
                }
                Err(error) => tracing::warn!(key = %record.dedup_key, %error, "ignoring unreadable stored alert"),
            }
        }
        self.loaded = true;
        Ok(())
    }

    /// One evaluation pass over every topic with a pipeline.
    pub async fn tick(&mut self) -> Result<TickReport, StoreError> {
        let started = Instant::now();
        if !self.loaded {
            self.load().await?;
        }
        let now = self.clock.now_ms();
        let mut report = TickReport::default();
        for topic in self.store.list_topics().await? {
            let Some(pipeline) = pipeline_for(&self.pipelines, &topic).cloned() else { continue };
            self.evaluate_topic(&topic, &pipeline, now, &mut report).await?;
            report.notifications += self.update_alerts(&topic, &pipeline, now).await?;
        }
        let firing = self.alerts.values().filter(|a| a.state == AlertState::Firing).count();
        self.metrics.alerts_firing.set(firing as i64);
        self.metrics.evaluation_duration.observe(started.elapsed().as_secs_f64());
        self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(report)
    }

    async fn evaluate_topic(
        &mut self,
        topic: &str,
        pipeline: &Pipeline,
        now: EpochMillis,
        report: &mut TickReport,
    ) -> Result<(), StoreError> {
        let horizon = now - self.config.lateness_ms as i64 - self.grace_ms;
        let width = self.widths.get(topic).copied().unwrap_or(60_000);
        let rows = self.store.read_range(topic, horizon - width, now).await?;
        if !self.evaluated.contains_key(topic) {
            let stored = self.store.read_verdicts(topic, horizon, now).await?;
            let known = stored.into_iter().map(|v| ((v.bucket_start_ms, v.tier.clone()), v)).collect();
            self.evaluated.insert(topic.to_string(), known);
        }
        let widths: BTreeMap<EpochMillis, i64> =
            rows.iter().map(|r| (r.key.bucket_start_ms, r.bucket_width_ms)).collect();
        let mut to_store = Vec::new();
        for (bucket, tiers) in merge_rows(&rows) {
            let width = widths[&bucket];
            self.widths.insert(topic.to_string(), width);
            if bucket + width + self.grace_ms >= now || bucket + width < horizon {
                continue; // not past the watermark yet, or past the lateness horizon
            }
            for v in evaluate_bucket(topic, bucket, &tiers, pipeline, &self.config.thresholds) {
                let key = (topic.to_string(), v.tier.clone());
                self.upstream_of.insert(key.clone(), v.upstream.clone());
                let history = self.history.entry(key).or_default();
                if history.get(&bucket) == Some(&v) {
                    continue;
                }
                let row = verdict_row(&v, now);
                let known = self.evaluated.get_mut(topic).expect("loaded above");
                let previous = known.insert((bucket, v.tier.clone()), row.clone());
                if previous.as_ref().is_some_and(|p| same_outcome(p, &row)) {
                    // Reached before a restart and unchanged: remember it, count nothing.
                    self.history.get_mut(&(topic.to_string(), v.tier.clone())).expect("inserted").insert(bucket, v);
                    continue;
                }
                if previous.is_none() {
                    report.first_evaluations += 1;
                    self.metrics.buckets_evaluated.inc();
                    let labels = [topic, v.tier.as_str()];
                    self.metrics
                        .missing_messages
                        .with_label_values(&labels)
                        .inc_by(v.upstream_count.saturating_sub(v.count));
                    self.metrics
                        .extra_messages
                        .with_label_values(&labels)
                        .inc_by(v.count.saturating_sub(v.upstream_count));
                    self.feed_detectors(&v);
                } else {
                    report.revisions += 1;
                    self.metrics.revisions.inc();
                }
                self.metrics.verdicts.with_label_values(&[kind_of(&v.verdict)]).inc();
                to_store.push(row);
                self.history.get_mut(&(topic.to_string(), v.tier.clone())).expect("inserted").insert(bucket, v);
            }
        }
        for history in self.history.iter_mut().filter(|((t, _), _)| t == topic).map(|(_, h)| h) {
            history.retain(|b, _| *b >= horizon - width);
        }
        if !to_store.is_empty() {
            self.store.write_verdicts(&to_store).await?;
        }
        Ok(())
    }

    fn feed_detectors(&mut self, v: &EdgeVerdict) {
        let values = [Some(v.loss_ratio), Some(v.duplicate_ratio), v.p99_ms.map(|p| p as f64)];
        for ((signal, kind), value) in SIGNALS.into_iter().zip(values) {
            let Some(x) = value else { continue };
            let floor =
                if signal == "p99_delay_ms" { self.config.sigma_floor_delay_ms } else { self.config.sigma_floor_ratio };
            let c = &self.config;
            let detector = self
                .detectors
                .entry((v.topic.clone(), v.tier.clone(), signal))
                .or_insert_with(|| Detector::new(c.baseline_window, c.baseline_min_samples, floor));
            let step = detector.observe(x, self.config.cusum);
            self.metrics.cusum.with_label_values(&[v.topic.as_str(), v.tier.as_str(), signal]).set(step.statistic);
            if step.alarm == Some(Shift::Up) {
                tracing::info!(topic = %v.topic, tier = %v.tier, signal, bucket = v.bucket_start_ms, z = step.z, "cusum alarm");
                self.cusum_hits
                    .entry((v.topic.clone(), v.tier.clone(), kind))
                    .or_default()
                    .insert(v.bucket_start_ms, self.config.cusum.h);
            }
        }
    }

    async fn update_alerts(&mut self, topic: &str, pipeline: &Pipeline, now: EpochMillis) -> Result<usize, StoreError> {
        let mut sent = 0;
        let width = self.widths.get(topic).copied().unwrap_or(60_000);
        let empty = BTreeMap::new();
        for edge in pipeline.edges() {
            let key = (topic.to_string(), edge.downstream.clone());
            let Some(history) = self.history.get(&key) else { continue };
            for kind in ALL_KINDS {
                let cusum = self.cusum_hits.get(&(topic.to_string(), edge.downstream.clone(), kind)).unwrap_or(&empty);
                let state = EdgeState {
                    topic,
                    upstream: &edge.upstream,
                    tier: &edge.downstream,
                    history,
                    cusum,
                    width_ms: width,
                };
                let dedup = Alert::dedup_key(kind, topic, &edge.downstream);
                let previous = self.alerts.get(&dedup);
                let Some(alert) = desired_alert(
                    kind,
                    &state,
                    &self.config.thresholds,
                    self.config.resolve_after_buckets,
                    previous,
                    now,
                ) else {
                    continue;
                };
                let transition = previous.is_none_or(|p| p.state != alert.state);
                if transition {
                    tracing::warn!(key = %dedup, state = alert.state.as_str(), summary = %alert.summary(), "alert");
                    if let Some(d) = &self.dispatcher {
                        d.record(&alert, now).await?;
                    }
                    sent += 1;
                }
                self.alerts.insert(dedup, alert);
            }
        }
        Ok(sent)
    }

    /// Evaluate every `evaluate_interval` until `shutdown` resolves; store errors are logged and
    /// retried on the next pass.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticker = tokio::time::interval(std::time::Duration::from_millis(self.config.evaluate_interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(error) = self.tick().await {
                        self.metrics.evaluation_failures.inc();
                        tracing::warn!(%error, "evaluation failed; retrying next interval");
                    }
                }
                _ = &mut shutdown => return,
            }
        }
    }
}

/// Whether two stored verdicts say the same, whenever they were reached.
fn same_outcome(a: &VerdictRow, b: &VerdictRow) -> bool {
    VerdictRow { evaluated_at_ms: 0, ..a.clone() } == VerdictRow { evaluated_at_ms: 0, ..b.clone() }
}

fn kind_of(v: &Verdict) -> &'static str {
    match v {
        Verdict::Complete => "complete",
        Verdict::Loss { .. } => "loss",
        Verdict::Duplicates { .. } => "duplicates",
        Verdict::ContentMismatch => "content_mismatch",
        Verdict::MissingTier { .. } => "missing_tier",
    }
}

/// The stored form of a verdict.
pub fn verdict_row(v: &EdgeVerdict, now: EpochMillis) -> VerdictRow {
    let mut kind = kind_of(&v.verdict).to_string();
    if v.delayed {
        kind.push_str("+delay");
    }
    VerdictRow {
        topic: v.topic.clone(),
        bucket_start_ms: v.bucket_start_ms,
        tier: v.tier.clone(),
        upstream_tier: v.upstream.clone(),
        kind,
        upstream_count: v.upstream_count,
        count: v.count,
        lost_fingerprint: match v.verdict {
            Verdict::Loss { fingerprint, .. } => fingerprint,
            _ => None,
        },
        p99_ms: v.p99_ms,
        evaluated_at_ms: now,
    }
}

#[cfg(test)]
mod tests;
