//! Detection quality on a scripted scenario, at the fault rates the Chaperone article reports from
//! production: 0.01 % loss and 0.15 % duplicates, over 60 one-minute buckets of 20,000 messages
//! (1,200,000 messages). The broker tier loses messages; the billing consumer receives duplicates
//! (redelivery). Every faulty bucket must get a verdict with the exact injected count, and the same
//! traffic without faults must raise no alert at all.

use std::collections::BTreeMap;
use std::sync::Arc;

use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{FlushBatch, ManualClock, Outcome, SqliteStore, Store, Tally, TallyKey, TallyRow};
use kaudit_verifier::{Engine, PipelineConfig, VerifierConfig, VerifierMetrics};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const W: i64 = 60_000;
const T0: i64 = 1_700_000_000_000 / W * W;
const BUCKETS: i64 = 60;
const PER_BUCKET: u64 = 20_000;

struct Injected {
    lost: BTreeMap<i64, u64>,
    duplicated: BTreeMap<i64, u64>,
}

fn row(bucket: i64, tier: &str, tally: Tally) -> TallyRow {
    let key =
        TallyKey { topic: "orders".into(), bucket_start_ms: bucket, tier: tier.into(), agent_id: format!("{tier}-1") };
    TallyRow { key, bucket_width_ms: W, version: 1, tally }
}

/// Writes the three tiers' tallies for every bucket; returns what was injected.
async fn traffic(store: &SqliteStore, loss: f64, duplicates: f64, seed: u64) -> Injected {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut injected = Injected { lost: BTreeMap::new(), duplicated: BTreeMap::new() };
    for b in 0..BUCKETS {
        let bucket = T0 + b * W;
        let (mut producer, mut broker, mut billing) = (Tally::default(), Tally::default(), Tally::default());
        let (mut lost, mut duplicated) = (0, 0);
        for _ in 0..PER_BUCKET {
            let fp: u64 = rng.random();
            producer.add(fp, 1024);
            producer.latency.record(rng.random_range(1..20));
            if rng.random::<f64>() < loss {
                lost += 1;
                continue;
            }
            broker.add(fp, 1024);
            broker.latency.record(rng.random_range(5..40));
            let copies = if rng.random::<f64>() < duplicates { 2 } else { 1 };
            duplicated += copies - 1;
            for _ in 0..copies {
                billing.add(fp, 1024);
                billing.latency.record(rng.random_range(20..400));
            }
        }
        injected.lost.insert(bucket, lost);
        injected.duplicated.insert(bucket, duplicated);
        let rows = vec![
            row(bucket, "producer", producer),
            row(bucket, "broker", broker),
            row(bucket, "consumer/billing", billing),
        ];
        store.write(&FlushBatch { rows, offsets: vec![], progress: vec![], heartbeats: vec![] }).await.unwrap();
    }
    injected
}

async fn run(loss: f64, duplicates: f64) -> (Injected, Vec<kaudit_schema::VerdictRow>, Vec<kaudit_alerting::Alert>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("d.db"), &SqliteOptions::default()).unwrap();
    let injected = traffic(&store, loss, duplicates, 42).await;
    let clock = ManualClock::new(T0);
    let config = VerifierConfig {
        pipelines: vec![PipelineConfig {
            topics: vec!["orders".into()],
            tiers: vec!["producer".into(), "broker".into()],
            consumers: vec!["consumer/billing".into()],
        }],
        ..VerifierConfig::default()
    };
    let metrics = VerifierMetrics::register(&prometheus::Registry::new()).unwrap();
    let mut engine = Engine::new(Arc::new(store.clone()), None, config, 5_000, Arc::new(clock.clone()), metrics);
    // The verifier runs alongside: one pass per bucket as time moves on.
    for b in 0..=BUCKETS + 1 {
        clock.set(T0 + b * W + W + 41_000);
        engine.tick().await.unwrap();
    }
    let verdicts = store.read_verdicts("orders", T0, T0 + BUCKETS * W).await.unwrap();
    let alerts = engine.alerts().values().cloned().collect();
    (injected, verdicts, alerts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_faulty_bucket_is_flagged_with_the_exact_count() {
    let (injected, verdicts, alerts) = run(0.0001, 0.0015).await;
    let total_lost: u64 = injected.lost.values().sum();
    let total_dup: u64 = injected.duplicated.values().sum();
    assert!(
        total_lost > 50 && total_dup > 1000,
        "the scenario injects faults: {total_lost} lost, {total_dup} duplicated"
    );
    assert_eq!(verdicts.len(), 2 * BUCKETS as usize, "both edges of every bucket evaluated");
    let mut flagged = (0, 0);
    for v in &verdicts {
        let diff_lost = v.upstream_count - v.count.min(v.upstream_count);
        let diff_extra = v.count.saturating_sub(v.upstream_count);
        match v.tier.as_str() {
            "broker" => {
                let lost = injected.lost[&v.bucket_start_ms];
                assert_eq!(diff_lost, lost, "bucket {} broker", v.bucket_start_ms);
                assert_eq!(v.kind, if lost == 0 { Outcome::Complete } else { Outcome::Loss }.into());
                if lost == 1 {
                    assert!(v.lost_fingerprint.is_some(), "a single loss names its fingerprint");
                }
                flagged.0 += usize::from(lost > 0);
            }
            "consumer/billing" => {
                let dup = injected.duplicated[&v.bucket_start_ms];
                assert_eq!(diff_extra, dup, "bucket {} billing", v.bucket_start_ms);
                assert_eq!(v.kind, if dup == 0 { Outcome::Complete } else { Outcome::Duplicates }.into());
                flagged.1 += usize::from(dup > 0);
            }
            other => panic!("unexpected tier {other}"),
        }
    }
    let firing: Vec<&str> = alerts.iter().map(|a| a.dedup_key.as_str()).collect();
    assert!(firing.contains(&"loss/orders/broker"), "{firing:?}");
    assert!(firing.contains(&"duplicates/orders/consumer/billing"), "{firing:?}");
    assert!(
        !firing.iter().any(|k| k.starts_with("delay") || k.starts_with("content") || k.starts_with("missing")),
        "{firing:?}"
    );
    println!(
        "detection: {} messages, {total_lost} lost in {} buckets, {total_dup} duplicated in {} buckets; all flagged with exact counts; alerts {firing:?}",
        BUCKETS as u64 * PER_BUCKET,
        flagged.0,
        flagged.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clean_run_raises_no_alert() {
    let (_, verdicts, alerts) = run(0.0, 0.0).await;
    assert_eq!(verdicts.len(), 2 * BUCKETS as usize);
    assert!(verdicts.iter().all(|v| v.kind == Outcome::Complete.into()), "{verdicts:?}");
    assert!(alerts.is_empty(), "false alerts: {alerts:?}");
}
