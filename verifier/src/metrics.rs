//! `kaudit_verifier_*` metrics, registered against a registry passed in.

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct VerifierMetrics {
    pub buckets_evaluated: IntCounter,
    pub verdicts: IntCounterVec,
    pub revisions: IntCounter,
    pub missing_messages: IntCounterVec,
    pub extra_messages: IntCounterVec,
    pub cusum: GaugeVec,
    /// Tally rows read from the store.
    pub rows_read: IntCounter,
    /// Topics read in full: the first pass after a start, new topics; incremental passes after.
    pub full_reads: IntCounter,
    /// Upstream messages of each edge's buckets judged, by topic and downstream tier.
    pub upstream_messages: IntCounterVec,
    /// 1 per firing alert, by kind, topic and tier (resolved alerts leave).
    pub alert_firing: IntGaugeVec,
    /// Downstream latency of the last bucket judged on each edge, s, by quantile.
    pub latency: GaugeVec,
    /// How far each tier's watermark is behind its upstream's, s (tiers that report progress).
    pub tier_lag: GaugeVec,
    /// Live agent instances per tier (tiers that report progress or heartbeats).
    pub agents_live: IntGaugeVec,
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
            missing_messages: IntCounterVec::new(
                Opts::new(
                    "kaudit_verifier_missing_messages_total",
                    "Messages missing downstream, at first evaluation.",
                ),
                &["topic", "tier"],
            )?,
            extra_messages: IntCounterVec::new(
                Opts::new(
                    "kaudit_verifier_extra_messages_total",
                    "Extra (duplicate) messages downstream, at first evaluation.",
                ),
                &["topic", "tier"],
            )?,
            cusum: GaugeVec::new(
                Opts::new("kaudit_verifier_cusum_statistic", "CUSUM statistic, in sigmas, by topic, tier and signal."),
                &["topic", "tier", "signal"],
            )?,
            rows_read: IntCounter::new("kaudit_verifier_tally_rows_read_total", "Tally rows read from the store.")?,
            full_reads: IntCounter::new(
                "kaudit_verifier_full_reads_total",
                "Topics whose tallies were read in full (the first pass after a start, a new topic); later \
                 passes read only buckets that changed or are still open.",
            )?,
            upstream_messages: IntCounterVec::new(
                Opts::new(
                    "kaudit_verifier_upstream_messages_total",
                    "Messages the upstream tier counted in the buckets judged on each edge, by topic and \
                     downstream tier (at first evaluation; the denominator of loss and duplicate ratios).",
                ),
                &["topic", "tier"],
            )?,
            alert_firing: IntGaugeVec::new(
                Opts::new("kaudit_verifier_alert_firing", "1 for each firing alert, by kind, topic and tier."),
                &["kind", "topic", "tier"],
            )?,
            latency: GaugeVec::new(
                Opts::new(
                    "kaudit_verifier_latency_seconds",
                    "Latency (arrival at the tier minus event time) of the last bucket judged on each edge, \
                     from the merged sketches, by topic, tier and stat (p50, p95, p99, max).",
                ),
                &["topic", "tier", "stat"],
            )?,
            tier_lag: GaugeVec::new(
                Opts::new(
                    "kaudit_verifier_tier_lag_seconds",
                    "How far a tier's progress watermark is behind its upstream tier's, by topic and tier.",
                ),
                &["topic", "tier"],
            )?,
            agents_live: IntGaugeVec::new(
                Opts::new("kaudit_verifier_agents_live", "Agent instances alive (heartbeating), by topic and tier."),
                &["topic", "tier"],
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
        r.register(Box::new(m.missing_messages.clone()))?;
        r.register(Box::new(m.extra_messages.clone()))?;
        r.register(Box::new(m.cusum.clone()))?;
        r.register(Box::new(m.latency.clone()))?;
        r.register(Box::new(m.upstream_messages.clone()))?;
        r.register(Box::new(m.rows_read.clone()))?;
        r.register(Box::new(m.full_reads.clone()))?;
        r.register(Box::new(m.alert_firing.clone()))?;
        r.register(Box::new(m.tier_lag.clone()))?;
        r.register(Box::new(m.agents_live.clone()))?;
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
