//! Ingest servers: `POST /v1/records` (axum) and the UDP line protocol, counting into an auditor.
//!
//! Both set the auditor's progress basis to [`ProgressBasis::LargestSeen`]: an ingest stream has
//! got as far as the largest event time it was sent or declared (see [`crate::ingest`]).
//!
//! ## Answers of `POST /v1/records`
//! | status | when | counted |
//! |---|---|---|
//! | 200 | every record valid and counted, and (durable mode, the default) durable: in the store or fsynced in the spool ([`crate::ack`]) | yes |
//! | 400 | a record or the body is invalid (every problem listed, at most 100), or a bad `Idempotency-Key` | nothing |
//! | 409 | a request with the same `Idempotency-Key` is being handled | nothing |
//! | 413 | the body is over [`MAX_BODY_BYTES`] | nothing |
//! | 422 | the request's new (topic, tier) streams would pass `agent.max_streams` (retrying cannot help until the agent restarts with a larger cap: streams are never forgotten, so 422 rather than 429), or an `Idempotency-Key` reused with another body | nothing |
//! | 503 | counted, but not durable within `ingest.ack.timeout_ms` (store down and spool full) | yes: retry with the same `Idempotency-Key`, which answers 200 once they are durable |
//!
//! A retry with the same `Idempotency-Key` and body answers the first answer and counts nothing
//! (see [`crate::idempotency`]). UDP lines past the stream cap are dropped and counted as refused.
//!
//! Metrics: `kaudit_agent_ingest_records_total{protocol, outcome}` counts records (accepted,
//! rejected: invalid, refused: stream cap); `kaudit_agent_ingest_requests_total{outcome}` counts
//! HTTP requests (accepted, replayed, rejected, refused, conflict, unavailable).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kaudit_schema::ConfigIssue;
use prometheus::{IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::UdpSocket;

use crate::ack::AckGate;
use crate::auditor::Auditor;
use crate::clock::Clock;
use crate::idempotency::{Answer, Begin, Idempotency, IdempotencyOptions, check_key};
use crate::ingest::{IngestBatch, parse_body, parse_line};
use crate::table::{ProgressBasis, StreamCapExceeded};

mod settings;

pub use settings::{AckConfig, AckMode, IdempotencyConfig};

/// `[ingest]`: accept records from apps in other languages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// UDP address for the line protocol; none: HTTP only. HTTP `POST /v1/records` is served on
    /// `agent_listen`.
    #[serde(default)]
    pub udp_listen: Option<String>,
    /// Datagrams carry no token, so `udp_listen` must be a loopback address (apps on the same
    /// host or pod) unless this is `true`: anyone who can reach the port can then count records.
    /// Default false.
    #[serde(default)]
    pub udp_allow_network: bool,
    /// When `POST /v1/records` answers (`[ingest.ack]`): durable (default) or immediate.
    #[serde(default)]
    pub ack: AckConfig,
    /// `Idempotency-Key` window and bound (`[ingest.idempotency]`).
    #[serde(default)]
    pub idempotency: IdempotencyConfig,
}

impl IngestConfig {
    /// Every problem with the acknowledgement and idempotency settings, under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<ConfigIssue> {
        let mut issues = self.ack.validate(&format!("{prefix}.ack"));
        issues.extend(self.idempotency.validate(&format!("{prefix}.idempotency")));
        issues
    }

    /// The handlers' options: an ack gate in durable mode (give the same one to the flusher, in
    /// [`crate::FlusherOptions::ack_gate`]) and the key cache, its journal at `journal` (durable
    /// mode only).
    pub fn options(&self, journal: PathBuf, clock: Arc<dyn Clock>) -> std::io::Result<IngestOptions> {
        let ack_gate = self.ack.gate();
        let idempotency = self.idempotency.open(ack_gate.as_ref(), journal, clock)?;
        Ok(IngestOptions { ack_gate, ack_timeout: Duration::from_millis(self.ack.timeout_ms), idempotency })
    }
}

/// How `POST /v1/records` answers.
#[derive(Clone)]
pub struct IngestOptions {
    /// Wait until the records are durable (the flusher's gate); `None`: answer at once.
    pub ack_gate: Option<AckGate>,
    /// How long to wait before answering 503.
    pub ack_timeout: Duration,
    pub idempotency: Idempotency,
}

impl IngestOptions {
    /// Immediate answers, keys remembered in memory with the default window.
    pub fn immediate() -> Self {
        let idempotency = Idempotency::open(&IdempotencyOptions::default(), Arc::new(crate::SystemClock))
            .expect("no journal, no i/o");
        Self { ack_gate: None, ack_timeout: Duration::from_secs(10), idempotency }
    }
}

/// `kaudit_agent_ingest_records_total{protocol, outcome}` and
/// `kaudit_agent_ingest_requests_total{outcome}`.
#[derive(Clone)]
pub struct IngestMetrics {
    pub records: IntCounterVec,
    pub requests: IntCounterVec,
}

impl IngestMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let records = IntCounterVec::new(
            Opts::new(
                "kaudit_agent_ingest_records_total",
                "Ingested records and progress records, by protocol and outcome (accepted, rejected, refused).",
            ),
            &["protocol", "outcome"],
        )?;
        registry.register(Box::new(records.clone()))?;
        let requests = IntCounterVec::new(
            Opts::new(
                "kaudit_agent_ingest_requests_total",
                "HTTP ingest requests by outcome (accepted, replayed, rejected, refused, conflict, unavailable).",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        Ok(Self { records, requests })
    }

    fn request(&self, outcome: &str) {
        self.requests.with_label_values(&[outcome]).inc();
    }

    fn http_records(&self, outcome: &str, n: usize) {
        self.records.with_label_values(&["http", outcome]).inc_by(n as u64);
    }
}

struct IngestState {
    auditor: Auditor,
    metrics: IngestMetrics,
    options: IngestOptions,
}

/// Most bytes one HTTP request may carry.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// The request header that makes a retry count once.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `POST /v1/records`, answering at once (no durability wait), keys in memory.
pub fn router(auditor: Auditor, metrics: IngestMetrics) -> Router {
    router_with(auditor, metrics, IngestOptions::immediate())
}

/// `POST /v1/records` answering as `options` say.
pub fn router_with(auditor: Auditor, metrics: IngestMetrics, options: IngestOptions) -> Router {
    auditor.set_progress_basis(ProgressBasis::LargestSeen);
    Router::new()
        .route("/v1/records", post(records))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(IngestState { auditor, metrics, options }))
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

async fn records(
    State(s): State<Arc<IngestState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            s.metrics.request("rejected");
            let error = format!("{rejection} (at most {MAX_BODY_BYTES} bytes per request)");
            return answer(rejection.status(), json!({ "error": error, "problems": [] }));
        }
    };
    let ticket = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(key) => match check_key(key.as_bytes()) {
            Err(error) => {
                s.metrics.request("rejected");
                return answer(StatusCode::BAD_REQUEST, json!({ "error": error, "problems": [] }));
            }
            Ok(()) => match s.options.idempotency.begin(key.as_bytes(), &body) {
                Begin::New(ticket) => Some(ticket),
                Begin::Replay(first) => return s.acknowledge(first, true).await,
                Begin::Conflict => {
                    s.metrics.request("conflict");
                    let error = "this Idempotency-Key was used with a different body; use a new key for new records";
                    return answer(StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": error }));
                }
                Begin::InProgress => {
                    s.metrics.request("conflict");
                    let error = "a request with this Idempotency-Key is being handled; retry later";
                    return answer(StatusCode::CONFLICT, json!({ "error": error }));
                }
            },
        },
    };
    let batch = match parse_body(&body) {
        Ok(batch) => batch,
        Err(rejection) => {
            s.metrics.request("rejected");
            s.metrics.http_records("rejected", rejection.records);
            let body = json!({ "error": rejection.summary(), "problems": rejection.listed() });
            return answer(StatusCode::BAD_REQUEST, body);
        }
    };
    drop(body);
    let counted = match ticket {
        Some(ticket) => ticket.count(|| s.count(&batch)),
        None => s.count(&batch),
    };
    match counted {
        Ok(first) => {
            s.metrics.http_records("accepted", batch.len());
            drop(batch);
            s.acknowledge(first, false).await
        }
        Err(cap) => {
            s.metrics.request("refused");
            s.metrics.http_records("refused", batch.len());
            answer(StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": cap.to_string(), "problems": [] }))
        }
    }
}

impl IngestState {
    /// Count a valid batch, all or nothing.
    fn count(&self, batch: &IngestBatch) -> Result<Answer, StreamCapExceeded> {
        let taken = self.auditor.count_batch(batch)?;
        Ok(Answer { accepted: batch.len() as u64, progress: batch.progress.len() as u64, needs: taken + 1 })
    }

    /// 200 once `counted` is durable (at once without a gate), else 503.
    async fn acknowledge(&self, counted: Answer, replayed: bool) -> Response {
        if let Some(gate) = &self.options.ack_gate
            && let Err(e) = gate.wait(counted.needs, self.options.ack_timeout).await
        {
            self.metrics.request("unavailable");
            let error = format!(
                "records counted but not yet durable after {:?} (store unavailable and spool full): they \
                 will be written when the store returns unless the agent stops first; retry with the same \
                 Idempotency-Key to be answered once they are durable",
                e.waited
            );
            return answer(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": error, "accepted": counted.accepted }));
        }
        self.metrics.request(if replayed { "replayed" } else { "accepted" });
        let body = json!({ "accepted": counted.accepted, "progress": counted.progress });
        let mut response = answer(StatusCode::OK, body);
        if replayed {
            response.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
        }
        response
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
    let mut lines = Vec::new();
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
        let mut bad = 0u64;
        lines.clear();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match parse_line(line.trim_end_matches('\r')) {
                Ok(valid) => lines.push(valid),
                Err(error) => {
                    bad += 1;
                    if last_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        let line: String = line.chars().take(200).collect();
                        tracing::warn!(%error, line, "rejected udp ingest line (logged at most every 10 s)");
                        last_log = Some(Instant::now());
                    }
                }
            }
        }
        let (ok, refused) = auditor.count_lines(&lines);
        metrics.records.with_label_values(&["udp", "accepted"]).inc_by(ok);
        metrics.records.with_label_values(&["udp", "rejected"]).inc_by(bad);
        metrics.records.with_label_values(&["udp", "refused"]).inc_by(refused);
    }
}

#[cfg(test)]
mod tests;
