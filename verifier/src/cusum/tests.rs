use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// Standard normal by Box–Muller.
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Mean number of observations until the first alarm, over `runs` runs, input N(shift, 1).
fn average_run_length(h: f64, shift: f64, runs: usize, seed: u64) -> f64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let p = CusumParams { k: 0.5, h };
    let mut total = 0u64;
    for _ in 0..runs {
        let mut c = Cusum::default();
        let mut n = 0u64;
        loop {
            n += 1;
            if c.step(normal(&mut rng) + shift, p).is_some() {
                break;
            }
        }
        total += n;
    }
    total as f64 / runs as f64
}

#[test]
fn in_control_run_lengths_match_montgomery() {
    // Two-sided tabular CUSUM, k = 0.5: ARL0 = 168 at h = 4 and 465 at h = 5. 4000 runs give a
    // standard error near 1.6 %; the tolerance is 10 %.
    for (h, published) in [(4.0, 168.0), (5.0, 465.0)] {
        let arl = average_run_length(h, 0.0, 4000, 7);
        assert!((arl - published).abs() / published < 0.10, "h={h}: ARL0 {arl:.1}, published {published}");
    }
}

#[test]
fn a_one_sigma_shift_is_caught_in_about_ten_buckets() {
    // Montgomery: ARL1 = 10.4 for a 1-sigma shift at k = 0.5, h = 5.
    let arl = average_run_length(5.0, 1.0, 4000, 11);
    assert!((arl - 10.4).abs() < 1.0, "ARL1 {arl:.2}");
    let down = average_run_length(5.0, -1.0, 4000, 13);
    assert!((down - 10.4).abs() < 1.0, "downward ARL1 {down:.2}");
}

#[test]
fn alarms_reset_the_statistics() {
    let mut c = Cusum::default();
    let p = CusumParams::default();
    assert_eq!(c.step(3.0, p), None);
    assert_eq!(c.step(3.0, p), None);
    assert_eq!(c.step(3.0, p), Some(Shift::Up));
    assert_eq!(c, Cusum::default());
    assert_eq!(c.step(-6.0, p), Some(Shift::Down));
}

#[test]
fn detector_with_an_estimated_baseline_stays_near_the_nominal_false_alarm_rate() {
    // With the baseline estimated from 256 samples instead of known, ARL0 measures about 300
    // buckets (465 with a known baseline); 50,000 buckets at the nominal rate would give ~107.
    let p = CusumParams::default();
    let mut rng = StdRng::seed_from_u64(5);
    let mut d = Detector::new(256, 64, 1e-9);
    let (mut alarms, n) = (0, 50_000);
    for _ in 0..n {
        alarms += usize::from(d.observe(100.0 + 10.0 * normal(&mut rng), p).alarm.is_some());
    }
    let arl = n as f64 / alarms.max(1) as f64;
    assert!(arl > 220.0, "in-control ARL {arl:.0}");
}

#[test]
fn detector_catches_a_shift_without_absorbing_it() {
    let p = CusumParams::default();
    let mut rng = StdRng::seed_from_u64(3);
    let mut d = Detector::new(256, 64, 1e-9);
    for _ in 0..300 {
        d.observe(100.0 + 10.0 * normal(&mut rng), p);
    }
    // A one-sigma upward shift, repeated over 200 trials from the same learned baseline.
    let mut delays = Vec::new();
    for _ in 0..200 {
        let mut trial = d.clone();
        let n = (1..=100).find(|_| trial.observe(110.0 + 10.0 * normal(&mut rng), p).alarm == Some(Shift::Up));
        delays.push(n.expect("shift detected within 100 buckets") as f64);
    }
    let mean = delays.iter().sum::<f64>() / delays.len() as f64;
    assert!((6.0..=15.0).contains(&mean), "mean detection delay {mean:.1} buckets (Montgomery: 10.4)");
}

#[test]
fn sigma_floor_keeps_a_clean_signal_finite() {
    let p = CusumParams::default();
    let mut d = Detector::new(32, 8, 1e-4);
    for _ in 0..20 {
        assert_eq!(d.observe(0.0, p).alarm, None);
    }
    let step = d.observe(1e-4, p); // one loss in 10,000 after a clean history
    assert!((step.z - 1.0).abs() < 1e-9, "z = {}", step.z);
    let step = d.observe(1e-2, p);
    assert_eq!(step.alarm, Some(Shift::Up), "a big jump alarms at once");
}
