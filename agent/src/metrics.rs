//! `kaudit_agent_*` metrics, registered against a registry passed in. Updated per flush, never
//! per message: the flusher turns the table's counters into counter increments. Several agents
//! can share one registry when each carries its own constant labels (`agent="tap"`).

use std::collections::HashMap;

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

/// A registry and the constant labels every metric registered through it carries.
struct Labelled<'a> {
    registry: &'a Registry,
    labels: HashMap<String, String>,
}

impl Labelled<'_> {
    fn opts(&self, name: &str, help: &str) -> Opts {
        Opts::new(name, help).const_labels(self.labels.clone())
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
        let c = IntCounterVec::new(self.opts(name, help), labels)?;
        self.registry.register(Box::new(c.clone()))?;
        Ok(c)
    }

    /// Per stream: `topic`, `tier`.
    fn stream_counter(&self, name: &str, help: &str) -> prometheus::Result<IntCounterVec> {
        self.counter_vec(name, help, &["topic", "tier"])
    }

    fn counter(&self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        let c = IntCounter::with_opts(self.opts(name, help))?;
        self.registry.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        let g = IntGauge::with_opts(self.opts(name, help))?;
        self.registry.register(Box::new(g.clone()))?;
        Ok(g)
    }
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
            // At 0 until a delivery fails, so the series exists for rates and alerts.
            self.delivery_failures.with_label_values(&labels);
        }
    }

    /// Register every agent metric in `registry`. Fails if they are registered there already.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        Self::register_labelled(registry, &[])
    }

    /// [`AgentMetrics::register`] with constant `labels` on every series (`[("agent", "tap")]`), so
    /// several agents of one process share a registry and its `/metrics` with their series apart.
    /// Fails (`AlreadyReg`) for a second agent with the same labels.
    pub fn register_labelled(registry: &Registry, labels: &[(&str, &str)]) -> prometheus::Result<Self> {
        let labels: HashMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let flush_duration = Histogram::with_opts(
            HistogramOpts::new("kaudit_agent_flush_duration_seconds", "Time to write one flush batch to the store.")
                .const_labels(labels.clone())
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        registry.register(Box::new(flush_duration.clone()))?;
        let r = Labelled { registry, labels };
        Ok(Self {
            messages: r.stream_counter("kaudit_agent_messages_total", "Messages counted into tallies.")?,
            bytes: r.stream_counter("kaudit_agent_bytes_total", "Payload bytes counted into tallies.")?,
            no_time: r
                .stream_counter("kaudit_agent_no_time_messages_total", "Messages counted without an event time.")?,
            malformed: r.stream_counter(
                "kaudit_agent_malformed_messages_total",
                "Messages counted with an unparsable event time or business id.",
            )?,
            late: r.stream_counter(
                "kaudit_agent_late_messages_total",
                "Messages that arrived after their bucket closed, counted in a late row.",
            )?,
            delivery_failures: r.stream_counter(
                "kaudit_agent_delivery_failures_total",
                "Produced messages whose delivery failed; not counted as sent.",
            )?,
            flushes: r.counter("kaudit_agent_flushes_total", "Flush batches written to the store.")?,
            flush_failures: r
                .counter("kaudit_agent_flush_failures_total", "Store writes that failed and were kept for retry.")?,
            rows_written: r.counter("kaudit_agent_rows_written_total", "Tally rows written to the store.")?,
            flush_duration,
            queued_batches: r.gauge("kaudit_agent_queued_batches", "Flush batches waiting in memory for the store.")?,
            spool_batches: r.gauge("kaudit_agent_spool_batches", "Flush batches waiting in the on-disk spool.")?,
            spool_bytes: r.gauge("kaudit_agent_spool_bytes", "Bytes in the on-disk spool.")?,
            spool_dropped_rows: r.counter(
                "kaudit_agent_spool_dropped_rows_total",
                "Tally rows dropped because the spool was full (audit data lost).",
            )?,
            spool_quarantined: r.counter(
                "kaudit_agent_spool_quarantined_total",
                "Spool entries that could not be read or decoded, moved to <spool>/quarantine/.",
            )?,
            spool_refused_batches: r.counter(
                "kaudit_agent_spool_refused_batches_total",
                "Flush batches the spool could not take (larger than spool_max_bytes, or full in durable \
                 mode); kept in memory.",
            )?,
            refused_records: r.counter_vec(
                "kaudit_agent_refused_records_total",
                "Records refused (ingest) or counted as malformed in the ~overflow stream (Kafka clients), by \
                 reason.",
                &["reason"],
            )?,
            open_buckets: r.gauge("kaudit_agent_open_buckets", "Open tally buckets held in memory.")?,
        })
    }
}
