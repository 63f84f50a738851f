//! The verifier's HTTP API (axum).
//!
//! * `GET /api/v1/topics`: topics with tallies, and the pipeline that applies to each.
//! * `GET /api/v1/buckets?topic=T&from=F&to=T`: per bucket, each tier's merged tally (counts,
//!   bytes, fingerprint aggregates, latency quantiles, agents) and the stored verdicts, each with
//!   its `detail` (why it is pending, unreached or indeterminate; `null` otherwise). `from` and
//!   `to` are ms since the epoch or RFC 3339 UTC (`2026-11-21T10:00:00Z`); at most 7 days.
//! * `GET /api/v1/alerts[?state=firing|resolved]`: alerts by dedup key.
//! * `/metrics`, `/healthz` (the process is up), `/readyz` (an evaluation pass has succeeded).
//!
//! Bad parameters answer 400 with `{"error": "<reason>"}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kaudit_alerting::time::{parse_rfc3339, rfc3339};
use kaudit_schema::Store;
use serde_json::{Value, json};

use crate::pipeline::{Pipeline, pipeline_for};

/// Longest range one `/api/v1/buckets` call may ask for.
pub const MAX_RANGE_MS: i64 = 7 * 86_400_000;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub registry: prometheus::Registry,
    pub pipelines: Arc<Vec<Pipeline>>,
    /// Set once an evaluation pass has succeeded.
    pub ready: Arc<AtomicBool>,
}

/// The router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/topics", get(topics))
        .route("/api/v1/buckets", get(buckets))
        .route("/api/v1/alerts", get(alerts))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

enum ApiError {
    BadRequest(String),
    Store(kaudit_schema::StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadRequest(reason) => (StatusCode::BAD_REQUEST, Json(json!({ "error": reason }))).into_response(),
            ApiError::Store(e) => {
                tracing::warn!(error = %e, "api store error");
                (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": format!("store unavailable: {e}") })))
                    .into_response()
            }
        }
    }
}

impl From<kaudit_schema::StoreError> for ApiError {
    fn from(e: kaudit_schema::StoreError) -> Self {
        ApiError::Store(e)
    }
}

type Params = Query<HashMap<String, String>>;

fn only(params: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::BadRequest(format!("unknown parameter {k:?}; expected {}", allowed.join(", ")))),
        None => Ok(()),
    }
}

fn time_param(params: &HashMap<String, String>, name: &str) -> Result<i64, ApiError> {
    let raw = params
        .get(name)
        .ok_or_else(|| ApiError::BadRequest(format!("missing parameter {name:?} (ms since the epoch or RFC 3339)")))?;
    let t = raw.parse::<i64>().ok().or_else(|| parse_rfc3339(raw)).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{name}={raw:?} is neither ms since the epoch nor RFC 3339 UTC like 2026-11-21T10:00:00Z"
        ))
    })?;
    if t < 0 {
        return Err(ApiError::BadRequest(format!("{name}={raw:?} is before 1970")));
    }
    Ok(t)
}

async fn topics(State(s): State<ApiState>, Query(params): Params) -> Result<Json<Value>, ApiError> {
    only(&params, &[])?;
    let list: Vec<Value> = s
        .store
        .list_topics()
        .await?
        .into_iter()
        .map(|t| {
            let pipeline = pipeline_for(&s.pipelines, &t).map(|p| p.tiers().to_vec());
            json!({ "name": t, "tiers": pipeline })
        })
        .collect();
    Ok(Json(json!({ "topics": list })))
}

async fn buckets(State(s): State<ApiState>, Query(params): Params) -> Result<Json<Value>, ApiError> {
    only(&params, &["topic", "from", "to"])?;
    let topic = params
        .get("topic")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::BadRequest("missing parameter \"topic\"".into()))?;
    let (from, to) = (time_param(&params, "from")?, time_param(&params, "to")?);
    if from >= to {
        return Err(ApiError::BadRequest(format!("from ({from}) must be before to ({to})")));
    }
    if to - from > MAX_RANGE_MS {
        return Err(ApiError::BadRequest(format!("range of {} ms is over the 7-day limit", to - from)));
    }
    let rows = s.store.read_range(topic, from, to).await?;
    let verdicts = s.store.read_verdicts(topic, from, to).await?;
    let mut by_bucket: BTreeMap<i64, BTreeMap<String, (kaudit_schema::Tally, usize)>> = BTreeMap::new();
    for r in &rows {
        let e = by_bucket.entry(r.key.bucket_start_ms).or_default().entry(r.key.tier.clone()).or_default();
        e.0.merge(&r.tally);
        e.1 += 1;
    }
    let mut verdicts_by: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for v in verdicts {
        verdicts_by.entry(v.bucket_start_ms).or_default().push(serde_json::to_value(&v).expect("verdicts serialise"));
    }
    let buckets: Vec<Value> = by_bucket
        .into_iter()
        .map(|(bucket, tiers)| {
            let tiers: Vec<Value> = tiers
                .into_iter()
                .map(|(tier, (t, agents))| {
                    json!({
                        "tier": tier, "agents": agents, "count": t.count, "bytes": t.bytes,
                        "fp_xor": format!("{:016x}", t.fp_xor), "fp_sum": format!("{:016x}", t.fp_sum),
                        "no_time": t.no_time, "malformed": t.malformed,
                        "latency_ms": t.latency.quantiles(),
                    })
                })
                .collect();
            json!({
                "bucket_start_ms": bucket, "bucket_start": rfc3339(bucket),
                "tiers": tiers, "verdicts": verdicts_by.remove(&bucket).unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(json!({ "topic": topic, "from": from, "to": to, "buckets": buckets })))
}

async fn alerts(State(s): State<ApiState>, Query(params): Params) -> Result<Json<Value>, ApiError> {
    only(&params, &["state"])?;
    let state = params.get("state").map(String::as_str);
    if let Some(st) = state.filter(|st| !["firing", "resolved"].contains(st)) {
        return Err(ApiError::BadRequest(format!("state={st:?}: expected firing or resolved")));
    }
    let list: Vec<Value> = s
        .store
        .list_alerts()
        .await?
        .into_iter()
        .filter(|a| state.is_none_or(|st| a.state == st))
        .filter_map(|a| serde_json::from_str(&a.body).ok())
        .collect();
    Ok(Json(json!({ "alerts": list })))
}

async fn metrics(State(s): State<ApiState>) -> Response {
    match prometheus::TextEncoder::new().encode_to_string(&s.registry.gather()) {
        Ok(text) => ([("content-type", "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(s): State<ApiState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: no evaluation pass has succeeded yet\n")
    }
}
