//! The verifier's HTTP API (axum).
//!
//! * `GET /api/v1/topics[?limit=N&after=NAME]`: topics with tallies, and the pipeline that
//!   applies to each.
//! * `GET /api/v1/buckets?topic=T&from=F&to=T[&limit=N]`: per bucket, each tier's merged tally
//!   (counts, bytes, fingerprint aggregates, latency quantiles, agents) and the stored verdicts,
//!   each with its `detail` (why it is pending, unreached or indeterminate; `null` otherwise).
//!   `from` and `to` are ms since the epoch, RFC 3339 (`2026-11-21T10:00:00Z`) or a date; at most
//!   7 days apart.
//! * `GET /api/v1/buckets/{topic}/{bucket}/diff?tier=T`: every message that differs on the edge
//!   into tier `T` of one bucket (`bucket`: its start, ms or RFC 3339), named from the tiers'
//!   sketches: lost, extra copies and altered ones, each with its partition and offset where
//!   known; `complete: false` when there were more than the sketches can name (those named are
//!   still right). 400 for a tier without an upstream or rows, 422 when the rows carry no sketch.
//! * `GET /api/v1/alerts[?state=firing|resolved&kind=K&topic=T&tier=U&limit=N&after=KEY]`: alerts
//!   by dedup key; `kind`, `topic` and `tier` together name one (each notification links to it).
//! * `/metrics`, `/healthz` (the process is up), `/readyz` (an evaluation pass has succeeded; with
//!   coordination, also the instance's name and the shards it owns).
//!
//! Lists are paged (`limit`, default 500, at most 5000): an answer with more to come carries
//! `next`, the `after` (or, for buckets, the `from`) of the next page; `null` on the last page.
//! Bad parameters answer 400 with `{"error": "<reason>"}` ([`query`] parses them).

pub mod query;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kaudit_alerting::time::rfc3339;
use kaudit_schema::Store;
use serde_json::{Value, json};

use self::query::{Params, paginate};
use crate::pipeline::{Pipeline, pipeline_for};

pub use self::query::MAX_RANGE_MS;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub registry: prometheus::Registry,
    pub pipelines: Arc<Vec<Pipeline>>,
    /// Set once an evaluation pass has succeeded.
    pub ready: Arc<AtomicBool>,
    /// The shards this instance owns (`/readyz` lists them).
    pub ownership: kaudit_alerting::Ownership,
}

/// The router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/topics", get(topics))
        .route("/api/v1/buckets", get(buckets))
        .route("/api/v1/buckets/{topic}/{bucket}/diff", get(diff))
        .route("/api/v1/alerts", get(alerts))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

enum ApiError {
    BadRequest(String),
    Unprocessable(String),
    Store(kaudit_schema::StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadRequest(reason) => (StatusCode::BAD_REQUEST, Json(json!({ "error": reason }))).into_response(),
            ApiError::Unprocessable(reason) => {
                (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "error": reason }))).into_response()
            }
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

async fn topics(State(s): State<ApiState>, Query(params): Query<Params>) -> Result<Json<Value>, ApiError> {
    let page = query::topics_query(&params).map_err(ApiError::BadRequest)?;
    let (names, next) = paginate(s.store.list_topics().await?, &page, |t| t.as_str());
    let list: Vec<Value> = names
        .into_iter()
        .map(|t| {
            let pipeline = pipeline_for(&s.pipelines, &t).map(|p| p.tiers().to_vec());
            json!({ "name": t, "tiers": pipeline })
        })
        .collect();
    Ok(Json(json!({ "topics": list, "next": next })))
}

async fn buckets(State(s): State<ApiState>, Query(params): Query<Params>) -> Result<Json<Value>, ApiError> {
    let q = query::buckets_query(&params).map_err(ApiError::BadRequest)?;
    let (topic, from, to) = (q.topic.as_str(), q.from, q.to);
    let rows = s.store.read_range(topic, from, to).await?;
    let verdicts = s.store.read_verdicts(topic, from, to).await?;
    let mut by_bucket: BTreeMap<i64, BTreeMap<String, (kaudit_schema::Tally, usize)>> = BTreeMap::new();
    for r in &rows {
        let e = by_bucket.entry(r.key.bucket_start_ms).or_default().entry(r.key.tier.clone()).or_default();
        e.0.merge(&r.tally);
        e.1 += 1;
    }
    let next = by_bucket.keys().nth(q.limit).copied();
    if let Some(cut) = next {
        by_bucket.split_off(&cut);
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
    Ok(Json(json!({ "topic": topic, "from": from, "to": to, "buckets": buckets, "next": next })))
}

async fn diff(
    State(s): State<ApiState>,
    axum::extract::Path((topic, bucket)): axum::extract::Path<(String, String)>,
    Query(params): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    query::only(&params, &["tier"]).map_err(ApiError::BadRequest)?;
    let tier = params.get("tier").ok_or_else(|| ApiError::BadRequest("`tier` is required".into()))?;
    let bucket = query::parse_time(&bucket).map_err(|e| ApiError::BadRequest(format!("bucket: {e}")))?;
    let pipeline = pipeline_for(&s.pipelines, &topic)
        .ok_or_else(|| ApiError::BadRequest(format!("no pipeline applies to topic {topic:?}")))?;
    let rows = s.store.read_range(&topic, bucket, bucket + 1).await?;
    let diff = crate::named::bucket_diff(&topic, bucket, tier, &rows, pipeline).map_err(|e| match e {
        crate::named::DiffError::NoSketch { .. } => ApiError::Unprocessable(e.to_string()),
        _ => ApiError::BadRequest(e.to_string()),
    })?;
    let mut body = serde_json::to_value(&diff).expect("diffs serialise");
    body["bucket_start"] = json!(rfc3339(bucket));
    Ok(Json(body))
}

async fn alerts(State(s): State<ApiState>, Query(params): Query<Params>) -> Result<Json<Value>, ApiError> {
    let q = query::alerts_query(&params).map_err(ApiError::BadRequest)?;
    let mut records = s.store.list_alerts().await?;
    records.retain(|a| q.state.as_deref().is_none_or(|st| a.state == st));
    records.sort_by(|a, b| a.dedup_key.cmp(&b.dedup_key));
    // Parsed lazily: `paginate` stops one past the page.
    let matching = records.into_iter().filter_map(|a| {
        let alert: Value = serde_json::from_str(&a.body).ok()?;
        q.matches(&alert).then_some((a.dedup_key, alert))
    });
    let (page, next) = paginate(matching, &q.page, |(key, _)| key.as_str());
    let list: Vec<Value> = page.into_iter().map(|(_, alert)| alert).collect();
    Ok(Json(json!({ "alerts": list, "next": next })))
}

async fn metrics(State(s): State<ApiState>) -> Response {
    match prometheus::TextEncoder::new().encode_to_string(&s.registry.gather()) {
        Ok(text) => ([("content-type", "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `ready` once a pass has succeeded; a sharded instance adds its name and shards, one
/// `key: value` per line (`shards_owned` lists them, comma-separated; a hand-over in progress
/// shows `changing`).
async fn readyz(State(s): State<ApiState>) -> (StatusCode, String) {
    let mut text = if s.ready.load(Ordering::SeqCst) {
        String::from("ready\n")
    } else {
        String::from("not ready: no evaluation pass has succeeded yet\n")
    };
    if let Some(total) = s.ownership.shards() {
        let owned = match s.ownership.snapshot() {
            Some(o) => o.epochs.keys().map(|k| k.to_string()).collect::<Vec<_>>().join(","),
            None => "changing".into(),
        };
        text.push_str(&format!("instance: {}\nshards_total: {total}\nshards_owned: {owned}\n", s.ownership.owner()));
    }
    let status = if s.ready.load(Ordering::SeqCst) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, text)
}
