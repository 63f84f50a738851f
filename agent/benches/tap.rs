//! Tap throughput beside a plain rdkafka consumer reading the same topic, same run.
//!
//! 32,000 keyed 1 KiB messages are produced once to an 8-partition topic on librdkafka's mock
//! cluster. Each iteration, a fresh consumer group reads them all: `plain` is a `BaseConsumer`
//! that only polls (never touching a payload); `plain_consumer_reading_payloads` also reads each
//! payload once, as an application does; `tap` is the tap sidecar's consumer (rebalance hooks, extraction, fingerprint,
//! per-partition tallies and offsets), with its flusher writing to SQLite. Time runs from the
//! first message to the last, so the group join (the same for both) is left out.
//!
//! After the criterion group, the three read the topic in turn for 10 rounds (each round starting
//! with the next): the table's ratios come from those, so a noisy machine's drifts weigh on all
//! alike (`interleaved.json`).
//!
//! `cargo bench -p kaudit-agent --bench tap`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use kaudit_agent::tap::{StartFrom, TapConfig, TapHandle, TapHandleOptions, TapOptions};
use kaudit_agent::{AgentMetrics, FlusherOptions};
use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{BucketWidth, SqliteStore, SystemClock};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

#[path = "common/alloc.rs"]
mod alloc;

#[global_allocator]
static COUNTING: alloc::Counting = alloc::Counting;

/// 4,000 per partition: librdkafka's mock keeps about 5 MB per partition.
/// 8 partitions × 4,000 × 1 KiB: under the mock cluster's 5 MB per partition, which it prunes past.
const N: u64 = 32_000;
const TOPIC: &str = "tap-bench";
/// Rounds of the interleaved run the table's ratios come from (each reads the topic three times).
const INTERLEAVED_ROUNDS: usize = 10;

fn consumer_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    c
}

/// Time from the first message counted to the last, watching `seen` the same way for both
/// consumers (each polls on its own thread).
fn time_until_all(seen: &dyn Fn() -> u64) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen() == 0 {
        assert!(Instant::now() < deadline, "consumer never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    let first = Instant::now();
    while seen() < N {
        assert!(Instant::now() < deadline, "consumer stalled at {}", seen());
        std::thread::sleep(Duration::from_millis(1));
    }
    first.elapsed()
}

/// A plain consumer; with `read_payload` it also reads every payload byte once (a cheap sum), as
/// any application that deserializes its messages does.
fn plain_pass(bootstrap: &str, group: &str, read_payload: bool) -> Duration {
    plain_pass_with(bootstrap, group, read_payload, |seen| time_until_all(seen))
}

fn plain_pass_with<T>(
    bootstrap: &str,
    group: &str,
    read_payload: bool,
    watch: impl FnOnce(&dyn Fn() -> u64) -> T,
) -> T {
    let consumer: BaseConsumer = consumer_config(bootstrap, group).create().unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let counting = seen.clone();
    let thread = std::thread::spawn(move || {
        while counting.load(Ordering::Relaxed) < N {
            if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) {
                if read_payload {
                    let sum = msg.payload().unwrap_or_default().iter().fold(0u8, |a, b| a.wrapping_add(*b));
                    std::hint::black_box(sum);
                }
                counting.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let watched = watch(&|| seen.load(Ordering::Relaxed));
    thread.join().unwrap();
    watched
}

fn tap_pass(bootstrap: &str, group: &str, rt: &tokio::runtime::Runtime, store: Arc<SqliteStore>) -> Duration {
    tap_pass_with(bootstrap, group, rt, store, |seen| time_until_all(seen))
}

/// Bytes and allocations per message between a consumer's 8,000th and 24,000th message (the tap's
/// flushes of that stretch included; start, group join and shutdown left out).
fn steady_allocations(seen: &dyn Fn() -> u64) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let wait_for = |n: u64| {
        while seen() < n {
            assert!(Instant::now() < deadline, "tap stalled at {}", seen());
            std::thread::sleep(Duration::from_micros(200));
        }
        (seen(), alloc::allocated())
    };
    let (from, (bytes, calls)) = wait_for(N / 4);
    let (to, (bytes_after, calls_after)) = wait_for(3 * N / 4);
    let messages = (to - from) as f64;
    wait_for(N);
    ((bytes_after - bytes) as f64 / messages, (calls_after - calls) as f64 / messages)
}

fn tap_pass_with<T>(
    bootstrap: &str,
    group: &str,
    rt: &tokio::runtime::Runtime,
    store: Arc<SqliteStore>,
    watch: impl FnOnce(&dyn Fn() -> u64) -> T,
) -> T {
    let config = TapConfig {
        tier: "broker".into(),
        topics: vec![TOPIC.into()],
        group_id: Some(group.into()),
        start_from: StartFrom::Earliest,
    };
    let tap = TapOptions {
        name: group.into(),
        config,
        rules: Default::default(),
        width: BucketWidth::DEFAULT,
        close_after_ms: 600_000,
        max_future_ms: kaudit_agent::table::DEFAULT_MAX_FUTURE_MS,
        sketch: Some(kaudit_schema::difference::DEFAULT_GEOMETRY),
        clock: Arc::new(SystemClock),
        store,
        runtime: rt.handle().clone(),
        revoke_timeout: Duration::from_secs(10),
    };
    let options = TapHandleOptions {
        tap,
        spool_dir: None,
        spool_max_bytes: 0,
        flusher: FlusherOptions { flush_interval: Duration::from_millis(500), ..FlusherOptions::default() },
        metrics: AgentMetrics::register(&prometheus::Registry::new()).unwrap(),
        client: consumer_config(bootstrap, group),
    };
    let handle = rt.block_on(TapHandle::start(options)).unwrap();
    let watched = watch(&|| handle.seen());
    rt.block_on(handle.shutdown());
    watched
}

fn tap_throughput(c: &mut Criterion) {
    // Groups form at once (no 3-s initial rebalance delay), so many passes fit in the time.
    let cluster = kaudit_testkit::QuickMockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 8).unwrap();
    let bootstrap = cluster.bootstrap_servers().to_string();
    assert!(bootstrap.starts_with("127.0.0.1:"));
    let producer: ThreadedProducer<_> =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).set("linger.ms", "5").create().unwrap();
    let payload = vec![b'x'; 1024];
    for i in 0..N {
        let key = format!("order-{i}");
        loop {
            match producer.send(BaseRecord::to(TOPIC).key(&key).payload(&payload)) {
                Ok(()) => break,
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("tap.db"), &SqliteOptions::default()).unwrap());
    let mut group = c.benchmark_group("tap/1KiB");
    group.throughput(Throughput::Elements(N));
    group.sample_size(30);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(20));
    let mut run = 0;
    group.bench_function("plain_consumer", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    run += 1;
                    plain_pass(&bootstrap, &format!("plain-{run}"), false)
                })
                .sum()
        })
    });
    group.bench_function("plain_consumer_reading_payloads", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    run += 1;
                    plain_pass(&bootstrap, &format!("reading-{run}"), true)
                })
                .sum()
        })
    });
    group.bench_function("tap", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    run += 1;
                    tap_pass(&bootstrap, &format!("tap-{run}"), &rt, store.clone())
                })
                .sum()
        })
    });
    group.finish();
    // The ratios: the three passes in turn, round after round, each round starting with the next.
    let mut totals = [Duration::ZERO; 3];
    for round in 0..INTERLEAVED_ROUNDS {
        for k in 0..3 {
            let i = (round + k) % 3;
            let group = format!("interleaved-{round}-{i}");
            totals[i] += match i {
                0 => plain_pass(&bootstrap, &group, false),
                1 => plain_pass(&bootstrap, &group, true),
                _ => tap_pass(&bootstrap, &group, &rt, store.clone()),
            };
        }
    }
    let messages = INTERLEAVED_ROUNDS as u64 * N;
    alloc::record_interleaved(
        "tap_1KiB",
        INTERLEAVED_ROUNDS,
        &[
            ("plain_consumer", totals[0], messages),
            ("plain_consumer_reading_payloads", totals[1], messages),
            ("tap", totals[2], messages),
        ],
    );
    // What the tap allocates beyond a plain consumer, per message of a whole pass (its start,
    // flushes and shutdown included).
    let plain_allocs = alloc::per_message(N, || {
        plain_pass(&bootstrap, "plain-counted", false);
    });
    let tap_allocs = alloc::per_message(N, || {
        tap_pass(&bootstrap, "tap-counted", &rt, store.clone());
    });
    let plain_steady = plain_pass_with(&bootstrap, "plain-steady", false, steady_allocations);
    let tap_steady = tap_pass_with(&bootstrap, "tap-steady", &rt, store.clone(), steady_allocations);
    println!(
        "plain consumer: {:.1} bytes and {:.4} allocations per message steady (rdkafka's own)",
        plain_steady.0, plain_steady.1
    );
    alloc::record_with_steady(
        "tap_1KiB/tap",
        (tap_allocs.0 - plain_allocs.0, tap_allocs.1 - plain_allocs.1),
        (tap_steady.0 - plain_steady.0, tap_steady.1 - plain_steady.1),
    );
    drop(producer);
    drop(cluster);
}

criterion_group!(benches, tap_throughput);
criterion_main!(benches);
