//! Alert lifecycle, pure: from an edge's recent verdicts to the alert each fault kind should have.
//!
//! One alert per (kind, topic, tier) — its dedup key — however many buckets the fault spans. It is
//! *firing* while some bucket within the lateness horizon breaches that kind (by threshold or by
//! a CUSUM alarm) and that bucket is no more than `resolve_after` buckets older than the newest
//! evaluated bucket; otherwise it is resolved. So a fault resolves after a few clean buckets, or
//! at once when late tallies revise the faulty buckets to complete.

use std::collections::{BTreeMap, BTreeSet};

use kaudit_alerting::{Alert, AlertKind, AlertNumbers, AlertState, Severity};

use crate::compare::Verdict;
use crate::evaluate::{EdgeVerdict, Thresholds};

/// Which alert kinds one bucket's verdict breaches by the absolute thresholds.
pub fn threshold_breaches(v: &EdgeVerdict, t: &Thresholds) -> Vec<AlertKind> {
    let mut kinds = Vec::new();
    if v.loss_ratio > t.loss_ratio {
        kinds.push(AlertKind::Loss);
    }
    if v.duplicate_ratio > t.duplicate_ratio {
        kinds.push(AlertKind::Duplicates);
    }
    match v.verdict {
        Verdict::ContentMismatch => kinds.push(AlertKind::ContentMismatch),
        Verdict::MissingTier { .. } => kinds.push(AlertKind::MissingTier),
        _ => {}
    }
    if v.delayed {
        kinds.push(AlertKind::Delay);
    }
    kinds
}

pub const ALL_KINDS: [AlertKind; 5] =
    [AlertKind::Loss, AlertKind::Duplicates, AlertKind::ContentMismatch, AlertKind::Delay, AlertKind::MissingTier];

fn severity(kind: AlertKind) -> Severity {
    match kind {
        AlertKind::Loss | AlertKind::ContentMismatch | AlertKind::MissingTier => Severity::Critical,
        AlertKind::Duplicates | AlertKind::Delay => Severity::Warning,
    }
}

/// Inputs for one edge's alert of one kind.
pub struct EdgeState<'a> {
    pub topic: &'a str,
    pub upstream: &'a str,
    pub tier: &'a str,
    /// The edge's verdicts by bucket, within the horizon.
    pub history: &'a BTreeMap<i64, EdgeVerdict>,
    /// Buckets where the CUSUM alarmed for this kind, with the statistic.
    pub cusum: &'a BTreeMap<i64, f64>,
    pub width_ms: i64,
}

/// The alert this kind should have now, given the previous one; `None` when there is nothing to
/// say (never fired, nothing breaching). The caller notifies when the state differs from `previous`.
pub fn desired_alert(
    kind: AlertKind,
    edge: &EdgeState<'_>,
    thresholds: &Thresholds,
    resolve_after: u32,
    previous: Option<&Alert>,
    now_ms: i64,
) -> Option<Alert> {
    let newest = *edge.history.keys().next_back()?;
    let breaching: BTreeSet<i64> = edge
        .history
        .iter()
        .filter(|(_, v)| threshold_breaches(v, thresholds).contains(&kind))
        .map(|(b, _)| *b)
        .chain(edge.cusum.keys().copied().filter(|b| edge.history.contains_key(b)))
        .collect();
    let last_breach = breaching.iter().next_back().copied();
    let firing = last_breach.is_some_and(|b| b >= newest - i64::from(resolve_after) * edge.width_ms);
    match (firing, previous) {
        (false, None) => None,
        (false, Some(p)) if p.state == AlertState::Resolved => Some(p.clone()),
        (false, Some(p)) => {
            let mut resolved = p.clone();
            resolved.state = AlertState::Resolved;
            resolved.ends_at_ms = Some(now_ms);
            Some(resolved)
        }
        (true, previous) => {
            let mut numbers = AlertNumbers::default();
            let mut detected_by = BTreeSet::new();
            for b in &breaching {
                let v = &edge.history[b];
                numbers.upstream_count += v.upstream_count;
                numbers.count += v.count;
                numbers.missing += v.upstream_count.saturating_sub(v.count);
                numbers.extra += v.count.saturating_sub(v.upstream_count);
                numbers.p99_ms = numbers.p99_ms.max(v.p99_ms);
                if let Verdict::Loss { fingerprint: Some(fp), .. } = v.verdict {
                    numbers.lost_fingerprints.push(format!("{fp:016x}"));
                }
                if threshold_breaches(v, thresholds).contains(&kind) {
                    detected_by.insert("threshold");
                }
                if let Some(s) = edge.cusum.get(b) {
                    detected_by.insert("cusum");
                    numbers.cusum_statistic = Some(numbers.cusum_statistic.unwrap_or(0.0).max(*s));
                }
            }
            if numbers.upstream_count > 0 {
                numbers.loss_ratio = numbers.missing as f64 / numbers.upstream_count as f64;
                numbers.duplicate_ratio = numbers.extra as f64 / numbers.upstream_count as f64;
            }
            let still_firing = previous.filter(|p| p.state == AlertState::Firing);
            Some(Alert {
                dedup_key: Alert::dedup_key(kind, edge.topic, edge.tier),
                kind,
                state: AlertState::Firing,
                severity: severity(kind),
                topic: edge.topic.into(),
                upstream_tier: edge.upstream.into(),
                tier: edge.tier.into(),
                first_bucket_ms: *breaching.iter().next().expect("firing has a breach"),
                last_bucket_ms: last_breach.expect("firing has a breach"),
                numbers,
                detected_by: detected_by.into_iter().map(String::from).collect(),
                starts_at_ms: still_firing.map_or(now_ms, |p| p.starts_at_ms),
                ends_at_ms: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: i64 = 60_000;

    fn v(bucket: i64, up: u64, down: u64) -> EdgeVerdict {
        let verdict = crate::compare::Verdict::Loss { missing: up.saturating_sub(down), fingerprint: None };
        EdgeVerdict {
            topic: "t".into(),
            bucket_start_ms: bucket,
            upstream: "p".into(),
            tier: "c".into(),
            verdict: if up == down { Verdict::Complete } else { verdict },
            upstream_count: up,
            count: down,
            loss_ratio: up.saturating_sub(down) as f64 / up as f64,
            duplicate_ratio: 0.0,
            p99_ms: Some(5),
            delayed: false,
        }
    }

    fn state<'a>(history: &'a BTreeMap<i64, EdgeVerdict>, cusum: &'a BTreeMap<i64, f64>) -> EdgeState<'a> {
        EdgeState { topic: "t", upstream: "p", tier: "c", history, cusum, width_ms: W }
    }

    #[test]
    fn fires_on_a_breach_then_resolves_after_clean_buckets() {
        let t = Thresholds::default();
        let none = BTreeMap::new();
        let mut h: BTreeMap<i64, EdgeVerdict> = (0..3).map(|i| (i * W, v(i * W, 1000, 1000))).collect();
        assert_eq!(desired_alert(AlertKind::Loss, &state(&h, &none), &t, 3, None, 1), None);
        h.insert(3 * W, v(3 * W, 1000, 990));
        let fired = desired_alert(AlertKind::Loss, &state(&h, &none), &t, 3, None, 10).unwrap();
        assert_eq!((fired.state, fired.numbers.missing, fired.first_bucket_ms), (AlertState::Firing, 10, 3 * W));
        assert_eq!(fired.dedup_key, "loss/t/c");
        for i in 4..=6 {
            h.insert(i * W, v(i * W, 1000, 1000));
            let still = desired_alert(AlertKind::Loss, &state(&h, &none), &t, 3, Some(&fired), 20).unwrap();
            assert_eq!(still.state, AlertState::Firing, "bucket {i}");
            assert_eq!(still.starts_at_ms, 10, "the start is kept");
        }
        h.insert(7 * W, v(7 * W, 1000, 1000));
        let resolved = desired_alert(AlertKind::Loss, &state(&h, &none), &t, 3, Some(&fired), 30).unwrap();
        assert_eq!((resolved.state, resolved.ends_at_ms), (AlertState::Resolved, Some(30)));
    }

    #[test]
    fn a_revision_to_complete_resolves_at_once_and_cusum_alone_fires() {
        let t = Thresholds::default();
        let none = BTreeMap::new();
        let mut h: BTreeMap<i64, EdgeVerdict> = BTreeMap::new();
        h.insert(0, v(0, 1000, 990));
        let fired = desired_alert(AlertKind::Loss, &state(&h, &none), &t, 3, None, 1).unwrap();
        h.insert(0, v(0, 1000, 1000)); // late tallies arrived
        assert_eq!(
            desired_alert(AlertKind::Loss, &state(&h, &none), &t, 3, Some(&fired), 2).unwrap().state,
            AlertState::Resolved
        );

        let small: BTreeMap<i64, EdgeVerdict> = [(0, v(0, 100_000, 99_999))].into();
        assert_eq!(desired_alert(AlertKind::Loss, &state(&small, &none), &t, 3, None, 1), None, "below threshold");
        let cusum: BTreeMap<i64, f64> = [(0, 5.5)].into();
        let by_cusum = desired_alert(AlertKind::Loss, &state(&small, &cusum), &t, 3, None, 1).unwrap();
        assert_eq!(by_cusum.detected_by, ["cusum"]);
        assert_eq!(by_cusum.numbers.cusum_statistic, Some(5.5));
    }
}
