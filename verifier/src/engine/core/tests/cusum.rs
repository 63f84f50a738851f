//! CUSUM state at rest: what the core asks the driver to store, and a core restarted from it.

use kaudit_alerting::AlertKind;
use kaudit_schema::CusumStateRow;

use super::*;

/// Buckets in a run; the restart comes after `RESTART`, the shift from `SHIFT` on.
const BUCKETS: i64 = 60;
const RESTART: i64 = 30;
const SHIFT: i64 = 40;

/// A small baseline so the detectors alarm within the run, and a ratio floor below its noise.
fn cusum_core() -> EngineCore {
    let config = VerifierConfig {
        lateness_ms: LATENESS as u64,
        baseline_window: 16,
        baseline_min_samples: 8,
        sigma_floor_ratio: 1e-6,
        ..VerifierConfig::default()
    };
    EngineCore::new(config, GRACE as u64, AGENT_TIMEOUT as u64)
}

/// Bucket `b`'s rows: 1000 produced, 0 to 4 lost (scattered), 3 more from `SHIFT` on.
fn bucket_rows(b: i64) -> [TallyRow; 2] {
    let noise = ((b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) % 5;
    let lost = noise + if b >= SHIFT { 3 } else { 0 };
    let start = T0 + b * W;
    [row(start, "producer", "p", 0, 1000), row(start, "consumer", "c", 0, 1000 - lost)]
}

/// The pass that first judges bucket `b`, with the rows of every bucket still due then.
fn pass_of(c: &mut EngineCore, b: i64) -> (TopicPass, MetricDeltas) {
    let rows: Vec<TallyRow> = (b.saturating_sub(2).max(0)..=b).flat_map(bucket_rows).collect();
    step(c, &rows, T0 + (b + 1) * W + GRACE + 1)
}

/// A store as the driver sees it: verdicts, and per detector the state of the latest bucket.
#[derive(Default)]
struct Stored {
    verdicts: Vec<VerdictRow>,
    states: BTreeMap<(String, String), CusumStateRow>,
}

impl Stored {
    /// One pass, then its writes, as the driver makes them.
    fn pass(&mut self, c: &mut EngineCore, b: i64) -> Vec<CusumReading> {
        let (pass, deltas) = pass_of(c, b);
        self.verdicts.extend(pass.writes());
        let rows = c.cusum_states_to_save("orders", pass.now);
        for r in &rows {
            let key = (r.tier.clone(), r.signal.clone());
            if self.states.get(&key).is_none_or(|s| s.last_bucket_ms <= r.last_bucket_ms) {
                self.states.insert(key, r.clone());
            }
        }
        c.cusum_states_saved("orders", &rows);
        deltas.cusum
    }

    /// A core started on this store, the stored detector states taken up or not.
    fn restart(&self, with_states: bool) -> EngineCore {
        let mut c = cusum_core();
        c.load_verdicts("orders", T0, self.verdicts.clone());
        assert!(c.cusum_states_to_load("orders"));
        if with_states {
            let skipped = c.load_cusum_states("orders", self.states.values().cloned().collect());
            assert_eq!(skipped, Vec::<String>::new());
            assert!(!c.cusum_states_to_load("orders"), "once per run");
        }
        c
    }
}

/// The loss-ratio readings of buckets `from..BUCKETS`.
fn loss_readings(readings: Vec<CusumReading>, from: i64) -> Vec<CusumReading> {
    readings.into_iter().filter(|r| r.signal == "loss_ratio" && r.bucket_start_ms >= T0 + from * W).collect()
}

/// Invariant: a core restarted from the stored verdicts and detector states observes every later
/// bucket with exactly the statistic (and alarms) of a core that never stopped; without the states
/// it does not.
#[test]
fn a_restored_detector_continues_exactly_as_one_never_stopped() {
    let mut straight = cusum_core();
    let mut store = Stored::default();
    let mut through = Vec::new();
    for b in 0..BUCKETS {
        through.extend(store.pass(&mut straight, b));
    }
    let through = loss_readings(through, RESTART);
    assert!(through.iter().any(|r| r.alarm && r.bucket_start_ms >= T0 + SHIFT * W), "the shift alarms");
    assert!(through.iter().all(|r| !r.alarm || r.bucket_start_ms >= T0 + SHIFT * W), "no false alarm");
    assert!(through.iter().filter(|r| r.bucket_start_ms < T0 + SHIFT * W).any(|r| r.statistic > 0.0));

    let run = |with_states: bool| {
        let mut first = cusum_core();
        let mut store = Stored::default();
        (0..RESTART).for_each(|b| _ = store.pass(&mut first, b));
        let mut again = store.restart(with_states);
        let mut readings = Vec::new();
        for b in RESTART..BUCKETS {
            readings.extend(store.pass(&mut again, b));
        }
        loss_readings(readings, RESTART)
    };
    assert_eq!(run(true), through, "same z, statistic and alarms, bit for bit");
    assert_ne!(run(false), through, "the test can tell: learned again, the detector differs");
}

/// What the driver is asked to store: the detectors a committed pass fed, until it reports them
/// stored; a failed write is asked for again, with the newer state.
#[test]
fn fed_detectors_are_saved_until_the_driver_stores_them() {
    let mut c = cusum_core();
    assert!(c.cusum_states_to_save("orders", T0).is_empty());
    let (pass, _) = pass_of(&mut c, 0);
    let rows = c.cusum_states_to_save("orders", pass.now);
    let keys: Vec<(&str, &str, i64)> =
        rows.iter().map(|r| (r.tier.as_str(), r.signal.as_str(), r.last_bucket_ms)).collect();
    assert_eq!(
        keys,
        [("consumer", "duplicate_ratio", T0), ("consumer", "loss_ratio", T0), ("consumer", "p99_delay_ms", T0)]
    );
    assert!(rows.iter().all(|r| r.format == crate::cusum::DETECTOR_FORMAT && r.updated_ms == pass.now));
    // The write failed: the next pass asks again, for the newer bucket.
    let (pass, _) = pass_of(&mut c, 1);
    let rows = c.cusum_states_to_save("orders", pass.now);
    assert!(rows.len() == 3 && rows.iter().all(|r| r.last_bucket_ms == T0 + W));
    c.cusum_states_saved("orders", &rows);
    assert!(c.cusum_states_to_save("orders", pass.now).is_empty());
    // A pass that feeds nothing (the same rows again) leaves nothing to store.
    let now = pass.now + 1;
    step(&mut c, &[bucket_rows(0), bucket_rows(1)].concat(), now);
    assert!(c.cusum_states_to_save("orders", now).is_empty());
}

/// A state the core cannot continue is left out with the reason, and its detector learns again;
/// its alarms still count.
#[test]
fn unreadable_or_reconfigured_states_are_learned_again() {
    let mut c = cusum_core();
    pass_of(&mut c, 0);
    let mut rows = c.cusum_states_to_save("orders", T0);
    rows[0].format = 99;
    rows[1].hits = vec![(T0, 5.0)];
    rows[1].state = crate::cusum::Detector::new(32, 8, 1e-6).to_bytes();
    rows[2].signal = "p42".into();
    let mut again = cusum_core();
    let skipped = again.load_cusum_states("orders", rows);
    assert_eq!(
        skipped,
        [
            "consumer/duplicate_ratio: unknown detector format 99",
            "consumer/loss_ratio: baseline settings changed",
            "consumer/p42: unknown signal"
        ]
    );
    let state = &again.topics["orders"];
    assert!(state.detectors.is_empty());
    assert_eq!(state.cusum_hits[&("consumer".to_string(), AlertKind::Loss)], BTreeMap::from([(T0, 5.0)]));
}

/// A detector learned again (its stored state left out) stores over the state it replaces, even
/// after observing a bucket older than that state (one pending when the last run stopped).
#[test]
fn a_detector_learned_again_replaces_the_state_left_out() {
    let mut c = cusum_core();
    pass_of(&mut c, 0);
    let later = T0 + 5 * W;
    let mut rows = c.cusum_states_to_save("orders", T0);
    for r in &mut rows {
        r.last_bucket_ms = later;
        r.state = crate::cusum::Detector::new(32, 8, 1e-6).to_bytes();
    }
    let mut again = cusum_core();
    assert_eq!(again.load_cusum_states("orders", rows).len(), 3, "other settings: all learned again");
    pass_of(&mut again, 0);
    let saved = again.cusum_states_to_save("orders", T0 + W);
    assert_eq!(saved.len(), 3);
    assert!(saved.iter().all(|r| r.last_bucket_ms == later), "not older than the rows they replace");
}
