//! An ARL-style run of the CUSUM across verifier restarts: the same long sequence of buckets, a
//! stable baseline and then a small sustained loss, fed to one engine straight through and to
//! engines restarted on the same store. With the detector states stored, a restart changes
//! nothing: the same statistic every bucket, the alarm at the same bucket, and the CUSUM-only
//! alert firing on across a restart. Without them (the states deleted before a restart, as before
//! they were stored) the baseline is learned again and the run differs.

use kaudit_alerting::Alert;

use super::*;
use crate::evaluate::Thresholds;

/// Baseline buckets, then buckets with the shift; the first restart is mid-baseline, before the
/// detector has its 64 samples, so a detector learned again cannot alarm until well after the shift.
const BASELINE: i64 = 100;
const SHIFTED: i64 = 30;
const MID_BASELINE: i64 = 50;

/// Loss only the CUSUM can see: far under the loss-ratio threshold, and a ratio floor below the
/// noise so the baseline's own spread sets sigma.
fn cusum_config() -> VerifierConfig {
    VerifierConfig {
        thresholds: Thresholds { loss_ratio: 0.5, ..Thresholds::default() },
        sigma_floor_ratio: 1e-6,
        ..config()
    }
}

fn cusum_engine(r: &Rig) -> Engine {
    engine_with(r, cusum_config(), &prometheus::Registry::new())
}

/// Messages lost in bucket `i` of 1000: 0 to 4, scattered; 2 more once the shift starts (about
/// 1.3 sigma of the baseline's noise).
fn lost(i: i64) -> u64 {
    let noise = ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) % 5;
    noise + if i >= BASELINE { 2 } else { 0 }
}

/// What one pass showed: the loss-ratio CUSUM statistic, and the loss alert (state, first bucket).
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    bucket: i64,
    statistic: f64,
    notifications: usize,
    alert: Option<(AlertState, i64)>,
}

/// A restart before bucket `before`, the stored detector states kept or deleted.
#[derive(Clone, Copy)]
struct Restart {
    before: i64,
    keep_states: bool,
}

/// Run the whole sequence, one pass per bucket at its first evaluation, restarting as asked.
async fn run(restarts: &[Restart]) -> Vec<Seen> {
    let r = rig();
    let mut e = cusum_engine(&r);
    let mut seen = Vec::new();
    for i in 0..BASELINE + SHIFTED {
        if let Some(restart) = restarts.iter().find(|s| s.before == i) {
            drop(e);
            if !restart.keep_states {
                let conn = rusqlite::Connection::open(r._dir.path().join("v.db")).unwrap();
                assert!(conn.execute("DELETE FROM cusum_states", []).unwrap() > 0, "states were stored");
            }
            e = cusum_engine(&r);
        }
        let bucket = T0 + i * W;
        tally(&r.store, bucket, "producer", "p", 1_000, 1).await;
        tally(&r.store, bucket, "consumer", "c", 1_000 - lost(i), 1).await;
        r.clock.set(bucket + W + 40_001);
        let report = e.tick().await.unwrap();
        assert_eq!(report.first_evaluations, 1, "bucket {i}");
        let statistic = e.metrics.topics.cusum("orders", "consumer", "loss_ratio").unwrap();
        let alert = e.alerts().get("loss/orders/consumer").map(|a: &Alert| (a.state, a.first_bucket_ms));
        seen.push(Seen { bucket: i, statistic, notifications: report.notifications, alert });
    }
    seen
}

/// The bucket (index) of the first alarm: where the loss alert first fires.
fn alarm(seen: &[Seen]) -> Option<i64> {
    seen.iter().find(|s| s.alert.is_some_and(|(state, _)| state == AlertState::Firing)).map(|s| s.bucket)
}

#[tokio::test]
async fn a_restarted_verifier_keeps_its_cusum_baselines_and_alarms_at_the_same_bucket() {
    let straight = run(&[]).await;
    let at = alarm(&straight).expect("the shift alarms");
    assert!((BASELINE..BASELINE + 10).contains(&at), "no false alarm, and the small shift is caught soon: {at}");
    assert!(straight[MID_BASELINE as usize..BASELINE as usize].iter().any(|s| s.statistic > 0.0));
    let fired = &straight[at as usize];
    assert_eq!((fired.notifications, fired.alert.unwrap().1), (1, T0 + at * W), "CUSUM alone fires it");
    assert_eq!(straight[at as usize + 1].alert.unwrap().0, AlertState::Firing);

    // Restarted mid-baseline and again right after the alarm: the same run, bit for bit.
    let keep = |before| Restart { before, keep_states: true };
    let restarted = run(&[keep(MID_BASELINE), keep(at + 1)]).await;
    assert_eq!(restarted, straight);
    let after = &restarted[at as usize + 1];
    assert_eq!((after.notifications, after.alert.unwrap().0), (0, AlertState::Firing), "firing on, not resolved");

    // The test can fail: without the stored states the baseline is learned again from the
    // restart, so the alarm comes later (or not at all), and a CUSUM-only alert resolves.
    let forget = |before| Restart { before, keep_states: false };
    let relearned = run(&[forget(MID_BASELINE)]).await;
    assert_ne!(alarm(&relearned), Some(at), "{:?}", alarm(&relearned));
    let forgotten = run(&[forget(at + 1)]).await;
    let after = &forgotten[at as usize + 1];
    assert_eq!((after.notifications, after.alert.unwrap().0), (1, AlertState::Resolved));
}

/// The metrics export exactly the signals the detectors watch.
#[test]
fn the_exported_cusum_signals_are_the_watched_ones() {
    assert_eq!(super::core::SIGNALS.map(|(signal, _)| signal), crate::metrics::CUSUM_SIGNALS);
}
