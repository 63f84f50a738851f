//! `kaudit_verifier_*` metrics, registered against a registry passed in. The per-topic series are
//! [`TopicSeries`], rendered from plain numbers at scrape time.

mod topic_series;

pub use topic_series::{CUSUM_SIGNALS, LATENCY_STATS, TopicSeries};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct VerifierMetrics {
    pub buckets_evaluated: IntCounter,
    pub verdicts: IntCounterVec,
    pub revisions: IntCounter,
    /// Tally rows read from the store.
    pub rows_read: IntCounter,
    /// Topics read in full: the first pass after a start, new topics; incremental passes after.
    pub full_reads: IntCounter,
    /// 1 per firing alert, by kind, topic and tier (resolved alerts leave).
    pub alert_firing: IntGaugeVec,
    /// Per topic and tier: messages upstream, missing and extra on each edge, its latency and
    /// CUSUM statistics, each tier's lag and live agents.
    pub topics: TopicSeries,
    pub alerts_firing: IntGauge,
    pub evaluation_duration: Histogram,
    pub evaluation_failures: IntCounter,
    /// Topics with a pipeline under watch (evaluated every pass).
    pub topics_watched: IntGauge,
    /// New topics waiting for a later pass (`verifier.max_new_topics_per_pass`).
    pub topics_waiting: IntGauge,
    /// Topics ignored because `verifier.max_topics` are watched.
    pub topics_ignored: IntGauge,
    /// Alert transitions stored without their own notification by the flood guard, by kind.
    pub notifications_suppressed: IntCounterVec,
}

impl VerifierMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            buckets_evaluated: IntCounter::new(
                "kaudit_verifier_buckets_evaluated_total",
                "Bucket edges evaluated for the first time.",
            )?,
            verdicts: IntCounterVec::new(
                Opts::new(
                    "kaudit_verifier_verdicts_total",
                    "Verdicts reached or revised, by kind (pending counted once per bucket edge).",
                ),
                &["kind"],
            )?,
            revisions: IntCounter::new("kaudit_verifier_revisions_total", "Verdicts revised by late tallies.")?,
            topics: TopicSeries::new()?,
            rows_read: IntCounter::new("kaudit_verifier_tally_rows_read_total", "Tally rows read from the store.")?,
            full_reads: IntCounter::new(
                "kaudit_verifier_full_reads_total",
                "Topics whose tallies were read in full (the first pass after a start, a new topic); later \
                 passes read only buckets that changed or are still open.",
            )?,
            alert_firing: IntGaugeVec::new(
                Opts::new("kaudit_verifier_alert_firing", "1 for each firing alert, by kind, topic and tier."),
                &["kind", "topic", "tier"],
            )?,
            alerts_firing: IntGauge::new("kaudit_verifier_alerts_firing", "Alerts currently firing.")?,
            evaluation_duration: Histogram::with_opts(HistogramOpts::new(
                "kaudit_verifier_evaluation_duration_seconds",
                "Time of one evaluation pass over every topic.",
            ))?,
            evaluation_failures: IntCounter::new(
                "kaudit_verifier_evaluation_failures_total",
                "Evaluation passes that failed (store errors).",
            )?,
            topics_watched: IntGauge::new(
                "kaudit_verifier_topics_watched",
                "Topics with a pipeline under watch (evaluated every pass).",
            )?,
            topics_waiting: IntGauge::new(
                "kaudit_verifier_topics_waiting",
                "New topics waiting for a later pass (verifier.max_new_topics_per_pass).",
            )?,
            topics_ignored: IntGauge::new(
                "kaudit_verifier_topics_ignored",
                "Topics ignored because verifier.max_topics topics are watched.",
            )?,
            notifications_suppressed: IntCounterVec::new(
                Opts::new(
                    "kaudit_verifier_notifications_suppressed_total",
                    "Alert transitions stored without their own notification by the flood guard, by kind.",
                ),
                &["kind"],
            )?,
        };
        r.register(Box::new(m.buckets_evaluated.clone()))?;
        r.register(Box::new(m.verdicts.clone()))?;
        r.register(Box::new(m.revisions.clone()))?;
        r.register(Box::new(m.topics.clone()))?;
        r.register(Box::new(m.rows_read.clone()))?;
        r.register(Box::new(m.full_reads.clone()))?;
        r.register(Box::new(m.alert_firing.clone()))?;
        r.register(Box::new(m.alerts_firing.clone()))?;
        r.register(Box::new(m.evaluation_duration.clone()))?;
        r.register(Box::new(m.evaluation_failures.clone()))?;
        r.register(Box::new(m.topics_watched.clone()))?;
        r.register(Box::new(m.topics_waiting.clone()))?;
        r.register(Box::new(m.topics_ignored.clone()))?;
        r.register(Box::new(m.notifications_suppressed.clone()))?;
        Ok(m)
    }
}
