//! Whether the verifier found exactly what the demo injected: every bucket on each of the three
//! edges, the stored verdict beside the ledger's truth, and the table that shows both. Pure logic.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kaudit_schema::{EpochMillis, Outcome, VerdictRow};

use super::faults::{ANALYTICS, BILLING, BROKER, BucketFaults, FaultPlan, Ledger};

/// One edge of one bucket: what was injected beside what the verifier concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeCheck {
    pub bucket_start_ms: EpochMillis,
    pub tier: &'static str,
    pub injected: String,
    pub detected: String,
    pub matches: bool,
}

fn describe(row: &VerdictRow) -> String {
    let mut text = match row.kind.outcome {
        Outcome::Loss => format!("lost {}", row.upstream_count.saturating_sub(row.count)),
        Outcome::Duplicates => format!("dup {}", row.count.saturating_sub(row.upstream_count)),
        other => other.as_str().replace('_', " "),
    };
    if row.kind.delayed {
        let _ = write!(text, ", p99 {} ms", row.p99_ms.unwrap_or(0));
    }
    text
}

/// Compare every bucket of the ledger, on each of the three edges, with the stored verdicts.
///
/// A bucket matches when: the broker's verdict is `loss` of exactly the lost count (naming the
/// fingerprint when one message was lost) or `complete` when none was, or `indeterminate` inside
/// the crash window of `--crash-producer`; billing's is `duplicates` of exactly the duplicated
/// count; analytics' is `complete`; analytics is flagged late exactly in the buckets whose
/// messages were delayed past the threshold, billing exactly where its pause made it so (either
/// way where it was too close to call), the broker never. Upstream counts must equal what was
/// produced (and, downstream of the broker, produced minus lost). A verdict still `pending` at
/// the end matches nothing.
pub fn check(ledger: &Ledger, verdicts: &[VerdictRow], plan: &FaultPlan, delay_threshold_ms: u64) -> Vec<EdgeCheck> {
    let by_key: BTreeMap<(EpochMillis, &str), &VerdictRow> =
        verdicts.iter().map(|v| ((v.bucket_start_ms, v.tier.as_str()), v)).collect();
    let mut out = Vec::new();
    for (&bucket, faults) in ledger.buckets() {
        for tier in [BROKER, BILLING, ANALYTICS] {
            let (detected, matches) = match by_key.get(&(bucket, tier)) {
                Some(row) => (describe(row), edge_matches(tier, faults, row, plan, delay_threshold_ms)),
                None => ("not evaluated".to_string(), false),
            };
            out.push(EdgeCheck {
                bucket_start_ms: bucket,
                tier,
                injected: injected(tier, faults, plan),
                detected,
                matches,
            });
        }
    }
    out
}

fn injected(tier: &str, faults: &BucketFaults, plan: &FaultPlan) -> String {
    match tier {
        BROKER if !faults.lost.is_empty() => format!("lost {}", faults.lost.len()),
        BILLING if faults.duplicated > 0 => format!("dup {}", faults.duplicated),
        ANALYTICS if faults.delayed > 0 => format!("+{} ms", plan.delay_ms),
        _ => "-".into(),
    }
}

fn edge_matches(
    tier: &str,
    faults: &BucketFaults,
    row: &VerdictRow,
    plan: &FaultPlan,
    delay_threshold_ms: u64,
) -> bool {
    let lost = faults.lost.len() as u64;
    let at_broker = faults.produced - lost;
    let bucket = row.bucket_start_ms;
    match (tier, row.kind.outcome, row.kind.delayed) {
        (BROKER, Outcome::Indeterminate, false) => plan.in_crash_window(bucket),
        (BROKER, _, _) if row.upstream_count != faults.produced => false,
        _ if tier != BROKER && row.upstream_count != at_broker => false,
        (BROKER, Outcome::Complete, false) => lost == 0,
        (BROKER, Outcome::Loss, false) => {
            let named = lost != 1 || row.lost_fingerprint == Some(faults.lost[0]);
            lost > 0 && row.upstream_count - row.count == lost && named
        }
        (BILLING, Outcome::Complete | Outcome::Duplicates, late) => {
            let extra = row.count.saturating_sub(row.upstream_count);
            let count_ok = extra == faults.duplicated && (row.kind.outcome == Outcome::Duplicates) == (extra > 0);
            count_ok && faults.billing.expected_delay().is_none_or(|d| d == late)
        }
        (ANALYTICS, Outcome::Complete, late) => late == (faults.delayed > 0 && plan.delay_ms > delay_threshold_ms),
        _ => false,
    }
}

/// The injected-versus-detected table, one line per bucket.
pub fn render(ledger: &Ledger, checks: &[EdgeCheck], utc: impl Fn(EpochMillis) -> String) -> String {
    let mut out = String::new();
    let first = format!(
        "{:<19} {:>9}  {:<31}  {:<31}  {}",
        "", "", "broker vs producer", "consumer/billing vs broker", "consumer/analytics vs broker"
    );
    let head = format!("{:<10} {:<20}", "injected", "detected");
    let _ = writeln!(out, "{}", first.trim_end());
    let _ = writeln!(out, "{:<19} {:>9}  {head}  {head}  {}", "bucket (UTC)", "produced", head.trim_end());
    for (bucket, faults) in ledger.buckets() {
        let _ = write!(out, "{:<19} {:>9}", utc(*bucket), faults.produced);
        for c in checks.iter().filter(|c| c.bucket_start_ms == *bucket) {
            let mark = if c.matches { "" } else { " ✗" };
            let _ = write!(out, "  {:<10} {:<20}", c.injected, format!("{}{mark}", c.detected));
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::faults::{PRODUCER, TOPIC};

    fn row(bucket: i64, tier: &str, kind: &str, upstream: u64, count: u64) -> VerdictRow {
        VerdictRow {
            topic: TOPIC.into(),
            bucket_start_ms: bucket,
            tier: tier.into(),
            upstream_tier: if tier == BROKER { PRODUCER.into() } else { BROKER.into() },
            kind: kind.parse().unwrap(),
            upstream_count: upstream,
            count,
            lost_fingerprint: None,
            p99_ms: kind.ends_with("+delay").then_some(2_010),
            evaluated_at_ms: 0,
            detail: None,
        }
    }

    fn plan() -> FaultPlan {
        FaultPlan {
            loss: 0.01,
            duplicates: 0.01,
            delay_ms: 2_000,
            from_ms: 10_000,
            pause_ms: 0,
            crash_at_ms: None,
            crash_window: None,
        }
    }

    /// Bucket 0 clean, bucket 10000 with 2 lost, 3 duplicated and every message delayed.
    fn ledger() -> Ledger {
        let mut l = Ledger::default();
        for _ in 0..100 {
            l.produced(0);
            l.produced(10_000);
        }
        l.lost(10_000, 0xaa);
        l.lost(10_000, 0xbb);
        for _ in 0..3 {
            l.duplicated(10_000);
        }
        for _ in 0..98 {
            l.delayed(10_000);
        }
        l
    }

    fn exact() -> Vec<VerdictRow> {
        vec![
            row(0, BROKER, "complete", 100, 100),
            row(0, BILLING, "complete", 100, 100),
            row(0, ANALYTICS, "complete", 100, 100),
            row(10_000, BROKER, "loss", 100, 98),
            row(10_000, BILLING, "duplicates", 98, 101),
            row(10_000, ANALYTICS, "complete+delay", 98, 98),
        ]
    }

    #[test]
    fn exact_detection_matches_every_edge() {
        let checks = check(&ledger(), &exact(), &plan(), 1_000);
        assert_eq!(checks.len(), 6);
        assert!(checks.iter().all(|c| c.matches), "{checks:#?}");
        let table = render(&ledger(), &checks, |ms| ms.to_string());
        assert!(table.contains("lost 2"), "{table}");
        assert!(table.contains("p99 2010 ms"), "{table}");
        assert!(!table.contains('✗'), "{table}");
    }

    #[test]
    fn every_kind_of_disagreement_is_a_mismatch() {
        let cases: Vec<(usize, VerdictRow)> = vec![
            (3, row(10_000, BROKER, "loss", 100, 97)),       // wrong count
            (3, row(10_000, BROKER, "loss+delay", 100, 98)), // broker flagged late
            (3, row(10_000, BROKER, "loss", 101, 99)),       // upstream count off
            (0, row(0, BROKER, "loss", 100, 99)),            // loss where none was injected
            (4, row(10_000, BILLING, "complete", 98, 98)),   // duplicates missed
            (4, row(10_000, BILLING, "duplicates+delay", 98, 101)),
            (5, row(10_000, ANALYTICS, "complete", 98, 98)), // delay missed
            (2, row(0, ANALYTICS, "complete+delay", 100, 100)), // delay where none was injected
            (2, row(0, ANALYTICS, "loss", 100, 99)),
        ];
        for (i, wrong) in cases {
            let mut rows = exact();
            rows[i] = wrong.clone();
            let checks = check(&ledger(), &rows, &plan(), 1_000);
            let bad: Vec<_> = checks.iter().filter(|c| !c.matches).collect();
            assert_eq!(bad.len(), 1, "{wrong:?} → {checks:#?}");
            assert_eq!(
                (bad[0].bucket_start_ms, bad[0].tier),
                (wrong.bucket_start_ms, [BROKER, BILLING, ANALYTICS][i % 3])
            );
        }
        let mut missing = exact();
        missing.pop();
        let checks = check(&ledger(), &missing, &plan(), 1_000);
        assert_eq!(checks.iter().filter(|c| !c.matches).count(), 1);
        assert!(checks.iter().any(|c| c.detected == "not evaluated"));
    }

    #[test]
    fn a_single_loss_must_be_named() {
        let mut l = Ledger::default();
        for _ in 0..10 {
            l.produced(0);
        }
        l.lost(0, 0x1234);
        let mut rows =
            vec![row(0, BROKER, "loss", 10, 9), row(0, BILLING, "complete", 9, 9), row(0, ANALYTICS, "complete", 9, 9)];
        assert!(!check(&l, &rows, &plan(), 1_000)[0].matches, "no fingerprint named");
        rows[0].lost_fingerprint = Some(0x9999);
        assert!(!check(&l, &rows, &plan(), 1_000)[0].matches, "the wrong fingerprint");
        rows[0].lost_fingerprint = Some(0x1234);
        assert!(check(&l, &rows, &plan(), 1_000).iter().all(|c| c.matches));
    }

    #[test]
    fn a_delay_under_the_threshold_is_not_expected_to_alert() {
        let l = ledger();
        let (must, may) = l.expected_alerts(&plan(), 1_000);
        assert_eq!(
            must.into_iter().collect::<Vec<_>>(),
            ["delay/orders/consumer/analytics", "duplicates/orders/consumer/billing", "loss/orders/broker"]
        );
        assert!(may.is_empty());
        let quiet = FaultPlan { delay_ms: 500, ..plan() };
        assert!(!l.expected_alerts(&quiet, 1_000).0.contains("delay/orders/consumer/analytics"));
        let mut rows = exact();
        rows[5] = row(10_000, ANALYTICS, "complete", 98, 98);
        assert!(check(&l, &rows, &quiet, 1_000).iter().all(|c| c.matches));
        assert_eq!(Ledger::default().expected_alerts(&plan(), 1_000).0.len(), 0);
    }

    #[test]
    fn a_crash_window_allows_indeterminate_and_makes_its_loss_alert_optional() {
        let l = ledger();
        let crashed = FaultPlan { crash_at_ms: Some(12_000), crash_window: Some((10_000, 10_000)), ..plan() };
        let mut rows = exact();
        rows[3] = row(10_000, BROKER, "indeterminate", 100, 101);
        assert!(!check(&l, &rows, &plan(), 1_000)[3].matches, "indeterminate outside a crash window");
        assert!(check(&l, &rows, &crashed, 1_000).iter().all(|c| c.matches));
        let (must, may) = l.expected_alerts(&crashed, 1_000);
        assert!(!must.contains("loss/orders/broker") && may.contains("loss/orders/broker"));
        rows[0] = row(0, BROKER, "indeterminate", 100, 101);
        assert!(!check(&l, &rows, &crashed, 1_000)[0].matches, "before the window");
        rows[0] = row(0, BROKER, "pending", 100, 100);
        assert!(!check(&l, &rows, &crashed, 1_000)[0].matches, "pending is no verdict");
    }

    #[test]
    fn a_paused_consumer_expects_lag_and_its_own_delay_where_the_pause_made_it_late() {
        let mut l = ledger();
        for latency in (0..100).map(|i| if i < 50 { 20_000 } else { 10 }) {
            l.billing_latency(10_000, latency, 1_000);
        }
        for _ in 0..100 {
            l.billing_latency(0, 10, 1_000);
        }
        let paused = FaultPlan { pause_ms: 20_000, ..plan() };
        let (must, _) = l.expected_alerts(&paused, 1_000);
        assert!(must.contains("lag/orders/consumer/billing") && must.contains("delay/orders/consumer/billing"));
        let mut rows = exact();
        assert!(!check(&l, &rows, &paused, 1_000)[4].matches, "billing's late bucket must be flagged");
        rows[4] = row(10_000, BILLING, "duplicates+delay", 98, 101);
        assert!(check(&l, &rows, &paused, 1_000).iter().all(|c| c.matches));
        rows[1] = row(0, BILLING, "complete+delay", 100, 100);
        assert!(!check(&l, &rows, &paused, 1_000)[1].matches, "on time: not late");
    }
}
