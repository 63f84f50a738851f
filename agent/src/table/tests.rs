use std::collections::BTreeMap;

use super::*;
use proptest::prelude::*;

const W: i64 = 60_000;

fn obs(fp: u64, t: EventTime) -> Observation {
    Observation { fingerprint: fp, bytes: 10, event_time: t, malformed_id: false, locator: None }
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
    assert_eq!(c[0].2, StreamCounters { messages: 3, bytes: 30, no_time: 1, malformed: 2, late: 0, future: 0 });
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
                    // The rows' sketches sum to the sketch of the messages, as their counts do.
                    let sketched = || Tally {
                        sketch: Some(kaudit_schema::difference::DifferenceSketch::new(kaudit_schema::difference::DEFAULT_GEOMETRY)),
                        ..Tally::default()
                    };
                    truth.entry((topic, tier, bucket)).or_insert_with(sketched).add(fp, 10);
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

fn agent_rows(batch: &FlushBatch) -> Vec<(String, String, EpochMillis, bool)> {
    batch.progress.iter().map(|p| (p.topic.clone(), p.tier.clone(), p.watermark_ms, p.caught_up)).collect()
}

/// A flush's batch: the snapshot with heartbeats and progress, as the auditor takes it.
fn flush(t: &mut TallyTable, now: EpochMillis, positions: &[TierPositions]) -> FlushBatch {
    let mut batch = t.snapshot(now);
    t.add_progress(now, positions, &mut batch);
    batch
}

#[test]
fn heartbeats_carry_the_oldest_bucket_each_snapshot_wrote() {
    let mut t = table();
    t.set_started_at(7);
    t.record("t", "c", obs(1, EventTime::Valid(3 * W + 1)), 3 * W + 5);
    t.record("t", "c", obs(2, EventTime::Valid(W + 1)), 3 * W + 6); // an older bucket, still open
    t.record("u", "c", obs(3, EventTime::Valid(3 * W)), 3 * W + 7);
    let batch = flush(&mut t, 3 * W + 10, &[]);
    assert_eq!(t.open_from(), Some(W));
    let hb: Vec<_> = batch.heartbeats.iter().map(|h| (h.topic.as_str(), h.open_from_ms)).collect();
    assert_eq!(hb, vec![("t", Some(W)), ("u", Some(3 * W))]);
    for h in &batch.heartbeats {
        assert_eq!((h.agent_id.as_str(), h.started_at_ms, h.heartbeat_ms), ("agent-1", 7, 3 * W + 10));
        assert!(!h.stopped && !h.resumes);
        assert_eq!(h.version, batch.rows[0].version, "the snapshot's version");
    }

    t.record("t", "c", obs(4, EventTime::Valid(3 * W + 2)), 3 * W + 20);
    let batch = flush(&mut t, 3 * W + 30, &[]);
    let hb: Vec<_> = batch.heartbeats.iter().map(|h| (h.topic.as_str(), h.open_from_ms)).collect();
    assert_eq!(hb, vec![("t", Some(3 * W)), ("u", None)], "only what this snapshot wrote; nothing changed is None");
    assert!(batch.heartbeats[0].version > 0 && batch.heartbeats[1].heartbeat_ms == 3 * W + 30);
}

#[test]
fn producer_progress_is_the_oldest_bucket_in_flight() {
    let mut t = table();
    // Nothing handed off (a bare producer context): caught up at every flush.
    t.record("t", "p", obs(1, EventTime::Valid(2 * W + 5)), 2 * W + 6);
    let batch = flush(&mut t, 2 * W + 10, &[]);
    assert_eq!(agent_rows(&batch), vec![("t".into(), "p".into(), 2 * W + 5, true)]);
    assert_eq!(batch.progress[0].stream, StreamId::Agent("agent-1".into()));

    t.hand_off("t", "p", 3 * W + 1);
    t.hand_off("t", "p", 4 * W + 1);
    t.hand_off("t", "p", 4 * W + 2);
    assert_eq!(t.in_flight(), 3);
    assert_eq!(agent_rows(&flush(&mut t, 4 * W + 10, &[])), vec![("t".into(), "p".into(), 3 * W, false)]);

    // A report whose time matches no bucket in flight settles the oldest.
    t.settle("t", "p", 9 * W);
    assert_eq!(agent_rows(&flush(&mut t, 4 * W + 20, &[]))[0].2, 4 * W);
    t.settle("t", "p", 4 * W + 1);
    t.settle("t", "p", 4 * W + 2);
    assert_eq!(t.in_flight(), 0);
    t.settle("t", "p", 4 * W + 2); // more reports than hand-offs: nothing to settle
    let rows = agent_rows(&flush(&mut t, 4 * W + 30, &[]));
    assert_eq!(rows, vec![("t".into(), "p".into(), 2 * W + 5, true)], "caught up once nothing is in flight");
}

#[test]
fn ingest_progress_is_the_largest_time_seen_or_declared_and_quiet_apps_without_progress_are_caught_up() {
    let mut t = table();
    t.set_progress_basis(ProgressBasis::LargestSeen);
    t.record("t", "php", obs(1, EventTime::Valid(5 * W)), 6 * W);
    t.record("t", "php", obs(2, EventTime::Valid(4 * W)), 6 * W);
    t.declare_progress("u", "go", 2 * W);
    let batch = flush(&mut t, 6 * W, &[]);
    assert_eq!(
        agent_rows(&batch),
        vec![("t".into(), "php".into(), 5 * W, false), ("u".into(), "go".into(), 2 * W, false)]
    );
    assert_eq!(batch.heartbeats.len(), 2, "a stream known only from a progress record heartbeats too");
    let quiet = flush(&mut t, 7 * W, &[]);
    assert_eq!(agent_rows(&quiet)[0], ("t".into(), "php".into(), 5 * W, true), "no progress records, quiet: caught up");
    assert!(!agent_rows(&quiet)[1].3, "an app that declares progress is held where it says");
    t.declare_progress("t", "php", 7 * W);
    t.declare_progress("t", "php", 6 * W); // progress never goes back
    let declared = agent_rows(&flush(&mut t, 8 * W, &[]));
    assert_eq!((declared[0].2, declared[0].3), (7 * W, false), "from its first progress record on, never caught up");
}

#[test]
fn consumer_progress_is_per_assigned_partition() {
    let mut t = table();
    t.record_read("t", "c", 0, obs(1, EventTime::Valid(3 * W)), 4 * W);
    t.record_read("t", "c", 0, obs(2, EventTime::Valid(2 * W)), 4 * W);
    t.record_read("t", "c", 2, obs(3, EventTime::Missing), 4 * W + 1);
    t.record_read("t", "c", -1, obs(4, EventTime::Valid(W)), 4 * W + 1); // no partition: counted only
    let pos = |partition, caught_up| PartitionPosition { topic: "t".into(), partition, caught_up };
    // Partition 1 is assigned, unread and not caught up: its last report stands.
    let positions: Vec<TierPositions> =
        vec![("c".into(), vec![pos(0, false), pos(1, false), pos(2, true), pos(3, true)])];
    let batch = flush(&mut t, 5 * W, &positions);
    let got: Vec<_> = batch.progress.iter().map(|p| (p.stream.clone(), p.watermark_ms, p.caught_up)).collect();
    assert_eq!(
        got,
        vec![
            (StreamId::Partition(0), 3 * W, false),
            (StreamId::Partition(2), 4 * W + 1, true),
            (StreamId::Partition(3), 5 * W, true),
        ]
    );
    assert_eq!(batch.rows.iter().map(|r| r.tally.count).sum::<u64>(), 4);
    assert_eq!(batch.heartbeats.len(), 1);

    // A consumer assigned partitions of a topic it has not read yet still reports them.
    let idle: Vec<TierPositions> =
        vec![("c".into(), vec![PartitionPosition { topic: "v".into(), partition: 0, caught_up: true }])];
    let batch = flush(&mut t, 6 * W, &idle);
    assert_eq!(batch.progress.len(), 1, "t's partitions are no longer assigned: not reported");
    assert_eq!((batch.progress[0].topic.as_str(), batch.progress[0].caught_up), ("v", true));
    assert_eq!(batch.heartbeats.len(), 2);
}

/// Past the cap, a Kafka client's message of a new stream is counted as malformed, in its arrival
/// bucket, in the overflow stream, and as refused; held streams go on as before.
#[test]
fn past_the_stream_cap_new_streams_overflow_as_malformed() {
    let mut t = table();
    t.set_max_streams(2);
    t.record("a", "p", obs(1, EventTime::Valid(W)), W + 1);
    t.record("b", "p", obs(2, EventTime::Valid(W)), W + 1);
    assert!(t.has_room_for("a", "p") && !t.has_room_for("c", "p"));
    t.record("c", "p", obs(3, EventTime::Valid(0)), 2 * W + 5);
    t.record("d", "q", obs(4, EventTime::Missing), 2 * W + 6);
    t.declare_progress("e", "p", 2 * W);
    t.record("a", "p", obs(5, EventTime::Valid(W)), W + 2);
    assert_eq!((t.streams(), t.take_refused_stream_cap()), (2, 2));
    let rows = t.snapshot(2 * W + 10).rows;
    let got: Vec<_> =
        rows.iter().map(|r| (&*r.key.topic, &*r.key.tier, r.key.bucket_start_ms, r.tally.count)).collect();
    assert_eq!(got, vec![("a", "p", W, 2), ("b", "p", W, 1), (OVERFLOW_TOPIC, OVERFLOW_TIER, 2 * W, 2)]);
    let overflow = &rows[2].tally;
    assert_eq!((overflow.malformed, overflow.no_time, overflow.fp_sum), (2, 0, 7), "malformed, not no_time");
    let err = t.admit([("a", "p"), ("x", "p"), ("x", "p"), ("y", "p")]).unwrap_err();
    assert_eq!((err.cap, err.held, err.new_streams), (2, 2, 2));
    assert!(
        err.to_string().contains("2 new (topic, tier) streams (e.g. x/p, y/p) would pass this agent's cap of 2"),
        "{err}"
    );
    assert!(t.admit([("a", "p"), ("b", "p")]).is_ok());
    t.set_max_streams(3);
    assert!(t.admit([("x", "p")]).is_ok() && t.admit([("x", "p"), ("y", "p")]).is_err());
}

/// An event time more than `max_future_ms` ahead is malformed, in the arrival bucket; within it, real.
#[test]
fn far_future_event_times_are_malformed_in_the_arrival_bucket() {
    let mut t = table();
    t.set_max_future_ms(3_600_000);
    let now = 100 * W;
    t.record("t", "p", obs(1, EventTime::Valid(now + 3_600_000)), now);
    t.record("t", "p", obs(2, EventTime::Valid(now + 3_600_001)), now);
    t.record("t", "p", obs(3, EventTime::Valid(253_402_300_799_999)), now);
    let rows = t.snapshot(now).rows;
    let got: Vec<_> = rows.iter().map(|r| (r.key.bucket_start_ms, r.tally.count, r.tally.malformed)).collect();
    assert_eq!(got, vec![(now, 2, 2), (now + 60 * W, 1, 0)]);
    assert_eq!(t.take_counters()[0].2.future, 2);
}

/// Thousands of open buckets in one stream, met in any order, each found again (the issue's
/// request across 140k buckets walked a list per record).
#[test]
fn many_open_buckets_are_each_found_again_in_any_order() {
    let mut t = TallyTable::new("a", BucketWidth::from_millis(W as u64).unwrap(), 100_000 * W);
    let n = 10_000i64;
    let now = n * W;
    let order: Vec<i64> = (0..n).map(|i| (i * 7_919) % n).collect(); // a permutation (7919 is prime)
    for round in 0..2u64 {
        for &b in &order {
            t.record("t", "p", obs(round, EventTime::Valid(b * W + 1)), now);
        }
    }
    assert_eq!(t.open_buckets(), n as usize);
    let rows = t.snapshot(now).rows;
    assert_eq!(rows.len(), n as usize);
    assert!(rows.iter().all(|r| r.tally.count == 2 && r.tally.fp_sum == 1));
}

/// Rows-only snapshots (durable acknowledgements' early flushes) write dirty rows, and the next
/// full snapshot's heartbeat still names the oldest bucket written since the previous one.
#[test]
fn rows_only_snapshots_leave_heartbeats_and_closing_to_full_ones() {
    let mut t = table();
    t.record("t", "p", obs(1, EventTime::Valid(2 * W)), 3 * W);
    let early = t.snapshot_rows_only(3 * W);
    assert_eq!(early.rows.len(), 1);
    assert!(early.heartbeats.is_empty() && early.progress.is_empty());
    assert_eq!(t.snapshots_taken(), 1);
    t.record("t", "p", obs(2, EventTime::Valid(3 * W)), 3 * W);
    let early = t.snapshot_rows_only(3 * W);
    assert_eq!(early.rows.iter().map(|r| r.key.bucket_start_ms).collect::<Vec<_>>(), vec![3 * W]);
    let full = flush(&mut t, 3 * W, &[]);
    assert!(full.rows.is_empty(), "nothing changed since");
    assert_eq!(full.heartbeats[0].open_from_ms, Some(2 * W), "oldest written since the last heartbeat");
    assert_eq!(t.snapshots_taken(), 3);
    let next = flush(&mut t, 3 * W, &[]);
    assert_eq!(next.heartbeats[0].open_from_ms, None);
}

/// Past `max_open_buckets`, scattered event times are counted (exactly) as malformed in their
/// arrival bucket instead of opening more buckets; buckets already open still take messages.
#[test]
fn the_bucket_cap_diverts_scattered_event_times_to_the_arrival_bucket() {
    let mut t = table();
    t.set_max_open_buckets(3);
    let now = 1_000 * W;
    for i in 0..10 {
        t.record("t", "ingest", obs(i, EventTime::Valid(now - (i as i64 + 1) * 7 * W)), now);
    }
    t.record("t", "ingest", obs(99, EventTime::Valid(now - 7 * W)), now); // an open bucket still counts
    assert_eq!(t.open_buckets(), 4, "three scattered buckets, then the arrival bucket the rest go to");
    assert_eq!(t.take_refused_bucket_cap(), 7);
    let batch = t.snapshot(now);
    let total: u64 = batch.rows.iter().map(|r| r.tally.count).sum();
    assert_eq!(total, 11, "every message counted");
    let arrival = batch.rows.iter().find(|r| r.key.bucket_start_ms == now).expect("arrival bucket");
    assert_eq!((arrival.tally.count, arrival.tally.malformed), (7, 7));
}

/// A message recorded with its locator lands in its row's sketch: subtracting a table that missed
/// it names it, at its partition and offset; a table without sketches writes none.
#[test]
fn a_recorded_message_is_named_with_its_locator() {
    use kaudit_schema::difference::Locator;
    let (mut all, mut missed) = (table(), table());
    for offset in 0..30 {
        let o = Observation {
            locator: Some(Locator { partition: 3, offset }),
            ..obs(1_000 + offset as u64, EventTime::Valid(W))
        };
        all.record("t", "c", o, W + 1);
        if offset != 17 {
            missed.record("t", "c", o, W + 1);
        }
    }
    let sketch = |t: &mut TallyTable| t.snapshot(W + 2).rows[0].tally.sketch.clone().expect("a sketch by default");
    let decoded = sketch(&mut all).subtract(&sketch(&mut missed)).unwrap().decode();
    assert!(decoded.complete);
    assert_eq!(decoded.differences.len(), 1);
    let d = decoded.differences[0];
    assert_eq!((d.fingerprint, d.copies, d.locator), (1_017, 1, Some(Locator { partition: 3, offset: 17 })));

    let mut plain = table();
    plain.set_sketch(None);
    plain.record("t", "c", obs(1, EventTime::Valid(W)), W + 1);
    assert!(plain.snapshot(W + 2).rows[0].tally.sketch.is_none());
}

proptest! {
    /// Counting into delta tables (one per thread) and absorbing them all before each snapshot
    /// gives the very snapshots, counters and progress of counting into the table itself.
    #[test]
    fn deltas_absorbed_before_each_snapshot_are_the_table_itself(steps in prop::collection::vec(step(), 1..200)) {
        let mut direct = table();
        let mut merged = table();
        let mut deltas: Vec<TallyTable> = (0..3).map(|_| merged.delta()).collect();
        let mut now = 0i64;
        let absorb = |merged: &mut TallyTable, deltas: &mut Vec<TallyTable>, now| {
            for d in deltas.iter_mut() {
                merged.absorb(d, now);
            }
        };
        for s in steps {
            match s {
                Step::Msg { topic, tier, fp, event, lag } => {
                    let (topic, tier) = (format!("t{topic}"), format!("r{tier}"));
                    let event_time = event.map_or(EventTime::Missing, EventTime::Valid);
                    let arrival = now.max(event.unwrap_or(0)) + lag;
                    direct.record_read(&topic, &tier, (fp % 4) as i32, obs(fp, event_time), arrival);
                    deltas[(fp % 3) as usize].record_read(&topic, &tier, (fp % 4) as i32, obs(fp, event_time), arrival);
                }
                Step::Advance(ms) => now += ms,
                Step::Snapshot => {
                    absorb(&mut merged, &mut deltas, now);
                    prop_assert_eq!(in_order(flush(&mut direct, now, &[])), in_order(flush(&mut merged, now, &[])));
                    let counters = |t: &mut TallyTable| {
                        let mut c = t.take_counters();
                        c.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
                        c
                    };
                    prop_assert_eq!(counters(&mut direct), counters(&mut merged));
                }
            }
        }
        absorb(&mut merged, &mut deltas, now);
        prop_assert_eq!(in_order(flush(&mut direct, now, &[])), in_order(flush(&mut merged, now, &[])));
        prop_assert_eq!(direct.open_buckets(), merged.open_buckets());
        prop_assert!(deltas.iter().all(|d| d.open_buckets() == 0), "absorbing empties the deltas");
    }
}

/// `batch` with its streams' heartbeats and progress in (topic, tier) order (a table lists them in
/// the order it first saw each stream; rows are sorted already).
fn in_order(mut batch: FlushBatch) -> FlushBatch {
    batch.heartbeats.sort_by(|a, b| (&a.topic, &a.tier).cmp(&(&b.topic, &b.tier)));
    batch.progress.sort_by(|a, b| (&a.topic, &a.tier).cmp(&(&b.topic, &b.tier)));
    batch
}

#[test]
fn delivery_reports_counted_on_another_thread_settle_after_every_hand_off() {
    let mut merged = table();
    let (mut sender, mut callback) = (merged.delta(), merged.delta());
    sender.hand_off("t", "p", 3 * W + 1);
    sender.hand_off("t", "p", 3 * W + 2);
    callback.record("t", "p", obs(1, EventTime::Valid(3 * W + 1)), 3 * W + 5);
    callback.settle("t", "p", 3 * W + 1);
    // The flusher takes every report first, then absorbs (here the callback's delta before the
    // sender's, the worse order), then settles: the report finds its hand-off.
    let mut settles = Vec::new();
    for d in [&mut callback, &mut sender] {
        d.take_settles(&mut settles);
    }
    assert_eq!(settles, vec![Settles { topic: "t".into(), tier: "p".into(), start: 3 * W, count: 1 }]);
    merged.absorb(&mut callback, 3 * W + 10);
    merged.absorb(&mut sender, 3 * W + 10);
    for s in settles {
        merged.settle_n(&s.topic, &s.tier, s.start, s.count);
    }
    assert_eq!(merged.in_flight(), 1);
    let batch = flush(&mut merged, 3 * W + 10, &[]);
    assert_eq!(agent_rows(&batch), vec![("t".to_string(), "p".to_string(), 3 * W, false)]);
    assert_eq!(batch.rows[0].tally.count, 1);
    // More reports than hand-offs settle what is in flight, then nothing.
    merged.settle_n("t", "p", 9 * W, 5);
    assert_eq!(merged.in_flight(), 0);
}

#[test]
fn an_absorbed_delta_past_the_caps_counts_as_malformed_where_it_is_absorbed() {
    let mut merged = table();
    merged.set_max_streams(1);
    merged.set_max_open_buckets(2);
    let mut delta = merged.delta();
    merged.record("a", "c", obs(1, EventTime::Valid(W)), 2 * W);
    // A second stream: past the merged table's stream cap (the delta's own cap is per delta).
    delta.set_max_streams(10);
    delta.record("b", "c", obs(2, EventTime::Valid(W)), 2 * W);
    // A third bucket of stream a: past the bucket cap once the overflow stream's bucket is open.
    delta.record("a", "c", obs(3, EventTime::Valid(0)), 2 * W);
    merged.absorb(&mut delta, 4 * W);
    assert_eq!(merged.take_refused_stream_cap(), 1);
    assert_eq!(merged.take_refused_bucket_cap(), 1);
    let rows = merged.snapshot(4 * W).rows;
    let got: Vec<_> =
        rows.iter().map(|r| (r.key.topic.as_str(), r.key.bucket_start_ms, r.tally.count, r.tally.malformed)).collect();
    assert_eq!(got, vec![("a", W, 1, 0), ("a", 4 * W, 1, 1), ("~overflow", 4 * W, 1, 1)]);
}

proptest! {
    /// The bucket start found without dividing is the one found by dividing.
    #[test]
    fn the_start_near_the_newest_bucket_is_the_bucket_start(t in any::<i64>(), newest in any::<i64>(), near in -2 * W..2 * W) {
        let width = BucketWidth::from_millis(W as u64).unwrap();
        for newest in [width.start_of(newest), width.start_of(t.saturating_add(near))] {
            prop_assert_eq!(start_near(width, Some(newest), t), width.start_of(t));
        }
        prop_assert_eq!(start_near(width, None, t), width.start_of(t));
    }
}

proptest! {
    /// The inline comparison of stream names is `==`.
    #[test]
    fn names_compare_inline_as_they_do_with_eq(a in "[a-c]{0,20}", b in "[a-c]{0,20}") {
        prop_assert_eq!(same(&a, &b), a == b);
        prop_assert!(same(&a, &a.clone()));
    }
}

#[test]
fn deltas_together_open_no_more_buckets_than_their_table_may() {
    let mut merged = table();
    merged.set_max_open_buckets(3);
    let (mut a, mut b) = (merged.delta(), merged.delta());
    a.record("t", "c", obs(1, EventTime::Valid(W)), 10 * W);
    a.record("t", "c", obs(2, EventTime::Valid(2 * W)), 10 * W);
    b.record("t", "c", obs(3, EventTime::Valid(3 * W)), 10 * W);
    // A fourth bucket, in either delta: past the cap, counted as malformed where it arrived (a
    // bucket opened past the cap, as the table itself does).
    b.record("t", "c", obs(4, EventTime::Valid(4 * W)), 10 * W);
    assert_eq!((a.open_buckets(), b.open_buckets()), (2, 2));
    assert_eq!(b.take_refused_bucket_cap(), 1);
    merged.absorb(&mut a, 10 * W);
    merged.absorb(&mut b, 10 * W);
    // Absorbed, the deltas' buckets are given back: they may open as many again.
    let mut c = merged.delta();
    for k in 0..3 {
        c.record("u", "c", obs(k, EventTime::Valid((20 + k as i64) * W)), 30 * W);
    }
    assert_eq!((c.open_buckets(), c.take_refused_bucket_cap()), (3, 0));
}

#[test]
fn a_full_delta_forgets_its_idle_streams_so_it_never_overflows_apart_from_the_table() {
    // The review's case: cap 2; one thread counted X, another S1 and S2; X is held first.
    let mut merged = table();
    merged.set_max_streams(2);
    let (mut a, mut b) = (merged.delta(), merged.delta());
    b.record("x", "p", obs(1, EventTime::Valid(W)), W);
    a.record("s1", "p", obs(2, EventTime::Valid(W)), W);
    a.record("s2", "p", obs(3, EventTime::Valid(W)), W);
    merged.absorb(&mut b, W);
    merged.absorb(&mut a, W); // s2 overflows in the table
    assert_eq!(merged.take_refused_stream_cap(), 1);
    // The full delta forgot its streams: X counted there lands in X, not in its own overflow.
    a.record("x", "p", obs(4, EventTime::Valid(W)), W);
    a.hand_off("x", "p", W);
    b.settle("x", "p", W);
    let mut settles = Vec::new();
    a.take_settles(&mut settles);
    b.take_settles(&mut settles);
    merged.absorb(&mut a, W);
    merged.absorb(&mut b, W);
    for s in settles {
        merged.settle_n(&s.topic, &s.tier, s.start, s.count);
    }
    assert_eq!(merged.take_refused_stream_cap(), 0);
    assert_eq!(merged.in_flight(), 0);
    let rows = merged.snapshot(W).rows;
    let x: Vec<_> = rows.iter().filter(|r| r.key.topic == "x").map(|r| (r.tally.count, r.tally.malformed)).collect();
    assert_eq!(x, vec![(2, 0)]);
}

#[test]
fn hand_offs_and_reports_past_a_deltas_cap_are_resolved_by_name_when_folded_in() {
    let mut merged = table();
    merged.set_max_streams(1);
    merged.record("x", "p", obs(9, EventTime::Valid(W)), W); // the table's one stream
    let (mut full, mut other) = (merged.delta(), merged.delta());
    full.record("s1", "p", obs(1, EventTime::Valid(W)), W); // the full delta's one stream
    // A hand-off past the full delta's cap, its report in a delta that holds the stream; and
    // the other way round.
    full.hand_off("x", "p", W);
    other.settle("x", "p", W);
    other.hand_off("y", "p", 2 * W);
    full.settle("y", "p", 2 * W);
    let mut settles = Vec::new();
    full.take_settles(&mut settles);
    other.take_settles(&mut settles);
    merged.absorb(&mut full, 3 * W);
    merged.absorb(&mut other, 3 * W);
    assert_eq!(merged.in_flight(), 2, "both hand-offs were folded in");
    for s in settles {
        merged.settle_n(&s.topic, &s.tier, s.start, s.count);
    }
    assert_eq!(merged.in_flight(), 0, "each report found its hand-off");
    // More reports than hand-offs still settle nothing else.
    merged.hand_off("x", "p", 4 * W);
    merged.settle_n("z", "p", 4 * W, 2); // z is past the cap: the overflow stream, with none
    assert_eq!(merged.in_flight(), 1);
}
