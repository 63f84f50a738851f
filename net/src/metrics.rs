//! `kaudit_http_*`: connections and refused requests of a process's HTTP listeners.

use std::fmt;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// Registered against the process's registry by [`HttpMetrics::register`].
#[derive(Clone)]
pub struct HttpMetrics {
    /// `kaudit_http_connections_open`.
    pub open: IntGauge,
    /// `kaudit_http_connections_closed_total{reason}`: `done` (by the client or after an error),
    /// `idle_timeout`, `header_timeout`, `evicted` (replaced at `max_connections`), `tls_error`,
    /// `shutdown`.
    pub closed: IntCounterVec,
    /// `kaudit_http_requests_refused_total{reason}`: `missing_token`, `invalid_token`,
    /// `wrong_role`, `body_timeout`.
    pub refused: IntCounterVec,
}

impl fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpMetrics")
    }
}

impl HttpMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let open = IntGauge::new("kaudit_http_connections_open", "HTTP connections open now.")?;
        let closed = IntCounterVec::new(
            Opts::new("kaudit_http_connections_closed_total", "HTTP connections closed, by reason."),
            &["reason"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new("kaudit_http_requests_refused_total", "HTTP requests refused before the handler, by reason."),
            &["reason"],
        )?;
        // Every reason's series from the start (at 0), so rates and alerts have data before the
        // first refusal.
        for reason in crate::server::closed_reasons() {
            closed.with_label_values(&[reason]);
        }
        for reason in crate::server::refused_reasons() {
            refused.with_label_values(&[reason]);
        }
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        Ok(Self { open, closed, refused })
    }
}
