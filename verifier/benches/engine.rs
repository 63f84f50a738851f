//! Buckets evaluated per second end to end against SQLite: read tallies, merge, compare, store
//! verdicts, feed detectors, update alerts. Each iteration runs a fresh engine's first pass over
//! 200 one-minute buckets of one topic (3 tiers, 2 agents each: 1200 rows, 400 edge verdicts) in
//! a copy of the same database, so every bucket is evaluated for the first time.
//!
//! `cargo bench -p kaudit-verifier --bench engine`

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{FlushBatch, ManualClock, SqliteStore, Store, Tally, TallyKey, TallyRow};
use kaudit_verifier::{Engine, PipelineConfig, VerifierConfig, VerifierMetrics};

const W: i64 = 60_000;
const T0: i64 = 1_700_000_000_000 / W * W;
const BUCKETS: i64 = 200;

fn seed(path: &std::path::Path, rt: &tokio::runtime::Runtime) {
    let store = SqliteStore::open(path, &SqliteOptions::default()).unwrap();
    let mut rows = Vec::new();
    for b in 0..BUCKETS {
        for tier in ["producer", "broker", "consumer"] {
            for a in 0..2u64 {
                let mut t = Tally::default();
                for i in 0..500u64 {
                    t.add((b as u64) << 32 | a << 16 | i, 1024);
                    t.latency.record((i % 90) as i64 + 2);
                }
                let key = TallyKey {
                    topic: "orders".into(),
                    bucket_start_ms: T0 + b * W,
                    tier: tier.into(),
                    agent_id: format!("{tier}-{a}"),
                };
                rows.push(TallyRow { key, bucket_width_ms: W, version: 1, tally: t });
            }
        }
    }
    rt.block_on(store.write(&FlushBatch { rows, offsets: vec![], progress: vec![], heartbeats: vec![] })).unwrap();
}

fn engine_pass(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seeded = dir.path().join("seed.db");
    seed(&seeded, &rt);
    let config = VerifierConfig {
        pipelines: vec![PipelineConfig {
            topics: vec!["*".into()],
            tiers: vec!["producer".into(), "broker".into()],
            consumers: vec!["consumer".into()],
        }],
        lateness_ms: 6 * 3_600_000,
        ..VerifierConfig::default()
    };
    let mut group = c.benchmark_group("verifier_engine");
    group.throughput(Throughput::Elements(BUCKETS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    let mut n = 0;
    group.bench_function("first_pass_buckets_sqlite", |b| {
        b.iter_batched(
            || {
                n += 1;
                let path = dir.path().join(format!("run-{n}.db"));
                std::fs::copy(&seeded, &path).unwrap();
                let store = SqliteStore::open(&path, &SqliteOptions::default()).unwrap();
                let metrics = VerifierMetrics::register(&prometheus::Registry::new()).unwrap();
                let clock = ManualClock::new(T0 + (BUCKETS + 2) * W);
                (Engine::new(Arc::new(store), None, config.clone(), 5_000, Arc::new(clock), metrics), path)
            },
            |(mut engine, path)| {
                let report = rt.block_on(engine.tick()).unwrap();
                assert_eq!(report.first_evaluations, 2 * BUCKETS as usize);
                let _ = std::fs::remove_file(path);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, engine_pass);
criterion_main!(benches);
