//! Ingest servers: `POST /v1/records` (axum) and the UDP line protocol, counting into an auditor.
//!
//! Both set the auditor's progress basis to [`ProgressBasis::LargestSeen`]: an ingest stream has
//! got as far as the largest event time it was sent or declared (see [`crate::ingest`]).

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
use crate::ingest::{IngestLine, parse_body, parse_line};
use crate::table::ProgressBasis;

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
                "Ingested records and progress records, by protocol and outcome (accepted, rejected).",
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
    auditor.set_progress_basis(ProgressBasis::LargestSeen);
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
        Ok(batch) => {
            for r in &batch.records {
                s.auditor.observe(&r.topic, &r.tier, r.observation);
            }
            for p in &batch.progress {
                s.auditor.declare_progress(&p.topic, &p.tier, p.event_time_ms);
            }
            s.metrics.records.with_label_values(&["http", "accepted"]).inc_by(batch.len() as u64);
            (StatusCode::OK, Json(json!({ "accepted": batch.len(), "progress": batch.progress.len() })))
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
    auditor.set_progress_basis(ProgressBasis::LargestSeen);
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
                Ok(IngestLine::Record(r)) => {
                    auditor.observe(&r.topic, &r.tier, r.observation);
                    ok += 1;
                }
                Ok(IngestLine::Progress(p)) => {
                    auditor.declare_progress(&p.topic, &p.tier, p.event_time_ms);
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::AuditorOptions;

    async fn post(app: Router, body: Vec<u8>, length: Option<usize>) -> (StatusCode, serde_json::Value) {
        let mut req = Request::post("/v1/records");
        if let Some(n) = length {
            req = req.header("content-length", n);
        }
        let resp = app.oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn an_oversized_body_gets_413_with_the_limit_and_is_counted() {
        let registry = prometheus::Registry::new();
        let metrics = IngestMetrics::register(&registry).unwrap();
        let auditor = Auditor::new(AuditorOptions::named("ingest-test"));
        let app = router(auditor.clone(), metrics.clone());
        // ~300 bytes a record, so the byte limit bites before the record limit.
        let record = format!(
            r#"{{"topic":"orders","tier":"producer","business_id":"{}","fingerprint":"1","bytes":1,"event_time":1700000000000}}"#,
            "x".repeat(200)
        );
        let mut body = Vec::with_capacity(MAX_BODY_BYTES + record.len() + 1);
        while body.len() <= MAX_BODY_BYTES {
            body.extend_from_slice(record.as_bytes());
            body.push(b'\n');
        }
        let n = body.len();
        for length in [Some(n), None] {
            let (status, json) = post(app.clone(), body.clone(), length).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
            let error = json["error"].as_str().unwrap();
            assert!(error.contains(&format!("at most {MAX_BODY_BYTES} bytes")), "{error}");
        }
        assert_eq!(metrics.records.with_label_values(&["http", "rejected"]).get(), 2);
        assert_eq!(auditor.snapshot().rows.len(), 0, "nothing from a refused request is counted");

        // Just under the limit is accepted whole.
        let lines = (MAX_BODY_BYTES - 1) / (record.len() + 1);
        let under = body[..lines * (record.len() + 1)].to_vec();
        let n = under.len();
        assert!(n < MAX_BODY_BYTES && n + record.len() + 1 > MAX_BODY_BYTES);
        let (status, json) = post(app, under, Some(n)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["accepted"].as_u64(), Some(lines as u64));
        let counted: u64 = auditor.snapshot().rows.iter().map(|r| r.tally.count).sum();
        assert_eq!(counted, lines as u64);
    }
}
