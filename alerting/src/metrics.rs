//! Notification metrics, registered against a registry passed in.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct AlertMetrics {
    /// Notifications delivered, by sink.
    pub sent: IntCounterVec,
    /// Delivery attempts that failed, by sink and whether they will be retried.
    pub failed: IntCounterVec,
    /// Notifications waiting in the outbox, by sink.
    pub pending: IntGaugeVec,
    /// Undelivered notifications dropped because the sink's outbox was full, by sink.
    pub dropped: IntCounterVec,
}

impl AlertMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let sent = IntCounterVec::new(
            Opts::new("kaudit_verifier_notifications_sent_total", "Alert notifications delivered, by sink."),
            &["sink"],
        )?;
        let failed = IntCounterVec::new(
            Opts::new(
                "kaudit_verifier_notifications_failed_total",
                "Failed notification attempts, by sink and outcome.",
            ),
            &["sink", "outcome"],
        )?;
        let pending = IntGaugeVec::new(
            Opts::new("kaudit_verifier_notifications_pending", "Notifications waiting in the outbox, by sink."),
            &["sink"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "kaudit_verifier_notifications_dropped_total",
                "Undelivered notifications dropped because the sink's outbox was full, by sink.",
            ),
            &["sink"],
        )?;
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(failed.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        Ok(Self { sent, failed, pending, dropped })
    }

    /// Create `sink`'s series at 0, so its rates and alerts have data before its first failure.
    pub fn init_sink(&self, sink: &str) {
        self.sent.with_label_values(&[sink]);
        for outcome in ["retry", "rejected"] {
            self.failed.with_label_values(&[sink, outcome]);
        }
        self.pending.with_label_values(&[sink]);
        self.dropped.with_label_values(&[sink]);
    }
}
