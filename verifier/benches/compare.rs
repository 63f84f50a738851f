//! Tally rows merged and compared per second, per core: the verifier's pure hot path.
//!
//! Each iteration takes the stored rows of 100 buckets (3 tiers × 4 agents each, 12 rows per
//! bucket, with latency sketches), merges them per (bucket, tier) and evaluates every pipeline edge.
//! Target: at least 1,000,000 rows per second.
//!
//! `cargo bench -p kaudit-verifier --bench compare`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kaudit_schema::{Tally, TallyKey, TallyRow};
use kaudit_verifier::evaluate::merge_rows;
use kaudit_verifier::{PipelineConfig, Thresholds, evaluate_bucket};

const BUCKETS: i64 = 100;
const AGENTS: usize = 4;
const TIERS: [&str; 3] = ["producer", "broker", "consumer/billing"];

fn rows() -> Vec<TallyRow> {
    let mut rows = Vec::new();
    for b in 0..BUCKETS {
        for tier in TIERS {
            for a in 0..AGENTS {
                let mut tally = Tally::default();
                for i in 0..250u64 {
                    tally.add((b as u64 * 1_000_003 + a as u64 * 1009 + i).wrapping_mul(0x9e37_79b9_7f4a_7c15), 1024);
                    tally.latency.record((i % 120) as i64 + 3);
                }
                rows.push(TallyRow {
                    key: TallyKey {
                        topic: "orders".into(),
                        bucket_start_ms: b * 60_000,
                        tier: tier.into(),
                        agent_id: format!("{tier}-{a}"),
                    },
                    bucket_width_ms: 60_000,
                    version: 1,
                    tally,
                });
            }
        }
    }
    rows
}

fn compare(c: &mut Criterion) {
    let rows = rows();
    let pipeline = PipelineConfig {
        topics: vec!["*".into()],
        tiers: vec!["producer".into(), "broker".into()],
        consumers: vec!["consumer/billing".into()],
    }
    .build();
    let thresholds = Thresholds::default();
    let mut group = c.benchmark_group("verifier");
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("merge_and_compare_rows", |b| {
        b.iter(|| {
            let merged = merge_rows(black_box(&rows));
            let mut complete = 0;
            for (bucket, tiers) in &merged {
                for v in evaluate_bucket("orders", *bucket, tiers, &pipeline, &thresholds) {
                    complete += usize::from(v.count == v.upstream_count);
                }
            }
            complete
        })
    });
    group.finish();
}

criterion_group!(benches, compare);
criterion_main!(benches);
