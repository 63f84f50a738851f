use std::collections::BTreeMap;

use super::*;
use proptest::prelude::*;

const W: i64 = 60_000;

fn obs(fp: u64, t: EventTime) -> Observation {
    Observation { fingerprint: fp, bytes: 10, event_time: t, malformed_id: false }
}

fn table() -> TallyTable {
    TallyTable::new("agent-1", BucketWidth::from_millis(W as u64).unwrap(), 5 * W)
}

#[test]
fn counts_by_event_time_bucket_with_latency() {
    let mut t = table();
    t.record("orders", "producer", obs(1, EventTime::Valid(10 * W + 5)), 10 * W + 105);
    t.record("orders", "producer", obs(2, EventTime::Valid(10 * W + 7)), 12 * W);
    t.record("orders", "producer", obs(3, EventTime::Valid(11 * W)), 11 * W + 1);
    let batch = t.snapshot(12 * W);
    let got: Vec<_> = batch.rows.iter().map(|r| (r.key.bucket_start_ms, r.tally.count, r.tally.fp_sum)).collect();
    assert_eq!(got, vec![(10 * W, 2, 3), (11 * W, 1, 3)]);
    let q = batch.rows[0].tally.latency.quantiles().unwrap();
    assert_eq!(q.p50, 100);
    let exact_max = (2 * W - 7) as f64;
    assert!((q.max as f64 - exact_max).abs() <= exact_max * 0.01, "max {} within 1% of {exact_max}", q.max);
}

#[test]
fn missing_and_malformed_times_go_to_the_arrival_bucket() {
    let mut t = table();
    t.record("t", "c", obs(1, EventTime::Missing), 3 * W + 1);
    t.record("t", "c", obs(2, EventTime::Malformed), 3 * W + 2);
    t.record("t", "c", Observation { malformed_id: true, ..obs(4, EventTime::Valid(3 * W)) }, 3 * W + 3);
    let rows = t.snapshot(3 * W + 10).rows;
    assert_eq!(rows.len(), 1);
    let tally = &rows[0].tally;
    assert_eq!((tally.count, tally.no_time, tally.malformed, tally.latency.len()), (3, 1, 2, 1));
    let c = t.take_counters();
    assert_eq!(c[0].2, StreamCounters { messages: 3, bytes: 30, no_time: 1, malformed: 2, late: 0 });
    assert!(t.take_counters().is_empty(), "counters reset once taken");
}

#[test]
fn only_dirty_rows_are_flushed_and_versions_grow() {
    let mut t = table();
    t.record("t", "c", obs(1, EventTime::Valid(0)), 0);
    let a = t.snapshot(1000);
    assert_eq!(a.rows.len(), 1);
    assert!(t.snapshot(1000).rows.is_empty(), "nothing changed");
    t.record("t", "c", obs(2, EventTime::Valid(1)), 1);
    let b = t.snapshot(500); // the clock stepped back
    assert_eq!(b.rows[0].tally.count, 2, "cumulative, not a delta");
    assert!(b.rows[0].version > a.rows[0].version);
}

#[test]
fn closed_buckets_leave_memory_and_late_messages_get_their_own_row() {
    let mut t = table();
    t.record("t", "c", obs(1, EventTime::Valid(0)), 0);
    t.snapshot(W);
    assert_eq!(t.open_buckets(), 1);
    t.snapshot(6 * W); // bucket 0 ends at W; closed at W + 5W
    assert_eq!(t.open_buckets(), 0);
    t.record("t", "c", obs(2, EventTime::Valid(5)), 6 * W + 1);
    let rows = t.snapshot(6 * W + 2).rows;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].key.agent_id.starts_with("agent-1~late"), "{}", rows[0].key.agent_id);
    assert_eq!(rows[0].tally.count, 1);
    assert_eq!(t.take_counters()[0].2.late, 1);
}

#[derive(Debug, Clone)]
enum Step {
    Msg { topic: u8, tier: u8, fp: u64, event: Option<i64>, lag: i64 },
    Advance(i64),
    Snapshot,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..2, 0u8..2, any::<u64>(), prop::option::of(0i64..20 * W), 0i64..8 * W)
            .prop_map(|(topic, tier, fp, event, lag)| Step::Msg { topic, tier, fp, event, lag }),
        2 => (0i64..3 * W).prop_map(Step::Advance),
        2 => Just(Step::Snapshot),
    ]
}

proptest! {
    /// Invariant (exactly-once audit data): keeping, per key, the highest-version row of every
    /// snapshot, and summing rows per (topic, tier, bucket) across agent ids, gives exactly the
    /// tally of the messages recorded, however late they come and however buckets close.
    #[test]
    fn latest_rows_sum_to_ground_truth(steps in prop::collection::vec(step(), 1..200)) {
        let mut t = table();
        let mut now = 0i64;
        let mut store: BTreeMap<TallyKey, TallyRow> = BTreeMap::new();
        let mut truth: BTreeMap<(String, String, i64), Tally> = BTreeMap::new();
        let apply = |batch: FlushBatch, store: &mut BTreeMap<TallyKey, TallyRow>| {
            for row in batch.rows {
                let keep = store.get(&row.key).is_none_or(|old| old.version <= row.version);
                if keep { store.insert(row.key.clone(), row); }
            }
        };
        for s in steps {
            match s {
                Step::Msg { topic, tier, fp, event, lag } => {
                    let (topic, tier) = (format!("t{topic}"), format!("r{tier}"));
                    let event_time = event.map_or(EventTime::Missing, EventTime::Valid);
                    let arrival = now.max(event.unwrap_or(0)) + lag;
                    t.record(&topic, &tier, obs(fp, event_time), arrival);
                    let bucket = W * (event.unwrap_or(arrival).div_euclid(W));
                    truth.entry((topic, tier, bucket)).or_default().add(fp, 10);
                }
                Step::Advance(ms) => now += ms,
                Step::Snapshot => apply(t.snapshot(now), &mut store),
            }
        }
        apply(t.snapshot(now), &mut store);
        let mut summed: BTreeMap<(String, String, i64), Tally> = BTreeMap::new();
        for row in store.values() {
            let mut plain = row.tally.clone();
            plain.latency = Default::default();
            plain.no_time = 0;
            summed.entry((row.key.topic.clone(), row.key.tier.clone(), row.key.bucket_start_ms)).or_default().merge(&plain);
        }
        prop_assert_eq!(summed, truth);
    }
}
