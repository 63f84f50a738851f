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
    assert_eq!(metrics.requests.with_label_values(&["rejected"]).get(), 2);
    assert_eq!(metrics.records.with_label_values(&["http", "rejected"]).get(), 0, "no record was read");
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

use std::collections::BTreeMap;

use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{SqliteStore, Store};

use crate::ack::AckGate;
use crate::flusher::{Flusher, FlusherOptions};
use crate::metrics::AgentMetrics;
use crate::spool::Spool;

async fn send(app: &Router, body: String, key: Option<&str>) -> (StatusCode, serde_json::Value, bool) {
    let mut req = Request::post("/v1/records");
    if let Some(key) = key {
        req = req.header(IDEMPOTENCY_KEY, key);
    }
    let resp = app.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let (status, replayed) = (resp.status(), resp.headers().contains_key("idempotent-replayed"));
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap(), replayed)
}

/// `n` records of `topic`/`tier`, ids from `first`.
fn records(topic: &str, tier: &str, first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| {
            format!(
                r#"{{"topic":"{topic}","tier":"{tier}","business_id":"id-{i}","fingerprint":"{:x}","bytes":10}}"#,
                i + 1
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn counted(auditor: &Auditor) -> u64 {
    auditor.snapshot().rows.iter().map(|r| r.tally.count).sum()
}

fn text(registry: &Registry) -> String {
    prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap()
}

#[tokio::test]
async fn rejected_records_are_counted_like_accepted_ones() {
    let registry = Registry::new();
    let metrics = IngestMetrics::register(&registry).unwrap();
    let app = router(Auditor::new(AuditorOptions::named("m")), metrics.clone());
    let mut bad = records("t", "p", 0, 3);
    bad.push_str("\n{}");
    assert_eq!(send(&app, bad, None).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(send(&app, records("t", "p", 0, 2), None).await.0, StatusCode::OK);
    let text = text(&registry);
    for line in [
        r#"kaudit_agent_ingest_records_total{outcome="rejected",protocol="http"} 4"#,
        r#"kaudit_agent_ingest_records_total{outcome="accepted",protocol="http"} 2"#,
        r#"kaudit_agent_ingest_requests_total{outcome="rejected"} 1"#,
        r#"kaudit_agent_ingest_requests_total{outcome="accepted"} 1"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

/// Past `max_streams`, a request with new streams is refused whole with 422 naming the cap,
/// counted as refused; held streams still take records. UDP refuses line by line.
#[tokio::test]
async fn past_the_stream_cap_requests_of_new_streams_get_422() {
    let registry = Registry::new();
    let metrics = IngestMetrics::register(&registry).unwrap();
    let agent_metrics = AgentMetrics::register(&registry).unwrap();
    let mut auditor = Auditor::new(AuditorOptions { max_streams: 2, ..AuditorOptions::named("cap") });
    let app = router(auditor.clone(), metrics.clone());
    let two = format!("{}\n{}", records("a", "p", 0, 1), records("b", "p", 1, 1));
    assert_eq!(send(&app, two, None).await.0, StatusCode::OK);
    let (status, json, _) = send(&app, format!("{}\n{}", records("a", "p", 2, 1), records("c", "p", 3, 2)), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    let error = json["error"].as_str().unwrap();
    assert!(error.contains("1 new (topic, tier) streams (e.g. c/p) would pass this agent's cap of 2"), "{error}");
    assert!(error.contains("agent.max_streams"), "{error}");
    assert_eq!(counted(&auditor), 2, "nothing of the refused request counted");
    assert_eq!(send(&app, records("b", "p", 9, 4), None).await.0, StatusCode::OK, "held streams go on");

    let lines = [parse_line("v1 a p fp=1 0 -").unwrap(), parse_line("v1 z p fp=2 0 -").unwrap()];
    assert_eq!(auditor.count_lines(&lines), (1, 1));
    crate::flusher::BatchSource::report(&mut auditor, &agent_metrics);
    let text = text(&registry);
    assert!(text.contains(r#"kaudit_agent_refused_records_total{reason="stream_cap"} 4"#), "{text}");
    assert!(text.contains(r#"kaudit_agent_ingest_records_total{outcome="refused",protocol="http"} 3"#), "{text}");
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_counts_once() {
    let registry = Registry::new();
    let auditor = Auditor::new(AuditorOptions::named("idem"));
    let app = router(auditor.clone(), IngestMetrics::register(&registry).unwrap());
    let body = records("orders", "producer", 0, 3);
    let first = send(&app, body.clone(), Some("order-batch-1")).await;
    assert_eq!((first.0, first.2), (StatusCode::OK, false));
    let again = send(&app, body.clone(), Some("order-batch-1")).await;
    assert_eq!((again.0, &again.1, again.2), (StatusCode::OK, &first.1, true), "the first answer");
    assert_eq!(counted(&auditor), 3, "counted once");
    let (status, json, _) = send(&app, records("orders", "producer", 5, 1), Some("order-batch-1")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(json["error"].as_str().unwrap().contains("different body"));
    let (status, json, _) = send(&app, body.clone(), Some("")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(json["error"].as_str().unwrap().contains("1 to 128 printable ASCII"));
    // A refused request does not keep its key.
    assert_eq!(send(&app, "{}".into(), Some("k2")).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(send(&app, body, Some("k2")).await.0, StatusCode::OK, "another key is another request");
    assert_eq!(counted(&auditor), 6);
}

/// An ingest agent with durable acknowledgements, its store and spool under `dir`.
struct Durable {
    app: Router,
    agent: crate::AgentHandle,
    store: SqliteStore,
}

fn durable(dir: &std::path::Path, spool_max: u64, flush_interval: Duration, ack_timeout: Duration) -> Durable {
    let store =
        SqliteStore::open(&dir.join("audit.db"), &SqliteOptions { busy_timeout: Duration::from_millis(10) }).unwrap();
    let auditor = Auditor::new(AuditorOptions::named("ingest"));
    let registry = Registry::new();
    let gate = AckGate::new(Duration::from_millis(20));
    let options = FlusherOptions { flush_interval, ack_gate: Some(gate.clone()), ..FlusherOptions::default() };
    let spool = Spool::open(&dir.join("spool"), spool_max).unwrap();
    let metrics = AgentMetrics::register(&registry).unwrap();
    let agent = crate::AgentHandle::start(auditor.clone(), Arc::new(store.clone()), Some(spool), options, metrics);
    let idempotency = Idempotency::open(&IdempotencyOptions::default(), Arc::new(crate::SystemClock)).unwrap();
    let ingest = IngestOptions { ack_gate: Some(gate), ack_timeout, idempotency };
    let app = router_with(auditor.clone(), IngestMetrics::register(&registry).unwrap(), ingest);
    Durable { app, agent, store }
}

async fn stored(store: &SqliteStore) -> u64 {
    let rows = store.read_range("orders", i64::MIN, i64::MAX).await.unwrap();
    let mut newest: BTreeMap<(i64, String), (u64, u64)> = BTreeMap::new();
    for row in rows {
        let e = newest.entry((row.key.bucket_start_ms, row.key.agent_id.clone())).or_default();
        if row.version >= e.0 {
            *e = (row.version, row.tally.count);
        }
    }
    newest.values().map(|(_, c)| c).sum()
}

/// The issue's `kill -9` rows: requests answered 200 by 4 concurrent clients, then the flusher
/// killed at once (no final flush); with or without a store outage (SQLite locked), what the
/// store holds after a restart replays the spool equals what was acknowledged.
async fn acknowledged_records_survive_a_crash(outage: bool) {
    let dir = tempfile::tempdir().unwrap();
    let d = durable(dir.path(), 64 << 20, Duration::from_secs(3600), Duration::from_secs(10));
    let locker = outage.then(|| {
        let c = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
        c.execute_batch("BEGIN EXCLUSIVE").unwrap();
        c
    });
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let app = d.app.clone();
            tokio::spawn(async move {
                let mut acked = 0;
                for r in 0..10 {
                    let (status, json, _) =
                        send(&app, records("orders", "ingest", (c * 10 + r) * 100, 100), None).await;
                    assert_eq!(status, StatusCode::OK, "{json}");
                    acked += json["accepted"].as_u64().unwrap();
                }
                acked
            })
        })
        .collect();
    let mut acked = 0;
    for c in clients {
        acked += c.await.unwrap();
    }
    d.agent.crash_switch().abort(); // kill -9, right after the last answer
    assert_eq!(d.agent.shutdown().await, crate::FlushReport::default());
    assert_eq!(acked, 4_000);
    drop(locker);
    assert_eq!(stored(&d.store).await, if outage { 0 } else { acked }, "before the restart");

    // Restart: a new instance opens the same spool and replays it first.
    let registry = Registry::new();
    let restarted = Auditor::new(AuditorOptions::named("ingest"));
    let spool = Spool::open(&dir.path().join("spool"), 64 << 20).unwrap();
    let mut f = Flusher::new(
        restarted,
        Arc::new(d.store.clone()),
        Some(spool),
        FlusherOptions::default(),
        AgentMetrics::register(&registry).unwrap(),
    );
    assert_eq!(f.flush_once().await.pending, 0);
    assert_eq!(stored(&d.store).await, acked, "stored == acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_crash_of_the_flusher() {
    acknowledged_records_survive_a_crash(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_crash_during_a_store_outage() {
    acknowledged_records_survive_a_crash(true).await;
}

/// Store down and spool unable to take the batch: 503, the records still counted; a retry with
/// the same key after the store returns answers 200 without counting them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_durable_in_time_is_503_and_a_keyed_retry_answers_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let d = durable(dir.path(), 16, Duration::from_millis(300), Duration::from_millis(200));
    let locker = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let body = records("orders", "ingest", 0, 5);
    let (status, json, _) = send(&d.app, body.clone(), Some("k")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert!(json["error"].as_str().unwrap().contains("counted but not yet durable"), "{json}");
    assert_eq!(json["accepted"].as_u64(), Some(5), "counted all the same");
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    let mut replay = (StatusCode::SERVICE_UNAVAILABLE, serde_json::Value::Null, false);
    for _ in 0..50 {
        replay = send(&d.app, body.clone(), Some("k")).await;
        if replay.0 == StatusCode::OK {
            break;
        }
    }
    assert_eq!((replay.0, replay.2), (StatusCode::OK, true), "{}", replay.1);
    assert_eq!(replay.1["accepted"].as_u64(), Some(5));
    assert_eq!(stored(&d.store).await, 5, "once");
    d.agent.shutdown().await;
}
