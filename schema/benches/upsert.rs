//! Tally upserts per second, both backends, 1, 100 and 1000 rows per flush.
//!
//! * `sqlite`: the embedded backend, on disk (WAL, synchronous=NORMAL), in a temporary directory.
//! * `scylla_vs_inprocess_cql`: the Scylla backend through the real driver against the in-process
//!   kassandra CQL server on loopback. That server is an in-memory test double of a cluster, so
//!   this measures the driver and backend's own cost, not a Scylla cluster's.
//!
//! Rows of one flush are distinct (topic, bucket) partitions, as an agent's flush is: one row per
//! topic × tier × open bucket. Each iteration rewrites the same keys with a higher version.
//!
//! `cargo bench -p kaudit-schema --bench upsert`

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kaudit_schema::scylladb::migrate::migrate;
use kaudit_schema::scylladb::{ScyllaOptions, connect_session};
use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{FlushBatch, ScyllaStore, SqliteStore, Store, Tally, TallyKey, TallyRow};
use kaudit_testkit::CqlServer;

const W: i64 = 60_000;
const SIZES: [usize; 3] = [1, 100, 1000];

fn flush(rows: usize, version: u64) -> FlushBatch {
    let mut tally = Tally::default();
    for i in 0..500u64 {
        tally.add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), 1024);
        tally.latency.record((i % 200) as i64);
    }
    let rows = (0..rows)
        .map(|i| TallyRow {
            key: TallyKey {
                topic: format!("topic-{}", i / 10),
                bucket_start_ms: 1_700_000_000_000 / W * W + (i % 10) as i64 * W,
                tier: "producer".into(),
                agent_id: "bench-agent".into(),
            },
            bucket_width_ms: W,
            version,
            tally: tally.clone(),
        })
        .collect();
    FlushBatch { rows, ..FlushBatch::default() }
}

fn bench_store(c: &mut Criterion, name: &str, rt: &tokio::runtime::Runtime, store: &dyn Store) {
    let mut group = c.benchmark_group(format!("upsert/{name}"));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.sample_size(20);
    let version = AtomicU64::new(1);
    for rows in SIZES {
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_with_input(BenchmarkId::new("rows_per_flush", rows), &rows, |b, &rows| {
            b.to_async(rt).iter_batched(
                || flush(rows, version.fetch_add(1, Ordering::Relaxed)),
                |batch| async move { store.write(&batch).await.expect("write") },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    let last = rt.block_on(store.read_range("topic-0", 0, i64::MAX / 2)).ok();
    if let Some(rows) = last {
        assert!(rows.iter().all(|r| r.tally.count == 500), "every row holds its full tally");
    }
}

fn upserts(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("bench.db"), &SqliteOptions::default()).unwrap();
    bench_store(c, "sqlite", &rt, &sqlite);

    let server = CqlServer::start();
    let options = ScyllaOptions { keyspace: "bench".into(), await_schema_agreement: false, ..ScyllaOptions::default() };
    let hosts = vec![server.addr().to_string()];
    let scylla = rt.block_on(async {
        let session = connect_session(&hosts, &options).await.unwrap();
        migrate(&session, &options).await.unwrap();
        ScyllaStore::from_session(session, &hosts, &options).await.unwrap()
    });
    bench_store(c, "scylla_vs_inprocess_cql", &rt, &scylla);
    drop(scylla);
    drop(server);
}

criterion_group!(benches, upserts);
criterion_main!(benches);
