//! Lag is not loss, crashes are not duplicates: the core with progress and heartbeat rows, no store.

use kaudit_alerting::AlertKind;
use kaudit_schema::{HeartbeatRow, ProgressRow, StreamId, VerdictDetail};

use super::*;
use crate::evaluate::Thresholds;
use crate::hold::Hold;

/// `max_lag_ms` for these tests: a tier further behind than this raises `lag`.
const MAX_LAG: i64 = 10_000;

fn lag_core() -> EngineCore {
    let thresholds = Thresholds { max_lag_ms: MAX_LAG as u64, ..Thresholds::default() };
    let config = VerifierConfig { lateness_ms: LATENESS as u64, thresholds, ..VerifierConfig::default() };
    EngineCore::new(config, GRACE as u64, AGENT_TIMEOUT as u64)
}

/// A partition stream of `tier` at `watermark_ms`, reported at `at`.
fn partition(tier: &str, p: i32, watermark_ms: i64, caught_up: bool, at: i64) -> ProgressRow {
    ProgressRow {
        topic: "orders".into(),
        tier: tier.into(),
        stream: StreamId::Partition(p),
        agent_id: format!("{tier}-owner"),
        watermark_ms,
        caught_up,
        reported_at_ms: at,
        version: at as u64,
    }
}

/// An agent stream of a producer instance.
fn producer(agent: &str, watermark_ms: i64, caught_up: bool, at: i64) -> ProgressRow {
    ProgressRow {
        stream: StreamId::Agent(agent.into()),
        agent_id: agent.into(),
        ..partition("producer", 0, watermark_ms, caught_up, at)
    }
}

fn beat(tier: &str, agent: &str, at: i64, open_from: Option<i64>, stopped: bool, resumes: bool) -> HeartbeatRow {
    HeartbeatRow {
        topic: "orders".into(),
        tier: tier.into(),
        agent_id: agent.into(),
        started_at_ms: T0 - W,
        heartbeat_ms: at,
        open_from_ms: open_from,
        stopped,
        resumes,
        version: at as u64,
    }
}

fn step_with(
    core: &mut EngineCore,
    rows: &[TallyRow],
    progress: &[ProgressRow],
    heartbeats: &[HeartbeatRow],
    now: EpochMillis,
) -> (TopicPass, MetricDeltas) {
    let pass = core.plan_with("orders", &pipeline(), rows, Reports { progress, heartbeats }, now);
    let deltas = core.commit(pass.clone());
    (pass, deltas)
}

/// An alert transition: dedup key, new state, resolution.
type Transition = (String, AlertState, Option<String>);

/// Apply the alert updates at `now`; the transitions.
fn alerts(core: &mut EngineCore, now: EpochMillis) -> Vec<Transition> {
    let mut out = Vec::new();
    for u in core.alert_updates("orders", &pipeline(), now) {
        if u.transition {
            out.push((u.alert.dedup_key.clone(), u.alert.state, u.alert.resolution.clone()));
        }
        core.apply_alert(u.alert);
    }
    out
}

fn detail(pass: &TopicPass, bucket: i64) -> Option<VerdictDetail> {
    pass.decisions.iter().find(|d| d.verdict().bucket_start_ms == bucket)?.row()?.detail.clone()
}

#[test]
fn a_tier_lagging_twice_the_grace_is_pending_raises_lag_then_gets_its_true_verdict() {
    let mut c = lag_core();
    let mut rows = vec![row(T0, "producer", "p", 0, 100), row(T0, "consumer", "c", 0, 50)];
    // Due at end + grace; the consumer has read up to the middle of the bucket, 2 × grace later.
    let now = T0 + W + 2 * GRACE + 1;
    let progress = [producer("p", now, true, now), partition("consumer", 0, T0 + 5_000, false, now)];
    let (pass, deltas) = step_with(&mut c, &rows, &progress, &[], now);
    assert_eq!(kinds(&pass), [(T0, "pending", "pending".to_string())]);
    let d = detail(&pass, T0).unwrap();
    assert_eq!((d.behind_tier.as_deref(), d.lag_ms), (Some("consumer"), Some(W - 5_000)));
    assert_eq!((deltas.buckets_evaluated, deltas.revisions), (0, 0));
    assert_eq!(deltas.verdicts, BTreeMap::from([(Outcome::Pending, 1)]));
    assert!(deltas.messages.is_empty() && deltas.cusum.is_empty(), "a pending bucket feeds nothing");
    assert_eq!(alerts(&mut c, now), [("lag/orders/consumer".to_string(), AlertState::Firing, None)]);
    let lag = &c.alerts()["lag/orders/consumer"];
    assert_eq!((lag.numbers.lag_ms, lag.numbers.behind_since_ms), (Some(now - T0 - 5_000), Some(T0 + 5_000)));
    let gauges = c.tier_gauges("orders", &pipeline());
    assert_eq!(gauges[1].lag_seconds, Some((now - T0 - 5_000) as f64 / 1_000.0));

    // Still behind: the pending verdict is not written again, no alert changes.
    let (pass, _) = step_with(&mut c, &rows, &[producer("p", now, true, now), progress[1].clone()], &[], now + 1);
    assert!(pass.writes().is_empty(), "{pass:?}");
    assert!(alerts(&mut c, now + 1).is_empty());

    // The consumer catches up and has every message: complete, first evaluation, not a revision.
    rows.push(row(T0, "consumer", "c2", 50, 50));
    let later = now + 5_000;
    let progress = [producer("p", later, true, later), partition("consumer", 0, later - 100, true, later)];
    let (pass, deltas) = step_with(&mut c, &rows, &progress, &[], later);
    assert_eq!(kinds(&pass), [(T0, "first", "complete".to_string())]);
    assert_eq!(pass.writes()[0].detail, None);
    assert_eq!((deltas.buckets_evaluated, deltas.revisions, deltas.cusum.len()), (1, 0, 3));
    assert_eq!(deltas.messages["consumer"], (0, 0));
    let transitions = alerts(&mut c, later);
    assert_eq!(
        transitions,
        [("lag/orders/consumer".to_string(), AlertState::Resolved, Some("caught up (lag 0 s)".to_string()))]
    );
    assert_eq!(c.alerts()["lag/orders/consumer"].numbers.lag_ms, Some(0), "the final numbers");
    assert_eq!(c.alerts().len(), 1, "no loss or missing-tier alert at any point: {:?}", c.alerts().keys());
}

#[test]
fn a_real_loss_is_judged_as_soon_as_both_tiers_are_past_the_bucket() {
    let mut c = lag_core();
    let rows = [row(T0, "producer", "p", 0, 100), row(T0, "consumer", "c", 0, 99)];
    let now = T0 + W + GRACE + 1;
    let progress = [producer("p", now, true, now), partition("consumer", 0, now - 500, true, now)];
    let (pass, _) = step_with(&mut c, &rows, &progress, &[], now);
    assert_eq!(kinds(&pass), [(T0, "first", "loss".to_string())]);
    assert_eq!(alerts(&mut c, now), [("loss/orders/consumer".to_string(), AlertState::Firing, None)]);
}

#[test]
fn a_tier_that_stops_for_good_raises_lag_then_is_unreached_after_the_lateness_window() {
    let mut c = lag_core();
    let rows: Vec<TallyRow> = (0..3).map(|b| row(T0 + b * W, "producer", "p", (b as u64) << 32, 100)).collect();
    // The consumer read part of the first bucket, then stopped cleanly and never came back.
    let consumer = partition("consumer", 0, T0 + 2_000, false, T0 + 3_000);
    let stopped = beat("consumer", "c", T0 + 3_000, Some(T0), true, false);
    let mut unreached = Vec::new();
    let mut lag_fired = false;
    let mut now = T0 + W + GRACE + 1;
    while now <= T0 + 3 * W + GRACE + LATENESS + 5_000 {
        let progress = [producer("p", now, true, now), consumer.clone()];
        let (pass, deltas) = step_with(&mut c, &rows, &progress, std::slice::from_ref(&stopped), now);
        for d in &pass.decisions {
            let v = d.verdict();
            let end = v.bucket_start_ms + W;
            match d {
                Decision::Pending { .. } => assert!(now <= end + GRACE + LATENESS),
                Decision::First { .. } => {
                    assert_eq!(v.outcome(), Outcome::Unreached, "{d:?}");
                    assert!(now > end + GRACE + LATENESS, "final only once out of the window");
                    assert_eq!(
                        v.hold,
                        Some(Hold::Unreached { behind_tier: "consumer".into(), lag_ms: end - T0 - 2_000 })
                    );
                    unreached.push(v.bucket_start_ms);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(deltas.messages.is_empty() && deltas.cusum.is_empty(), "nothing judged is fed");
        for (key, state, _) in alerts(&mut c, now) {
            assert_eq!((key.as_str(), state), ("lag/orders/consumer", AlertState::Firing), "only lag, once");
            lag_fired = true;
        }
        now += 5_000;
    }
    assert!(lag_fired);
    assert_eq!(unreached, [T0, T0 + W, T0 + 2 * W], "each bucket once");
    assert!(!c.alerts().contains_key("tier_down/orders/consumer"), "a clean stop is not a crash");
}

#[test]
fn a_pending_verdict_loaded_after_a_restart_still_ends_unreached() {
    let rows = [row(T0, "producer", "p", 0, 100), row(T0, "consumer", "c", 0, 40)];
    let behind = |now| [producer("p", now, true, now), partition("consumer", 0, T0 + 1_000, false, now)];
    let now = T0 + W + GRACE + 1;
    let (pass, _) = step_with(&mut lag_core(), &rows, &behind(now), &[], now);
    let mut again = lag_core();
    again.load_verdicts("orders", T0, pass.writes());
    let (replay, deltas) = step_with(&mut again, &rows, &behind(now + 1_000), &[], now + 1_000);
    assert_eq!((kinds(&replay), deltas.verdicts.len()), (vec![(T0, "known", "pending".to_string())], 0));
    let closed = T0 + W + GRACE + LATENESS + 1;
    let (pass, deltas) = step_with(&mut again, &[], &behind(closed), &[], closed);
    assert_eq!(kinds(&pass), [(T0, "first", "unreached".to_string())]);
    let row = &pass.writes()[0];
    assert_eq!((row.upstream_count, row.count), (100, 40), "the numbers as they stood");
    assert_eq!(row.detail.as_ref().unwrap().lag_ms, Some(W - 1_000));
    assert_eq!(deltas.verdicts, BTreeMap::from([(Outcome::Unreached, 1)]));
}

/// The producer instance `p-1` flushed its last tallies at T0 + 8 s and died with bucket T0 open:
/// its last 10 messages reached the broker but never its tally.
fn crashed_producer(stopped: bool) -> (EngineCore, Vec<(TopicPass, Vec<Transition>)>) {
    let mut c = lag_core();
    let rows = [row(T0, "producer", "p-1", 0, 90), row(T0, "consumer", "c", 0, 100)];
    let dead = beat("producer", "p-1", T0 + 8_000, Some(T0), stopped, false);
    let mut passes = Vec::new();
    for now in [T0 + W + GRACE + 1, T0 + 8_000 + AGENT_TIMEOUT + 1] {
        let progress = [
            producer("p-1", T0 + 7_000, false, T0 + 8_000),
            producer("p-2", now, true, now),
            partition("consumer", 0, now, true, now),
        ];
        let beats = [dead.clone(), beat("producer", "p-2", now, None, false, false)];
        let (pass, _) = step_with(&mut c, &rows, &progress, &beats, now);
        let transitions = alerts(&mut c, now);
        passes.push((pass, transitions));
    }
    (c, passes)
}

#[test]
fn a_producer_that_crashed_with_a_bucket_open_makes_it_indeterminate_not_duplicates() {
    let (c, passes) = crashed_producer(false);
    assert_eq!(kinds(&passes[0].0), [(T0, "pending", "pending".to_string())], "its stream holds the tier back");
    assert_eq!(kinds(&passes[1].0), [(T0, "first", "indeterminate".to_string())]);
    let d = detail(&passes[1].0, T0).unwrap();
    assert_eq!(d.vanished.len(), 1);
    assert_eq!((d.vanished[0].agent_id.as_str(), d.vanished[0].last_heartbeat_ms), ("p-1", T0 + 8_000));
    assert!(passes.iter().all(|(_, t)| t.is_empty()), "indeterminate pages no one: {passes:?}");
    assert_eq!(c.firing(), 0);
}

#[test]
fn the_same_producer_stopped_cleanly_leaves_nothing_indeterminate() {
    let (c, passes) = crashed_producer(true);
    assert_eq!(kinds(&passes[0].0), [(T0, "first", "duplicates".to_string())], "a stopped stream holds nothing back");
    assert!(passes[1].0.decisions.is_empty());
    assert_eq!(passes[0].1, [("duplicates/orders/consumer".to_string(), AlertState::Firing, None)], "real ones");
    assert_eq!(c.firing(), 1);
}

#[test]
fn a_dead_tap_never_makes_anything_indeterminate_and_its_tier_is_down() {
    let pipeline = PipelineConfig {
        topics: vec!["orders".into()],
        tiers: vec!["producer".into(), "broker".into()],
        consumers: vec![],
    }
    .build();
    let mut c = lag_core();
    let rows = [row(T0, "producer", "p", 0, 100), row(T0, "broker", "tap", 0, 90)];
    let now = T0 + W + AGENT_TIMEOUT + GRACE;
    let tap = beat("broker", "tap:orders:0", T0 + 9_000, Some(T0), false, true);
    let pass = c.plan_with("orders", &pipeline, &rows, Reports { progress: &[], heartbeats: &[tap] }, now);
    assert_eq!(pass.decisions[0].verdict().outcome(), Outcome::Loss, "the tap resumes exactly: a difference stands");
    c.commit(pass);
    let keys: Vec<String> = c.alert_updates("orders", &pipeline, now).into_iter().map(|u| u.alert.dedup_key).collect();
    assert_eq!(keys, ["loss/orders/broker", "tier_down/orders/broker"]);
}

#[test]
fn tier_down_fires_when_every_instance_crashed_and_resolves_when_one_is_live() {
    let mut c = lag_core();
    let rows = [row(T0, "producer", "p", 0, 10)];
    let crashed =
        [beat("producer", "p-1", T0, Some(T0), false, false), beat("producer", "p-0", T0 - 5_000, None, false, false)];
    let now = T0 + AGENT_TIMEOUT + 1;
    step_with(&mut c, &rows, &[], &crashed, now);
    assert_eq!(alerts(&mut c, now), [("tier_down/orders/producer".to_string(), AlertState::Firing, None)]);
    let down = &c.alerts()["tier_down/orders/producer"];
    assert_eq!((down.numbers.last_heartbeat_ms, down.upstream_tier.as_str()), (Some(T0), ""));
    assert_eq!(c.tier_gauges("orders", &pipeline())[0].agents_live, 0);
    step_with(&mut c, &rows, &[], &crashed, now + 5_000);
    assert!(alerts(&mut c, now + 5_000).is_empty(), "fires once");

    let revived = [crashed[0].clone(), beat("producer", "p-2", now + 10_000, None, false, false)];
    step_with(&mut c, &rows, &[], &revived, now + 10_000);
    let transitions = alerts(&mut c, now + 10_000);
    let expected =
        ("tier_down/orders/producer".to_string(), AlertState::Resolved, Some("an agent is live again".into()));
    assert_eq!(transitions, [expected]);
    assert_eq!(c.tier_gauges("orders", &pipeline())[0].agents_live, 1);
    let missing = Alert::dedup_key(AlertKind::MissingTier, "orders", "consumer");
    assert!(!c.alerts().contains_key(&missing), "the crashed instance's bucket is indeterminate, not a missing tier");
}

#[test]
fn tiers_without_progress_rows_are_judged_by_time_alone() {
    let rows = [row(T0, "producer", "p", 0, 100), row(T0, "consumer", "c", 0, 90)];
    let now = T0 + W + GRACE + 1;
    let only_producer = [producer("p", now, true, now)];
    let with =
        lag_core().plan_with("orders", &pipeline(), &rows, Reports { progress: &only_producer, heartbeats: &[] }, now);
    let without = lag_core().plan("orders", &pipeline(), &rows, now);
    assert_eq!(kinds(&with), kinds(&without));
    assert_eq!(kinds(&without), [(T0, "first", "loss".to_string())]);
}

/// Rows plus, per tier, an optional watermark (a partition for the consumer, an agent stream for
/// the producer, neither caught up).
fn watermark_strategy() -> impl Strategy<Value = Option<i64>> {
    prop::option::of((-1..12i64, -2..=2i64).prop_map(|(b, d)| T0 + b * W + d))
}

fn progress_of(producer_wm: Option<i64>, consumer_wm: Option<i64>, now: i64) -> Vec<ProgressRow> {
    let mut out = Vec::new();
    out.extend(producer_wm.map(|wm| producer("p", wm, false, now)));
    out.extend(consumer_wm.map(|wm| partition("consumer", 0, wm, false, now)));
    out
}

proptest! {
    /// Invariant: a bucket is never judged final while a tier of its edge has a watermark before
    /// the bucket's end; and it is pending only then (tiers without progress: time alone).
    #[test]
    fn never_final_while_a_tier_is_before_the_end(
        rows in rows_strategy(), now in now_strategy(), up in watermark_strategy(), down in watermark_strategy(),
    ) {
        let progress = progress_of(up, down, now);
        let pass = lag_core().plan_with("orders", &pipeline(), &rows, Reports { progress: &progress, heartbeats: &[] }, now);
        for d in &pass.decisions {
            let end = d.verdict().bucket_start_ms + W;
            let behind = [up, down].into_iter().flatten().any(|wm| wm < end);
            prop_assert_eq!(d.verdict().outcome() == Outcome::Pending, behind, "{:?}", d);
            prop_assert_eq!(matches!(d, Decision::Pending { .. }), behind);
        }
    }

    /// Invariant: once the tiers catch up, every pending edge becomes a first verdict (never a
    /// revision), is counted once, and equals what time alone would have judged.
    #[test]
    fn pending_then_caught_up_is_a_first_verdict(
        rows in rows_strategy(), now in now_strategy(), up in watermark_strategy(), down in watermark_strategy(),
    ) {
        let mut c = lag_core();
        let progress = progress_of(up, down, now);
        let (first, first_deltas) = step_with(&mut c, &rows, &progress, &[], now);
        let caught_up = progress_of(up.map(|_| now + 10 * W), down.map(|_| now + 10 * W), now);
        let (second, deltas) = step_with(&mut c, &rows, &caught_up, &[], now);
        let pending = first.decisions.iter().filter(|d| matches!(d, Decision::Pending { .. })).count();
        prop_assert_eq!(second.decisions.len(), pending);
        let all_first = second.decisions.iter().all(|d| matches!(d, Decision::First { .. }));
        prop_assert!(all_first);
        prop_assert_eq!(deltas.revisions, 0);
        prop_assert_eq!(first_deltas.buckets_evaluated + deltas.buckets_evaluated, first.decisions.len() as u64);
        let by_time = core().plan("orders", &pipeline(), &rows, now);
        let judged: BTreeSet<_> = first.decisions.iter().chain(&second.decisions)
            .filter(|d| d.verdict().is_final())
            .map(|d| (d.verdict().bucket_start_ms, d.verdict().kind().to_string()))
            .collect();
        let expected: BTreeSet<_> = kinds(&by_time).into_iter().map(|(b, _, k)| (b, k)).collect();
        prop_assert_eq!(judged, expected);
    }
}

/// Incremental evaluation: a bucket judged and settled before an instance that held it open is
/// found vanished is opened again when it is, so the next pass revises it as a full read would.
#[test]
fn an_instance_found_vanished_later_reopens_the_buckets_it_held() {
    let mut c = lag_core();
    let rows = [row(T0, "producer", "p-1", 0, 90), row(T0, "consumer", "c", 0, 100)];
    c.note_buckets("orders", [T0], true);
    let dead = beat("producer", "p-1", T0 + 8_000, Some(T0), false, false);
    let now = T0 + W + GRACE + 1; // judged by time: the producer reports no progress
    let (pass, _) = step_with(&mut c, &rows, &[], std::slice::from_ref(&dead), now);
    assert_eq!(kinds(&pass), [(T0, "first", "duplicates".to_string())], "p-1 is not silent long enough yet");
    assert!(c.is_idle("orders", now + 1), "judged and settled: nothing to read");

    let later = T0 + 8_000 + AGENT_TIMEOUT + 1;
    c.refresh_progress("orders", Reports { progress: &[], heartbeats: std::slice::from_ref(&dead) }, later);
    assert_eq!(c.buckets_to_read("orders", later), Some(vec![T0]), "p-1 vanished: the bucket it held is open");
    let (incremental, _) = step_with(&mut c, &rows, &[], std::slice::from_ref(&dead), later);
    assert_eq!(kinds(&incremental), [(T0, "revised", "indeterminate".to_string())]);
    assert!(c.is_idle("orders", later + 1));
}
