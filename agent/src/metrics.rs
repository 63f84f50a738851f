//! `kaudit_agent_*` metrics, registered against a registry passed in. Updated per flush, never
//! per message: the flusher turns the table's counters into counter increments.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The agent's metrics.
#[derive(Clone)]
pub struct AgentMetrics {
    pub messages: IntCounterVec,
    pub bytes: IntCounterVec,
    pub no_time: IntCounterVec,
    pub malformed: IntCounterVec,
    pub late: IntCounterVec,
    pub delivery_failures: IntCounterVec,
    pub flushes: IntCounter,
    pub flush_failures: IntCounter,
    pub rows_written: IntCounter,
    pub flush_duration: Histogram,
    pub queued_batches: IntGauge,
    pub spool_batches: IntGauge,
    pub spool_bytes: IntGauge,
    pub spool_dropped_rows: IntCounter,
    pub spool_quarantined: IntCounter,
    pub spool_refused_batches: IntCounter,
    pub refused_records: IntCounterVec,
    pub open_buckets: IntGauge,
}

/// Why records were refused: the `reason` label of `kaudit_agent_refused_records_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedReason {
    /// A new (topic, tier) stream past `agent.max_streams`.
    StreamCap,
    /// A new bucket past `agent.max_open_buckets`: counted as malformed in its arrival bucket.
    BucketCap,
}

impl RefusedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusedReason::StreamCap => "stream_cap",
            RefusedReason::BucketCap => "bucket_cap",
        }
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), &["topic", "tier"])?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

impl AgentMetrics {
    /// Add per-stream counters (taken from a tally table since the last flush).
    pub fn record_streams(&self, streams: &[(String, String, crate::table::StreamCounters)]) {
        for (topic, tier, c) in streams {
            let labels = [topic.as_str(), tier.as_str()];
            self.messages.with_label_values(&labels).inc_by(c.messages);
            self.bytes.with_label_values(&labels).inc_by(c.bytes);
            self.no_time.with_label_values(&labels).inc_by(c.no_time);
            self.malformed.with_label_values(&labels).inc_by(c.malformed);
            self.late.with_label_values(&labels).inc_by(c.late);
        }
    }

    /// Register every agent metric in `registry`. Fails if they are registered there already.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let flush_duration = Histogram::with_opts(
            HistogramOpts::new("kaudit_agent_flush_duration_seconds", "Time to write one flush batch to the store.")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        registry.register(Box::new(flush_duration.clone()))?;
        Ok(Self {
            messages: counter_vec(registry, "kaudit_agent_messages_total", "Messages counted into tallies.")?,
            bytes: counter_vec(registry, "kaudit_agent_bytes_total", "Payload bytes counted into tallies.")?,
            no_time: counter_vec(
                registry,
                "kaudit_agent_no_time_messages_total",
                "Messages counted without an event time.",
            )?,
            malformed: counter_vec(
                registry,
                "kaudit_agent_malformed_messages_total",
                "Messages counted with an unparsable event time or business id.",
            )?,
            late: counter_vec(
                registry,
                "kaudit_agent_late_messages_total",
                "Messages that arrived after their bucket closed, counted in a late row.",
            )?,
            delivery_failures: counter_vec(
                registry,
                "kaudit_agent_delivery_failures_total",
                "Produced messages whose delivery failed; not counted as sent.",
            )?,
            flushes: counter(registry, "kaudit_agent_flushes_total", "Flush batches written to the store.")?,
            flush_failures: counter(
                registry,
                "kaudit_agent_flush_failures_total",
                "Store writes that failed and were kept for retry.",
            )?,
            rows_written: counter(registry, "kaudit_agent_rows_written_total", "Tally rows written to the store.")?,
            flush_duration,
            queued_batches: gauge(
                registry,
                "kaudit_agent_queued_batches",
                "Flush batches waiting in memory for the store.",
            )?,
            spool_batches: gauge(
                registry,
                "kaudit_agent_spool_batches",
                "Flush batches waiting in the on-disk spool.",
            )?,
            spool_bytes: gauge(registry, "kaudit_agent_spool_bytes", "Bytes in the on-disk spool.")?,
            spool_dropped_rows: counter(
                registry,
                "kaudit_agent_spool_dropped_rows_total",
                "Tally rows dropped because the spool was full (audit data lost).",
            )?,
            spool_quarantined: counter(
                registry,
                "kaudit_agent_spool_quarantined_total",
                "Spool entries that could not be read or decoded, moved to <spool>/quarantine/.",
            )?,
            spool_refused_batches: counter(
                registry,
                "kaudit_agent_spool_refused_batches_total",
                "Flush batches the spool could not take (larger than spool_max_bytes, or full in durable \
                 mode); kept in memory.",
            )?,
            refused_records: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "kaudit_agent_refused_records_total",
                        "Records refused (ingest) or counted as malformed in the ~overflow stream (Kafka \
                         clients), by reason.",
                    ),
                    &["reason"],
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            open_buckets: gauge(registry, "kaudit_agent_open_buckets", "Open tally buckets held in memory.")?,
        })
    }
}
