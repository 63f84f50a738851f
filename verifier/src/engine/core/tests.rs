//! The engine's decisions without a store: plain rows in, decisions, metric deltas and alert
//! transitions out.

use std::collections::{BTreeMap, BTreeSet};

use kaudit_alerting::AlertState;
use kaudit_schema::{Outcome, Tally, TallyKey, VerdictKind};
use proptest::prelude::*;

use super::*;
use crate::compare::Verdict;
use crate::pipeline::PipelineConfig;

const W: i64 = 10_000;
const GRACE: i64 = 5_000;
const LATENESS: i64 = 30_000;
const AGENT_TIMEOUT: i64 = 20_000;
const T0: i64 = 1_700_000_000_000 / W * W;

fn pipeline() -> Pipeline {
    PipelineConfig { topics: vec!["orders".into()], tiers: vec!["producer".into()], consumers: vec!["consumer".into()] }
        .build()
}

fn core() -> EngineCore {
    let config = VerifierConfig { lateness_ms: LATENESS as u64, ..VerifierConfig::default() };
    EngineCore::new(config, GRACE as u64, AGENT_TIMEOUT as u64)
}

/// A row of `n` messages whose fingerprints are `first..first + n`.
fn row(bucket: i64, tier: &str, agent: &str, first: u64, n: u64) -> TallyRow {
    let mut tally = Tally::default();
    for fp in first..first + n {
        tally.add(fp.wrapping_mul(0x9e37_79b9_7f4a_7c15), 100);
        tally.latency.record(20);
    }
    let key = TallyKey { topic: "orders".into(), bucket_start_ms: bucket, tier: tier.into(), agent_id: agent.into() };
    TallyRow { key, bucket_width_ms: W, version: 1, tally }
}

/// Plan and commit at once, as after a successful write.
fn step(core: &mut EngineCore, rows: &[TallyRow], now: EpochMillis) -> (TopicPass, MetricDeltas) {
    let pass = core.plan("orders", &pipeline(), rows, now);
    let deltas = core.commit(pass.clone());
    (pass, deltas)
}

fn kinds(pass: &TopicPass) -> Vec<(EpochMillis, &'static str, String)> {
    let label = |d: &Decision| match d {
        Decision::Pending { .. } => "pending",
        Decision::First { .. } => "first",
        Decision::Revised { .. } => "revised",
        Decision::Known { .. } => "known",
    };
    pass.decisions.iter().map(|d| (d.verdict().bucket_start_ms, label(d), d.verdict().kind().to_string())).collect()
}

#[test]
fn a_bucket_waits_for_the_grace_then_is_judged_once() {
    let mut c = core();
    let rows = [row(T0, "producer", "p", 0, 100), row(T0, "consumer", "c", 0, 100)];
    assert!(step(&mut c, &rows, T0 + W + GRACE).0.decisions.is_empty(), "exactly end + grace: not yet");
    let (pass, deltas) = step(&mut c, &rows, T0 + W + GRACE + 1);
    assert_eq!(kinds(&pass), [(T0, "first", "complete".to_string())]);
    assert_eq!(pass.writes().len(), 1);
    assert_eq!((deltas.buckets_evaluated, deltas.revisions), (1, 0));
    assert_eq!(deltas.verdicts, BTreeMap::from([(Outcome::Complete, 1)]));
    assert_eq!(deltas.messages, BTreeMap::from([("consumer".to_string(), (0, 0))]), "zeros are reported too");
    assert_eq!(deltas.cusum.len(), 3, "loss ratio, duplicate ratio and p99 observed");
    assert_eq!(step(&mut c, &rows, T0 + W + GRACE + 2).0.decisions, []);
}

/// The latency metric shows the latest bucket judged on each edge, whatever order they come in.
#[test]
fn latency_is_reported_for_the_latest_bucket_judged() {
    let mut c = core();
    let mut slow = row(T0 + W, "consumer", "c", 0, 100);
    slow.tally.latency.record(5_000);
    let rows = [
        row(T0, "producer", "p", 0, 100),
        row(T0, "consumer", "c", 0, 100),
        row(T0 + W, "producer", "p", 0, 100),
        slow,
    ];
    let (_, deltas) = step(&mut c, &rows, T0 + 3 * W);
    let (bucket, q) = deltas.latency["consumer"];
    assert_eq!(bucket, T0 + W);
    assert_eq!(q.p50, 20, "{q:?}");
    assert!((4_950..=5_050).contains(&q.max), "the sketch is within 1 %: {q:?}");
    assert_eq!(deltas.latency.len(), 1, "only the downstream edge");
    let (_, again) = step(&mut c, &rows, T0 + 3 * W + 1);
    assert!(again.latency.is_empty(), "reported at the first judgement only");
}

#[test]
fn a_late_row_revises_without_recounting_and_a_failed_write_is_decided_again() {
    let mut c = core();
    let mut rows = vec![row(T0, "producer", "p", 0, 100), row(T0, "consumer", "c", 0, 90)];
    let now = T0 + 2 * W;
    let (pass, deltas) = step(&mut c, &rows, now);
    assert_eq!(kinds(&pass), [(T0, "first", "loss".to_string())]);
    assert_eq!(deltas.messages["consumer"], (10, 0));
    rows.push(row(T0, "consumer", "c-late", 90, 10));
    let pass = c.plan("orders", &pipeline(), &rows, now + 1);
    assert_eq!(kinds(&pass), [(T0, "revised", "complete".to_string())]);
    assert_eq!(c.plan("orders", &pipeline(), &rows, now + 1), pass, "nothing is remembered before commit");
    let deltas = c.commit(pass);
    assert_eq!((deltas.buckets_evaluated, deltas.revisions, deltas.cusum.len()), (0, 1, 0));
    assert!(deltas.messages.is_empty(), "messages are counted at the first evaluation only");
    assert_eq!(step(&mut c, &rows, now + 2).0.decisions, []);
}

#[test]
fn the_width_comes_from_the_rows_and_without_rows_there_is_nothing_to_judge() {
    let mut c = core();
    let (pass, _) = step(&mut c, &[], T0 + 10 * W);
    assert_eq!((pass.width_ms, c.width_ms("orders")), (None, None));
    assert!(c.alert_updates("orders", &pipeline(), T0 + 10 * W).is_empty());
    let wide = |tier: &str| TallyRow { bucket_width_ms: 60_000, ..row(T0, tier, "a", 0, 5) };
    let rows = [wide("producer"), wide("consumer")];
    assert!(step(&mut c, &rows, T0 + 60_000 + GRACE).0.decisions.is_empty(), "judged by its own width");
    assert_eq!(c.width_ms("orders"), Some(60_000));
    assert_eq!(step(&mut c, &rows, T0 + 60_000 + GRACE + 1).0.decisions.len(), 1);
    let wm = c.watermark();
    assert_eq!(wm.first_bucket(60_000, T0), T0 - LATENESS - GRACE - 60_000);
}

#[test]
fn stored_verdicts_are_loaded_once_per_range() {
    let mut c = core();
    assert_eq!(c.verdicts_to_load("orders", 100, 500), Some((100, 500)));
    c.load_verdicts("orders", 100, Vec::new());
    assert_eq!(c.verdicts_to_load("orders", 100, 600), None);
    assert_eq!(c.verdicts_to_load("orders", 150, 600), None);
    assert_eq!(c.verdicts_to_load("orders", 40, 600), Some((40, 100)), "a wider bucket reaches further back");
}

#[test]
fn a_restarted_core_repeats_no_write_no_count_and_no_notification() {
    let mut first = core();
    let rows = [row(T0, "producer", "p", 0, 100), row(T0, "consumer", "c", 0, 50)];
    let now = T0 + 2 * W;
    let (pass, _) = step(&mut first, &rows, now);
    let updates = first.alert_updates("orders", &pipeline(), now);
    let fired: Vec<_> = updates.iter().filter(|u| u.transition).map(|u| u.alert.dedup_key.as_str()).collect();
    assert_eq!(fired, ["loss/orders/consumer"]);
    updates.into_iter().for_each(|u| first.apply_alert(u.alert));
    assert!(first.alert_updates("orders", &pipeline(), now + 1).iter().all(|u| !u.transition), "fires once");

    let mut again = core();
    again.restore_alerts(first.alerts().clone());
    again.load_verdicts("orders", T0, pass.writes());
    let (pass, deltas) = step(&mut again, &rows, now + 5_000);
    assert_eq!(kinds(&pass), [(T0, "known", "loss".to_string())]);
    assert_eq!((pass.writes(), deltas), (Vec::new(), MetricDeltas::default()));
    assert!(again.alert_updates("orders", &pipeline(), now + 5_000).iter().all(|u| !u.transition));
    assert_eq!(again.firing(), 1);
}

#[test]
fn a_revision_to_complete_resolves_the_alert() {
    let mut c = core();
    let mut rows = vec![row(T0, "producer", "p", 0, 100), row(T0, "consumer", "c", 0, 99)];
    step(&mut c, &rows, T0 + 2 * W);
    c.alert_updates("orders", &pipeline(), T0 + 2 * W).into_iter().for_each(|u| c.apply_alert(u.alert));
    rows.push(row(T0, "consumer", "late", 99, 1));
    step(&mut c, &rows, T0 + 2 * W + 1);
    let updates = c.alert_updates("orders", &pipeline(), T0 + 2 * W + 1);
    let transitions: Vec<_> = updates.iter().filter(|u| u.transition).map(|u| u.alert.state).collect();
    assert_eq!(transitions, [AlertState::Resolved]);
}

#[test]
fn state_is_forgotten_past_the_horizon() {
    let mut c = core();
    let rows = [row(T0, "producer", "p", 0, 10)];
    let (pass, _) = step(&mut c, &rows, T0 + 2 * W);
    assert_eq!(pass.decisions[0].verdict().verdict, Verdict::MissingTier { side: crate::compare::Side::Downstream });
    assert_eq!(c.topics["orders"].edge("consumer").map(EdgeRecall::len), Some(1));
    step(&mut c, &rows, T0 + W + GRACE + LATENESS + 1);
    let state = &c.topics["orders"];
    assert!(state.remembered().next().is_none(), "bounded by the horizon");
}

/// Rows of up to 8 buckets, two tiers and two agents, unique per (bucket, tier, agent).
fn rows_strategy() -> impl Strategy<Value = Vec<TallyRow>> {
    prop::collection::vec((0..8i64, 0..2usize, 0..2usize, 1..40u64, 0..3u64), 0..16).prop_map(|specs| {
        let unique: BTreeMap<(i64, usize, usize), (u64, u64)> =
            specs.into_iter().map(|(b, t, a, n, skew)| ((b, t, a), (n, skew))).collect();
        unique
            .into_iter()
            .map(|((b, t, a), (n, skew))| {
                let tier = ["producer", "consumer"][t];
                row(T0 + b * W, tier, ["a", "b"][a], (b as u64) << 32 | (a as u64) << 16 | skew, n)
            })
            .collect()
    })
}

/// Any instant over the buckets' lives, half the time within 1 ms of a bucket's grace or lateness end.
fn now_strategy() -> impl Strategy<Value = EpochMillis> {
    let edge = (0..8i64, prop::bool::ANY, -1..=1i64)
        .prop_map(|(b, late, d)| T0 + b * W + W + GRACE + if late { LATENESS } else { 0 } + d);
    prop_oneof![T0..T0 + 10 * W + GRACE + LATENESS, edge]
}

fn due(bucket: EpochMillis, now: EpochMillis) -> bool {
    bucket + W + GRACE < now && now <= bucket + W + GRACE + LATENESS
}

proptest! {
    /// Invariant: a bucket is judged exactly while `end + grace < now <= end + grace + lateness`:
    /// every bucket with rows in that window gets its verdict, none outside it does.
    #[test]
    fn judged_only_between_grace_and_lateness(rows in rows_strategy(), now in now_strategy()) {
        let pass = core().plan("orders", &pipeline(), &rows, now);
        let judged: BTreeSet<i64> = pass.decisions.iter().map(|d| d.verdict().bucket_start_ms).collect();
        let expected: BTreeSet<i64> =
            rows.iter().map(|r| r.key.bucket_start_ms).filter(|b| due(*b, now)).collect();
        prop_assert_eq!(judged, expected);
        let all_first = pass.decisions.iter().all(|d| matches!(d, Decision::First { .. }));
        prop_assert!(all_first, "a fresh core only reaches first verdicts");
    }

    /// Invariant: feeding the same rows again writes nothing, at the same instant or later (later,
    /// only buckets that were not due before are judged, for the first time).
    #[test]
    fn the_same_rows_twice_write_nothing_new(rows in rows_strategy(), now in now_strategy(), later in 0..3 * W) {
        let mut c = core();
        let (first, _) = step(&mut c, &rows, now);
        prop_assert!(c.plan("orders", &pipeline(), &rows, now).decisions.is_empty());
        let (second, deltas) = step(&mut c, &rows, now + later);
        let judged_before: BTreeSet<i64> = first.decisions.iter().map(|d| d.verdict().bucket_start_ms).collect();
        for d in &second.decisions {
            let is_first = matches!(d, Decision::First { .. });
            prop_assert!(is_first, "{:?}", d);
            prop_assert!(!judged_before.contains(&d.verdict().bucket_start_ms));
        }
        prop_assert_eq!(deltas.revisions, 0);
    }

    /// Invariant: a late row (at least one message) for a due bucket that was judged changes the
    /// merged tally of one tier, so its edge gets exactly one revision, counted once and fed to no
    /// detector; for a bucket never judged it is a first verdict; outside the window, nothing.
    #[test]
    fn a_late_row_yields_exactly_one_revision(
        rows in rows_strategy(), now in now_strategy(), bucket in 0..8i64, tier in 0..2usize, n in 1..10u64,
    ) {
        let mut c = core();
        let (first, _) = step(&mut c, &rows, now);
        let bucket = T0 + bucket * W;
        let mut late = rows.clone();
        late.push(row(bucket, ["producer", "consumer"][tier], "late", 1 << 40, n));
        let (pass, deltas) = step(&mut c, &late, now);
        let judged = first.decisions.iter().any(|d| d.verdict().bucket_start_ms == bucket);
        let expected = match (due(bucket, now), judged) {
            (false, _) => vec![],
            (true, true) => vec![(bucket, "revised")],
            (true, false) => vec![(bucket, "first")],
        };
        let got: Vec<(i64, &str)> = kinds(&pass).into_iter().map(|(b, k, _)| (b, k)).collect();
        prop_assert_eq!(got, expected.clone());
        if expected == [(bucket, "revised")] {
            prop_assert_eq!((deltas.revisions, deltas.buckets_evaluated, deltas.cusum.len()), (1, 0, 0));
        }
        prop_assert!(c.plan("orders", &pipeline(), &late, now).decisions.is_empty());
    }

    /// Invariant: the order rows arrive in changes neither the decisions nor the metric deltas.
    #[test]
    fn row_order_does_not_matter(
        (rows, shuffled) in rows_strategy().prop_flat_map(|r| (Just(r.clone()), Just(r).prop_shuffle())),
        now in now_strategy(),
    ) {
        let (a, b) = (step(&mut core(), &rows, now), step(&mut core(), &shuffled, now));
        prop_assert_eq!(a, b);
    }

    /// Invariant: after a restart (verdicts loaded from the store), the same rows write nothing
    /// and count nothing.
    #[test]
    fn a_restart_counts_nothing_twice(rows in rows_strategy(), now in now_strategy()) {
        let (pass, _) = step(&mut core(), &rows, now);
        let mut again = core();
        again.load_verdicts("orders", T0, pass.writes());
        let (replay, deltas) = step(&mut again, &rows, now);
        prop_assert!(replay.writes().is_empty());
        prop_assert_eq!(deltas, MetricDeltas::default());
    }
}

mod cusum;
mod lag;

#[test]
fn kinds_carry_the_delay_flag() {
    let slow = |tier: &str, n| {
        let mut r = row(T0, tier, "a", 0, n);
        (0..n).for_each(|_| r.tally.latency.record(5_000));
        r
    };
    let (pass, _) = step(&mut core(), &[slow("producer", 10), slow("consumer", 10)], T0 + 2 * W);
    assert_eq!(pass.decisions[0].row().unwrap().kind, VerdictKind::new(Outcome::Complete, true));
}
