//! Ingest endpoint: records accepted per second, and request latency under a bounded load.
//!
//! Criterion, same run: `parse_only` (the pure validation of a 1,000-record NDJSON body) as the
//! baseline, and `http_post` (the same body through `POST /v1/records` on a loopback axum server
//! into an auditor). Then a bounded load test: 4 concurrent clients send 2,000 requests of 100
//! records each (or stop after 60 s) and the request latencies' p50/p99 are printed.
//!
//! `cargo bench -p kaudit-agent --bench ingest`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use kaudit_agent::ingest::parse_body;
use kaudit_agent::ingest_server::{IngestMetrics, router};
use kaudit_agent::{Auditor, AuditorOptions};

fn body(records: usize) -> String {
    let now = 1_763_719_200_000i64;
    (0..records)
        .map(|i| format!(r#"{{"topic":"orders","tier":"producer/php","business_id":"order-{i}","payload_xxh64":"{:016x}","bytes":512,"event_time":{now}}}"#, i * 7919))
        .collect::<Vec<_>>()
        .join("\n")
}

fn start_server(rt: &tokio::runtime::Runtime) -> (String, Auditor) {
    let auditor = Auditor::new(AuditorOptions::named("bench-ingest"));
    let metrics = IngestMetrics::register(&prometheus::Registry::new()).unwrap();
    let app = router(auditor.clone(), metrics);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/v1/records", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, auditor)
}

fn throughput(c: &mut Criterion, rt: &tokio::runtime::Runtime, url: &str) {
    let payload = body(1000);
    let client = reqwest::Client::new();
    let mut group = c.benchmark_group("ingest/1000_records");
    group.throughput(Throughput::Elements(1000));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("parse_only", |b| b.iter(|| parse_body(payload.as_bytes()).unwrap().records.len()));
    group.bench_function("http_post", |b| {
        b.to_async(rt).iter(|| async {
            let resp = client.post(url).body(payload.clone()).send().await.unwrap();
            assert!(resp.status().is_success());
        })
    });
    group.finish();
}

fn latency(rt: &tokio::runtime::Runtime, url: &str) {
    const CLIENTS: usize = 4;
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
    println!(
        "ingest load: {} requests × 100 records from {CLIENTS} clients in {elapsed:.2?}: {:.0} records/s, p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        latencies.len(),
        latencies.len() as f64 * 100.0 / elapsed.as_secs_f64(),
        q(0.50),
        q(0.99),
        latencies.last().unwrap()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (url, auditor) = start_server(&rt);
    let mut c = Criterion::default().configure_from_args();
    throughput(&mut c, &rt, &url);
    c.final_summary();
    latency(&rt, &url);
    assert!(auditor.snapshot().rows.iter().map(|r| r.tally.count).sum::<u64>() > 0, "records were counted");
}
