//! Ingest servers: `POST /v1/records` (axum) and the UDP line protocol, counting into an auditor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use prometheus::{IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::UdpSocket;

use crate::auditor::Auditor;
use crate::ingest::{parse_body, parse_line};

/// `[ingest]`: accept records from apps in other languages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// UDP address for the line protocol; none: HTTP only. HTTP `POST /v1/records` is served on
    /// `agent_listen`.
    #[serde(default)]
    pub udp_listen: Option<String>,
}

/// `kaudit_agent_ingest_records_total{protocol, outcome}`.
#[derive(Clone)]
pub struct IngestMetrics {
    pub records: IntCounterVec,
}

impl IngestMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let records = IntCounterVec::new(
            Opts::new(
                "kaudit_agent_ingest_records_total",
                "Ingested records, by protocol and outcome (accepted, rejected).",
            ),
            &["protocol", "outcome"],
        )?;
        registry.register(Box::new(records.clone()))?;
        Ok(Self { records })
    }
}

#[derive(Clone)]
struct IngestState {
    auditor: Auditor,
    metrics: IngestMetrics,
}

/// Most bytes one HTTP request may carry.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// `POST /v1/records`.
pub fn router(auditor: Auditor, metrics: IngestMetrics) -> Router {
    Router::new()
        .route("/v1/records", post(records))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(IngestState { auditor, metrics }))
}

async fn records(
    State(s): State<Arc<IngestState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> (StatusCode, Json<serde_json::Value>) {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            s.metrics.records.with_label_values(&["http", "rejected"]).inc();
            let error = format!("{rejection} (at most {MAX_BODY_BYTES} bytes per request)");
            return (rejection.status(), Json(json!({ "error": error, "problems": [] })));
        }
    };
    match parse_body(&body) {
        Ok(records) => {
            for r in &records {
                s.auditor.observe(&r.topic, &r.tier, r.observation);
            }
            s.metrics.records.with_label_values(&["http", "accepted"]).inc_by(records.len() as u64);
            (StatusCode::OK, Json(json!({ "accepted": records.len() })))
        }
        Err(problems) => {
            s.metrics.records.with_label_values(&["http", "rejected"]).inc();
            let error = match problems.as_slice() {
                [only] => only.clone(),
                [first, rest @ ..] => format!("{first} (and {} more problems)", rest.len()),
                [] => "invalid request".into(),
            };
            (StatusCode::BAD_REQUEST, Json(json!({ "error": error, "problems": problems })))
        }
    }
}

/// Count every valid line of every datagram on `socket` until `shutdown` resolves.
pub async fn serve_udp(
    socket: UdpSocket,
    auditor: Auditor,
    metrics: IngestMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut buf = vec![0u8; 65_536];
    let mut last_log: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let n = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, _)) => n,
                Err(error) => {
                    tracing::warn!(%error, "udp ingest receive failed");
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let (mut ok, mut bad) = (0u64, 0u64);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match parse_line(line.trim_end_matches('\r')) {
                Ok(r) => {
                    auditor.observe(&r.topic, &r.tier, r.observation);
                    ok += 1;
                }
                Err(error) => {
                    bad += 1;
                    if last_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(%error, line, "rejected udp ingest line (logged at most every 10 s)");
                        last_log = Some(Instant::now());
                    }
                }
            }
        }
        metrics.records.with_label_values(&["udp", "accepted"]).inc_by(ok);
        metrics.records.with_label_values(&["udp", "rejected"]).inc_by(bad);
    }
}
