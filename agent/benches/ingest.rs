//! Ingest endpoint: records accepted per second, and request latency under a bounded load, with
//! the immediate acknowledgement against the durable one (the default), in the same run.
//!
//! Criterion: `parse_only` (the pure validation of a 1,000-record NDJSON body) as the baseline;
//! `http_post` (the same body through `POST /v1/records` on a loopback axum server into an auditor,
//! answered at once: `[ingest.ack] mode = "immediate"`); `http_post_durable` (answered once the
//! records are in a SQLite store on local disk: one request at a time, so each pays a whole early
//! flush). Then a bounded load test per mode: 16 concurrent clients send
//! 2,000 requests of 100 records each (or stop after 60 s); records/s and latency p50/p99 are
//! printed, and the durable/immediate throughput ratio (group commit: concurrent requests share
//! one store write).
//!
//! `cargo bench -p kaudit-agent --bench ingest` (`KAUDIT_BENCH_LINGER_MS=20` tries another linger)

use std::time::{Duration, Instant};

use std::sync::Arc;

use criterion::{Criterion, Throughput};
use kaudit_agent::ingest::parse_body;
use kaudit_agent::ingest_server::{IngestMetrics, IngestOptions, router, router_with};
use kaudit_agent::{AckGate, AgentHandle, AgentMetrics, Auditor, AuditorOptions, FlusherOptions, Spool};
use kaudit_schema::SqliteStore;
use kaudit_schema::sqlite::SqliteOptions;

fn body(records: usize) -> String {
    let now = 1_763_719_200_000i64;
    (0..records)
        .map(|i| format!(r#"{{"topic":"orders","tier":"producer/php","business_id":"order-{i}","payload_xxh64":"{:016x}","bytes":512,"event_time":{now}}}"#, i * 7919))
        .collect::<Vec<_>>()
        .join("\n")
}

fn serve(rt: &tokio::runtime::Runtime, app: axum::Router) -> String {
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/v1/records", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Immediate acknowledgement: counted in memory, answered at once.
fn start_server(rt: &tokio::runtime::Runtime) -> (String, Auditor) {
    let auditor = Auditor::new(AuditorOptions::named("bench-ingest"));
    let metrics = IngestMetrics::register(&prometheus::Registry::new()).unwrap();
    (serve(rt, router(auditor.clone(), metrics)), auditor)
}

/// Durable acknowledgement: a flusher into SQLite under `dir`, answering once written.
fn start_durable_server(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> (String, AgentHandle) {
    let auditor = Auditor::new(AuditorOptions::named("bench-durable"));
    let registry = prometheus::Registry::new();
    let store = SqliteStore::open(&dir.join("audit.db"), &SqliteOptions::default()).unwrap();
    let spool = Spool::open(&dir.join("spool"), 256 << 20).unwrap();
    let linger = std::env::var("KAUDIT_BENCH_LINGER_MS").ok().and_then(|v| v.parse().ok()).map(Duration::from_millis);
    let gate = AckGate::new(linger.unwrap_or(kaudit_agent::ack::DEFAULT_LINGER));
    let flusher = FlusherOptions { ack_gate: Some(gate.clone()), ..FlusherOptions::default() };
    let agent = rt.block_on(async {
        AgentHandle::start(
            auditor.clone(),
            Arc::new(store),
            Some(spool),
            flusher,
            AgentMetrics::register(&registry).unwrap(),
        )
    });
    let options = IngestOptions { ack_gate: Some(gate), ..IngestOptions::immediate() };
    let app = router_with(auditor, IngestMetrics::register(&registry).unwrap(), options);
    (serve(rt, app), agent)
}

fn throughput(c: &mut Criterion, rt: &tokio::runtime::Runtime, url: &str, durable_url: &str) {
    let payload = body(1000);
    let client = reqwest::Client::new();
    let mut group = c.benchmark_group("ingest/1000_records");
    group.throughput(Throughput::Elements(1000));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("parse_only", |b| b.iter(|| parse_body(payload.as_bytes()).unwrap().records.len()));
    for (name, url) in [("http_post", url), ("http_post_durable", durable_url)] {
        group.bench_function(name, |b| {
            b.to_async(rt).iter(|| async {
                let resp = client.post(url).body(payload.clone()).send().await.unwrap();
                assert!(resp.status().is_success());
            })
        });
    }
    group.finish();
}

/// Records per second of a bounded load against `url`, printed with latencies.
fn latency(rt: &tokio::runtime::Runtime, label: &str, url: &str) -> f64 {
    const CLIENTS: usize = 16;
    const REQUESTS: usize = 2_000;
    let payload = body(100);
    let deadline = Instant::now() + Duration::from_secs(60);
    let started = Instant::now();
    let mut latencies: Vec<Duration> = rt.block_on(async {
        let client = reqwest::Client::new();
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (client, url, payload) = (client.clone(), url.to_string(), payload.clone());
                tokio::spawn(async move {
                    let mut own = Vec::with_capacity(REQUESTS / CLIENTS);
                    for _ in 0..REQUESTS / CLIENTS {
                        if Instant::now() > deadline {
                            break;
                        }
                        let t = Instant::now();
                        let resp = client.post(&url).body(payload.clone()).send().await.unwrap();
                        assert!(resp.status().is_success());
                        own.push(t.elapsed());
                    }
                    own
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let elapsed = started.elapsed();
    latencies.sort();
    let q = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1];
    let rate = latencies.len() as f64 * 100.0 / elapsed.as_secs_f64();
    println!(
        "ingest load ({label}): {} requests × 100 records from {CLIENTS} clients in {elapsed:.2?}: {rate:.0} records/s, p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        latencies.len(),
        q(0.50),
        q(0.99),
        latencies.last().unwrap()
    );
    rate
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (url, auditor) = start_server(&rt);
    let (durable_url, agent) = start_durable_server(&rt, dir.path());
    let mut c = Criterion::default().configure_from_args();
    throughput(&mut c, &rt, &url, &durable_url);
    c.final_summary();
    let immediate = latency(&rt, "immediate ack", &url);
    let durable = latency(&rt, "durable ack", &durable_url);
    println!(
        "ingest durable/immediate throughput ratio: {:.3} ({durable:.0} / {immediate:.0} records/s)",
        durable / immediate
    );
    assert!(auditor.snapshot().rows.iter().map(|r| r.tally.count).sum::<u64>() > 0, "records were counted");
    let report = rt.block_on(agent.shutdown());
    assert_eq!(report.pending, 0, "the durable agent wrote everything");
}
