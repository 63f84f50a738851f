//! The tally hot path (extract, fingerprint, bucket look-up, tally update) against raw hashing.
//!
//! Per payload size (100 B, 1 KiB, 16 KiB) one group holds:
//! * `raw_hash`: `xxh64(payload, 0)` and `crc32c(business_id)` alone, the floor any audit pays;
//! * `hot_path`: [`Auditor::record_message`] with the default rule (key + Kafka timestamp),
//!   mutex and clock read included.
//!
//! The 100 B group also splits the hot path apart, to show where the fixed per-message cost goes:
//! * `observation`: extract + fingerprint only (`Auditor::observation`), no table;
//! * `table_record`: [`TallyTable::record`] of a precomputed observation, no lock, no hashing;
//! * `observation+table_record`: both, without the mutex and clock read of `hot_path`;
//! * `hot_path_system_clock`: `hot_path` with the clock a deployment's agents read (the default,
//!   the coarse wall clock) instead of a manual one;
//! * `hot_path_precise_clock`: the same with the precise wall clock (`SystemClock`), for comparison;
//! * `hot_path_no_sketch`: `hot_path` without the difference sketch (`agent.sketch.enabled =
//!   false`): `hot_path` less this is what naming lost messages costs per message;
//! * `hot_path_located`: a consumer wrapper's read, `hot_path` with the message's partition and
//!   offset kept in the sketch.
//!
//! After each group, the bytes and allocations per message of `hot_path` (and, at 100 B, of
//! `hot_path_system_clock`) on the steady path are counted by a counting global allocator and left
//! beside criterion's estimates (`alloc.json`) for `examples/bench_table.rs`; the goal is none.
//!
//! The clock is a [`ManualClock`] that never moves and the message is built once, so every
//! iteration lands in the same stream and bucket: the table does not grow, no snapshot is needed.
//!
//! `cargo bench -p kaudit-agent --bench tally`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kaudit_agent::table::TallyTable;
use kaudit_agent::{Auditor, AuditorOptions, ManualClock, OwnedMessage, SystemClock};
use kaudit_schema::BucketWidth;

#[path = "common/alloc.rs"]
mod alloc;

#[global_allocator]
static COUNTING: alloc::Counting = alloc::Counting;

/// Messages whose allocations are counted after each group.
const COUNTED: u64 = 100_000;

const NOW_MS: i64 = 1_700_000_030_000;
/// One second before `NOW_MS`: the same 60 s bucket, and a 1000 ms latency.
const EVENT_MS: i64 = NOW_MS - 1_000;
const TOPIC: &str = "orders";
const TIER: &str = "consumer";
const KEY: &[u8] = b"order-0000123456";

const SIZES: [(&str, usize); 3] = [("100B", 100), ("1KiB", 1024), ("16KiB", 16 * 1024)];

/// Deterministic, incompressible-looking bytes (xorshift), so the hashes see no special pattern.
fn payload(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn message(len: usize) -> OwnedMessage {
    OwnedMessage { key: Some(KEY.to_vec()), payload: payload(len), timestamp_ms: Some(EVENT_MS), headers: Vec::new() }
}

fn auditor() -> Auditor {
    Auditor::new(AuditorOptions {
        clock: Arc::new(ManualClock::new(NOW_MS)),
        instance_id: Some("bench".into()),
        ..AuditorOptions::named("bench")
    })
}

/// The raw hashing every fingerprint needs.
#[inline]
fn raw_hash(id: &[u8], payload: &[u8]) -> (u64, u32) {
    (xxhash_rust::xxh64::xxh64(payload, 0), crc32c::crc32c(id))
}

fn tally(c: &mut Criterion) {
    for (label, len) in SIZES {
        let msg = message(len);
        let auditor = auditor();
        let mut group = c.benchmark_group(format!("tally/{label}"));
        group.throughput(Throughput::Bytes(len as u64));
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(3));

        group.bench_function("raw_hash", |b| b.iter(|| raw_hash(black_box(KEY), black_box(&msg.payload))));

        if len == 100 {
            group.bench_function("observation", |b| b.iter(|| auditor.observation(black_box(TOPIC), black_box(&msg))));

            let obs = auditor.observation(TOPIC, &msg);
            let mut table = TallyTable::new("bench-bench", BucketWidth::DEFAULT, 600_000);
            group.bench_function("table_record", |b| {
                b.iter(|| table.record(black_box(TOPIC), black_box(TIER), black_box(obs), black_box(NOW_MS)))
            });
            assert!(table.open_buckets() <= 1, "every iteration must land in one bucket");

            let mut table = TallyTable::new("bench-bench", BucketWidth::DEFAULT, 600_000);
            group.bench_function("observation+table_record", |b| {
                b.iter(|| {
                    let obs = auditor.observation(black_box(TOPIC), black_box(&msg));
                    table.record(black_box(TOPIC), black_box(TIER), obs, black_box(NOW_MS))
                })
            });
            assert!(table.open_buckets() <= 1, "every iteration must land in one bucket");
        }

        group.bench_function("hot_path", |b| {
            b.iter(|| auditor.record_message(black_box(TOPIC), black_box(TIER), black_box(&msg)))
        });
        if len == 100 {
            // The difference sketch's share: the same hot path without a sketch, and with the
            // sketch and a locator (a consumer wrapper's read: partition and offset).
            let plain = Auditor::new(AuditorOptions {
                clock: Arc::new(ManualClock::new(NOW_MS)),
                instance_id: Some("bench".into()),
                sketch: None,
                ..AuditorOptions::named("bench")
            });
            group.bench_function("hot_path_no_sketch", |b| {
                b.iter(|| plain.record_message(black_box(TOPIC), black_box(TIER), black_box(&msg)))
            });
            let mut offset = 0i64;
            group.bench_function("hot_path_located", |b| {
                b.iter(|| {
                    offset += 1;
                    auditor.record_read_at(black_box(TOPIC), black_box(TIER), 3, Some(offset), black_box(&msg))
                })
            });
            // The same with the clock a deployment's agents read (the default: the coarse wall
            // clock), and with the precise wall clock it replaced.
            let system =
                Auditor::new(AuditorOptions { instance_id: Some("bench".into()), ..AuditorOptions::named("bench") });
            group.bench_function("hot_path_system_clock", |b| {
                b.iter(|| system.record_message(black_box(TOPIC), black_box(TIER), black_box(&msg)))
            });
            let precise = Auditor::new(AuditorOptions {
                clock: Arc::new(SystemClock),
                instance_id: Some("bench".into()),
                ..AuditorOptions::named("bench")
            });
            group.bench_function("hot_path_precise_clock", |b| {
                b.iter(|| precise.record_message(black_box(TOPIC), black_box(TIER), black_box(&msg)))
            });
            let system_allocs = alloc::per_call(COUNTED, || system.record_message(TOPIC, TIER, black_box(&msg)));
            alloc::record(&format!("tally_{label}/hot_path_system_clock"), system_allocs);
        }
        group.finish();
        let allocs = alloc::per_call(COUNTED, || auditor.record_message(TOPIC, TIER, black_box(&msg)));
        alloc::record(&format!("tally_{label}/hot_path"), allocs);

        // Nothing grew: at most one stream and one bucket (none if a filter skipped `hot_path`),
        // every message counted in it with a valid time.
        assert!(auditor.open_buckets() <= 1);
        for row in auditor.snapshot().rows {
            let t = &row.tally;
            assert!(t.count > 0 && t.no_time == 0 && t.malformed == 0);
            assert_eq!(t.bytes, t.count * len as u64);
        }
    }
}

criterion_group!(benches, tally);
criterion_main!(benches);
