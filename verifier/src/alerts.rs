//! Alert lifecycle, pure: from an edge's recent verdicts to the alert each fault kind should have.
//!
//! One alert per (kind, topic, tier) — its dedup key — however many buckets the fault spans. It is
//! *firing* while some bucket within the lateness horizon breaches that kind (by threshold or by
//! a CUSUM alarm) and that bucket is no more than `resolve_after` buckets older than the newest
//! bucket with a final verdict; otherwise it is resolved. So a fault resolves after a few clean
//! buckets, or at once when late tallies revise the faulty buckets to complete. A verdict that is
//! held (pending, indeterminate, unreached) breaches nothing: lag is not loss, and a crash pages
//! no one for duplicates.
//!
//! A resolved alert carries its numbers as they stand (recomputed from the current verdicts of
//! its bucket range) and what resolved it. The `lag` and `tier_down` alerts, about a tier's
//! progress and liveness rather than its verdicts, are decided in [`tier`].

pub mod flood;
pub mod tier;

use std::collections::{BTreeMap, BTreeSet};

use kaudit_alerting::{Alert, AlertKind, AlertNumbers, AlertState, Severity};
use kaudit_schema::Outcome;

use crate::engine::EdgeRecall;
use crate::evaluate::Thresholds;

/// The kinds decided from an edge's verdicts.
pub const VERDICT_KINDS: [AlertKind; 5] =
    [AlertKind::Loss, AlertKind::Duplicates, AlertKind::ContentMismatch, AlertKind::Delay, AlertKind::MissingTier];

pub fn severity(kind: AlertKind) -> Severity {
    match kind {
        AlertKind::Loss | AlertKind::ContentMismatch | AlertKind::MissingTier | AlertKind::TierDown => {
            Severity::Critical
        }
        AlertKind::Duplicates | AlertKind::Delay | AlertKind::Lag | AlertKind::Flood => Severity::Warning,
    }
}

/// Inputs for one edge's alert of one kind.
pub struct EdgeState<'a> {
    pub topic: &'a str,
    pub upstream: &'a str,
    pub tier: &'a str,
    /// The edge's verdicts by bucket, within the horizon.
    pub history: &'a EdgeRecall,
    /// Buckets where the CUSUM alarmed for this kind, with the statistic.
    pub cusum: &'a BTreeMap<i64, f64>,
    pub width_ms: i64,
}

/// The alert this kind should have now, given the previous one; `None` when there is nothing to
/// say (never fired, nothing breaching, nothing final yet). The caller notifies when the state
/// differs from `previous`.
pub fn desired_alert(
    kind: AlertKind,
    edge: &EdgeState<'_>,
    thresholds: &Thresholds,
    resolve_after: u32,
    previous: Option<&Alert>,
    now_ms: i64,
) -> Option<Alert> {
    let newest = edge.history.verdicts().rev().find(|(_, v)| v.is_final()).map(|(b, _)| b)?;
    let breaching = breaching(kind, edge, thresholds);
    let firing = breaching.last().is_some_and(|b| *b >= newest - i64::from(resolve_after) * edge.width_ms);
    match (firing, previous) {
        (false, None) => None,
        (false, Some(p)) if p.state == AlertState::Resolved => Some(p.clone()),
        (false, Some(p)) => Some(resolved(kind, edge, thresholds, &breaching, p, now_ms)),
        (true, previous) => Some(fired(kind, edge, thresholds, &breaching, previous, now_ms)),
    }
}

/// Buckets of the edge's history that breach `kind`, by threshold or CUSUM alarm.
fn breaching(kind: AlertKind, edge: &EdgeState<'_>, thresholds: &Thresholds) -> BTreeSet<i64> {
    let by_threshold = edge.history.verdicts().filter(|(_, v)| v.breaches(kind, thresholds));
    let by_cusum = edge.cusum.keys().filter(|b| edge.history.verdict(**b).is_some_and(|v| !v.is_held()));
    by_threshold.map(|(b, _)| b).chain(by_cusum.copied()).collect()
}

/// The alert firing over `breaching` (not empty), keeping the start of one already firing.
fn fired(
    kind: AlertKind,
    edge: &EdgeState<'_>,
    thresholds: &Thresholds,
    breaching: &BTreeSet<i64>,
    previous: Option<&Alert>,
    now_ms: i64,
) -> Alert {
    let (numbers, detected_by) = numbers(kind, edge, thresholds, breaching.iter().copied());
    let still_firing = previous.filter(|p| p.state == AlertState::Firing);
    Alert {
        dedup_key: Alert::dedup_key(kind, edge.topic, edge.tier),
        kind,
        state: AlertState::Firing,
        severity: severity(kind),
        topic: edge.topic.into(),
        upstream_tier: edge.upstream.into(),
        tier: edge.tier.into(),
        first_bucket_ms: *breaching.first().expect("firing has a breach"),
        last_bucket_ms: *breaching.last().expect("firing has a breach"),
        numbers,
        detected_by,
        starts_at_ms: still_firing.map_or(now_ms, |p| p.starts_at_ms),
        ends_at_ms: None,
        resolution: None,
    }
}

/// `previous` (firing) resolved: its numbers as its bucket range stands now, and why it resolved.
/// When buckets of the range still breach (older than `resolve_after`), they are the numbers and
/// the newer clean buckets the reason; when none does, late rows revised them away.
fn resolved(
    kind: AlertKind,
    edge: &EdgeState<'_>,
    thresholds: &Thresholds,
    breaching: &BTreeSet<i64>,
    previous: &Alert,
    now_ms: i64,
) -> Alert {
    let range: Vec<i64> =
        edge.history.verdicts_in(previous.first_bucket_ms..=previous.last_bucket_ms).map(|(b, _)| b).collect();
    let still: Vec<i64> = range.iter().copied().filter(|b| breaching.contains(b)).collect();
    let mut alert = previous.clone();
    let (buckets, resolution) = if still.is_empty() && !range.is_empty() {
        let why = revision_text(&range, edge);
        (range, why)
    } else {
        let since = breaching.last().copied().unwrap_or(previous.last_bucket_ms);
        let clean = edge.history.verdicts_in(since + 1..).filter(|(_, v)| v.is_final()).count();
        (still, format!("{clean} clean {}", if clean == 1 { "bucket" } else { "buckets" }))
    };
    if !buckets.is_empty() {
        alert.numbers = numbers(kind, edge, thresholds, buckets.into_iter()).0;
    }
    alert.state = AlertState::Resolved;
    alert.ends_at_ms = Some(now_ms);
    alert.resolution = Some(resolution);
    alert
}

/// Why buckets that breached no longer do: what late rows revised them to.
fn revision_text(range: &[i64], edge: &EdgeState<'_>) -> String {
    let outcomes: BTreeSet<Outcome> =
        range.iter().filter_map(|b| edge.history.verdict(*b)).map(|v| v.outcome).collect();
    if outcomes.iter().all(|o| *o == Outcome::Complete) {
        "revised to complete by late tallies".into()
    } else if outcomes.contains(&Outcome::Indeterminate) {
        "revised to indeterminate: an agent instance vanished while it held the buckets open".into()
    } else {
        let names: Vec<&str> = outcomes.iter().map(|o| o.as_str()).collect();
        format!("revised below the threshold by late tallies ({})", names.join(", "))
    }
}

/// The numbers over `buckets` of the edge's history, and what detected them.
fn numbers(
    kind: AlertKind,
    edge: &EdgeState<'_>,
    thresholds: &Thresholds,
    buckets: impl Iterator<Item = i64>,
) -> (AlertNumbers, Vec<String>) {
    let mut numbers = AlertNumbers::default();
    let mut detected_by = BTreeSet::new();
    for b in buckets {
        let Some(v) = edge.history.verdict(b) else { continue };
        numbers.upstream_count += v.upstream_count;
        numbers.count += v.count;
        numbers.missing += v.missing();
        numbers.extra += v.extra();
        if let Some((named, total)) = v.named() {
            let room = kaudit_alerting::NAMED_IN_ALERT.saturating_sub(numbers.named.len());
            numbers.named.extend(named.iter().take(room).cloned());
            numbers.named_total += total;
        }
        numbers.p99_ms = numbers.p99_ms.max(v.p99_ms());
        if let (Some(fp), false) = (v.lost_fingerprint(), v.is_held()) {
            numbers.lost_fingerprints.push(format!("{fp:016x}"));
        }
        if v.breaches(kind, thresholds) {
            detected_by.insert("threshold");
        }
        if let Some(s) = edge.cusum.get(&b) {
            detected_by.insert("cusum");
            numbers.cusum_statistic = Some(numbers.cusum_statistic.unwrap_or(0.0).max(*s));
        }
    }
    if numbers.upstream_count > 0 {
        numbers.loss_ratio = numbers.missing as f64 / numbers.upstream_count as f64;
        numbers.duplicate_ratio = numbers.extra as f64 / numbers.upstream_count as f64;
    }
    (numbers, detected_by.into_iter().map(String::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Verdict;
    use crate::evaluate::EdgeVerdict;

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
            latency: None,
            delayed: false,
            hold: None,
            named: None,
        }
    }

    fn state<'a>(history: &'a EdgeRecall, cusum: &'a BTreeMap<i64, f64>) -> EdgeState<'a> {
        EdgeState { topic: "t", upstream: "p", tier: "c", history, cusum, width_ms: W }
    }

    /// What the core remembers of `verdicts`.
    fn recall(verdicts: &BTreeMap<i64, EdgeVerdict>) -> EdgeRecall {
        EdgeRecall::from_verdicts(verdicts.values())
    }

    #[test]
    fn fires_on_a_breach_then_resolves_after_clean_buckets() {
        let t = Thresholds::default();
        let none = BTreeMap::new();
        let mut h: BTreeMap<i64, EdgeVerdict> = (0..3).map(|i| (i * W, v(i * W, 1000, 1000))).collect();
        assert_eq!(desired_alert(AlertKind::Loss, &state(&recall(&h), &none), &t, 3, None, 1), None);
        h.insert(3 * W, v(3 * W, 1000, 990));
        let fired = desired_alert(AlertKind::Loss, &state(&recall(&h), &none), &t, 3, None, 10).unwrap();
        assert_eq!((fired.state, fired.numbers.missing, fired.first_bucket_ms), (AlertState::Firing, 10, 3 * W));
        assert_eq!(fired.dedup_key, "loss/t/c");
        for i in 4..=6 {
            h.insert(i * W, v(i * W, 1000, 1000));
            let still = desired_alert(AlertKind::Loss, &state(&recall(&h), &none), &t, 3, Some(&fired), 20).unwrap();
            assert_eq!(still.state, AlertState::Firing, "bucket {i}");
            assert_eq!(still.starts_at_ms, 10, "the start is kept");
        }
        h.insert(7 * W, v(7 * W, 1000, 1000));
        let resolved = desired_alert(AlertKind::Loss, &state(&recall(&h), &none), &t, 3, Some(&fired), 30).unwrap();
        assert_eq!((resolved.state, resolved.ends_at_ms), (AlertState::Resolved, Some(30)));
        assert_eq!(resolved.resolution.as_deref(), Some("4 clean buckets"));
        assert_eq!(resolved.numbers.missing, 10, "the loss stands: its numbers stay");
    }

    #[test]
    fn a_revision_to_complete_resolves_at_once_and_cusum_alone_fires() {
        let t = Thresholds::default();
        let none = BTreeMap::new();
        let mut h: BTreeMap<i64, EdgeVerdict> = BTreeMap::new();
        h.insert(0, v(0, 1000, 990));
        let fired = desired_alert(AlertKind::Loss, &state(&recall(&h), &none), &t, 3, None, 1).unwrap();
        h.insert(0, v(0, 1000, 1000)); // late tallies arrived
        let resolved = desired_alert(AlertKind::Loss, &state(&recall(&h), &none), &t, 3, Some(&fired), 2).unwrap();
        assert_eq!(resolved.state, AlertState::Resolved);
        assert_eq!(resolved.resolution.as_deref(), Some("revised to complete by late tallies"));
        assert_eq!((resolved.numbers.missing, resolved.numbers.count), (0, 1000), "the final numbers");
        assert!(resolved.summary().contains(": 0 messages lost (0.0000 %); resolved: revised to complete"));

        let small: BTreeMap<i64, EdgeVerdict> = [(0, v(0, 100_000, 99_999))].into();
        assert_eq!(
            desired_alert(AlertKind::Loss, &state(&recall(&small), &none), &t, 3, None, 1),
            None,
            "below threshold"
        );
        let cusum: BTreeMap<i64, f64> = [(0, 5.5)].into();
        let by_cusum = desired_alert(AlertKind::Loss, &state(&recall(&small), &cusum), &t, 3, None, 1).unwrap();
        assert_eq!(by_cusum.detected_by, ["cusum"]);
        assert_eq!(by_cusum.numbers.cusum_statistic, Some(5.5));
    }

    #[test]
    fn held_verdicts_breach_nothing_and_do_not_count_as_newer_buckets() {
        let t = Thresholds::default();
        let none = BTreeMap::new();
        let held = |bucket: i64, hold: crate::hold::Hold| EdgeVerdict { hold: Some(hold), ..v(bucket, 1000, 0) };
        let pending = || crate::hold::Hold::Pending { behind_tier: "c".into(), lag_ms: 5 };
        let mut h: BTreeMap<i64, EdgeVerdict> = [(0, held(0, pending()))].into();
        assert_eq!(desired_alert(AlertKind::Loss, &state(&recall(&h), &none), &t, 3, None, 1), None, "lag is not loss");
        assert_eq!(desired_alert(AlertKind::MissingTier, &state(&recall(&h), &none), &t, 3, None, 1), None);
        let vanished = crate::hold::Hold::Indeterminate { vanished: vec![] };
        h.insert(0, EdgeVerdict { verdict: Verdict::Duplicates { extra: 5 }, ..held(0, vanished) });
        assert_eq!(desired_alert(AlertKind::Duplicates, &state(&recall(&h), &none), &t, 3, None, 1), None);

        h.insert(0, v(0, 1000, 990));
        let fired = desired_alert(AlertKind::Loss, &state(&recall(&h), &none), &t, 1, None, 1).unwrap();
        (1..=5).for_each(|i| {
            h.insert(i * W, held(i * W, pending()));
        });
        let still = desired_alert(AlertKind::Loss, &state(&recall(&h), &none), &t, 1, Some(&fired), 2).unwrap();
        assert_eq!(still.state, AlertState::Firing, "pending buckets are not clean ones");
    }
}
