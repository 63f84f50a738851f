//! Per-bucket, per-tier tables of stored tallies, with each tier's verdict against its upstream as
//! the verifier reaches it: the rows are merged and compared by the verifier's own `merge_rows` and
//! `evaluate_edges`, so the table and the stored verdicts cannot disagree.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kaudit_schema::{EpochMillis, Tally, TallyRow};
use kaudit_verifier::evaluate::{BucketTiers, EdgeVerdict, Thresholds, evaluate_edges};
use kaudit_verifier::{Edge, Side, Verdict};

/// Merge stored rows per (bucket, tier) across agents (the verifier's merge).
pub use kaudit_verifier::evaluate::merge_rows as merge_by_tier;

fn chain(tiers: &[&str]) -> Vec<(String, String)> {
    tiers.windows(2).map(|p| (p[0].to_string(), p[1].to_string())).collect()
}

/// Tiers found in `rows`, in first-seen order of a plausible pipeline (producer first), with a
/// chain of edges between consecutive ones: the report's guess when no pipeline is configured.
pub fn tiers_in_order(rows: &[TallyRow]) -> (Vec<String>, Vec<(String, String)>) {
    let mut tiers: Vec<String> = rows.iter().map(|r| r.key.tier.clone()).collect();
    tiers.sort_by_key(|t| (t != "producer", t.starts_with("consumer"), t.clone()));
    tiers.dedup();
    let names: Vec<&str> = tiers.iter().map(String::as_str).collect();
    let edges = chain(&names);
    (tiers, edges)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn utc(ms: EpochMillis) -> String {
    kaudit_alerting::time::rfc3339(ms)[..19].replace('T', " ")
}

/// One (bucket, tier) line of the table.
fn line(out: &mut String, bucket: EpochMillis, tier: &str, tally: Option<&Tally>, verdict: &str) {
    let Some(t) = tally else {
        let _ = writeln!(out, "{:<19}  {:<18} {:>9} {:>61}  {verdict}", utc(bucket), tier, "no rows", "");
        return;
    };
    let q = t.latency.quantiles();
    let _ = writeln!(
        out,
        "{:<19}  {:<18} {:>9} {:>11} {:>7} {:>9} {:>7} {:>7}  {verdict}",
        utc(bucket),
        tier,
        t.count,
        t.bytes,
        t.no_time,
        t.malformed,
        q.map_or("-".into(), |q| q.p50.to_string()),
        q.map_or("-".into(), |q| q.p99.to_string()),
    );
}

/// The verdict as the table shows it: the numbers behind it, and `+delay` as in its stored kind.
fn verdict_text(v: &EdgeVerdict) -> String {
    let text = match v.verdict {
        Verdict::MissingTier { side: Side::Downstream } => "MISSING TIER (no rows)".into(),
        Verdict::MissingTier { side: Side::Upstream } => format!("MISSING TIER {} (no rows upstream)", v.upstream),
        Verdict::Complete => "complete".into(),
        Verdict::Loss { missing, fingerprint: Some(fp) } => format!("LOSS {missing} (fingerprint {fp:016x})"),
        Verdict::Loss { missing, fingerprint: None } => format!("LOSS {missing}"),
        Verdict::Duplicates { extra } => format!("DUPLICATES {extra}"),
        Verdict::ContentMismatch => "CONTENT MISMATCH".into(),
    };
    let text = match (&v.verdict, &v.named) {
        (Verdict::Loss { .. }, Some(n)) if n.complete && n.extra > 0 => format!("{text} + DUPLICATES {}", n.extra),
        _ => text,
    };
    let text = match &v.named {
        Some(n) if n.complete => format!("{text} [{} named: kaudit lost]", n.total),
        Some(n) => format!("{text} [{} named, more than the sketch can name]", n.total),
        None => text,
    };
    if v.kind().delayed { format!("{text} +delay") } else { text }
}

/// The table for any pipeline shape: one line per (bucket, tier), tiers in `tiers` order, each
/// compared with its upstream in `edges`; a tier whose p99 latency is over `p99_delay_ms` is marked
/// `+delay`, as the verifier's verdicts are.
pub fn render_edges(
    merged: &BTreeMap<EpochMillis, BucketTiers>,
    tiers: &[String],
    edges: &[(String, String)],
    p99_delay_ms: u64,
) -> String {
    let edges: Vec<Edge> = edges.iter().map(|(u, d)| Edge { upstream: u.clone(), downstream: d.clone() }).collect();
    let thresholds = Thresholds { p99_delay_ms, ..Thresholds::default() };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<19}  {:<18} {:>9} {:>11} {:>7} {:>9} {:>7} {:>7}  vs upstream",
        "bucket (UTC)", "tier", "count", "bytes", "no_time", "malformed", "p50 ms", "p99 ms"
    );
    for (bucket, by_tier) in merged {
        // The table names no topic: the verdicts are not stored, only shown.
        let verdicts: BTreeMap<String, EdgeVerdict> = evaluate_edges("", *bucket, by_tier, &edges, &thresholds)
            .into_iter()
            .map(|v| (v.tier.clone(), v))
            .collect();
        for tier in tiers {
            let verdict = verdicts.get(tier).map_or("-".to_string(), verdict_text);
            line(&mut out, *bucket, tier, by_tier.get(tier), &verdict);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaudit_schema::TallyKey;

    /// The table for a chain of `tiers`, no delay threshold.
    fn render(merged: &BTreeMap<EpochMillis, BucketTiers>, tiers: &[&str]) -> String {
        let owned: Vec<String> = tiers.iter().map(|t| t.to_string()).collect();
        render_edges(merged, &owned, &chain(tiers), u64::MAX)
    }

    fn row(bucket: i64, tier: &str, agent: &str, fps: &[u64]) -> TallyRow {
        let mut tally = Tally::default();
        fps.iter().for_each(|f| tally.add(*f, 10));
        let key = TallyKey { topic: "t".into(), bucket_start_ms: bucket, tier: tier.into(), agent_id: agent.into() };
        TallyRow { key, bucket_width_ms: 60_000, version: 1, tally }
    }

    #[test]
    fn merges_agents_and_compares_tiers() {
        let rows = vec![
            row(0, "producer", "p1", &[1, 2]),
            row(0, "producer", "p2", &[3]),
            row(0, "consumer", "c1", &[1, 3]),
            row(60_000, "producer", "p1", &[5]),
            row(60_000, "consumer", "c1", &[5]),
        ];
        let merged = merge_by_tier(&rows);
        assert_eq!(merged[&0]["producer"].count, 3, "both agents merged");
        let table = render(&merged, &["producer", "consumer"]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[2].contains("consumer") && lines[2].ends_with("LOSS 1 (fingerprint 0000000000000002)"));
        assert!(lines[1].ends_with("  -") && lines[4].ends_with("  complete"), "{table}");
    }

    #[test]
    fn missing_tiers_are_named_not_miscounted() {
        let rows = vec![row(0, "producer", "p1", &[1, 2]), row(60_000, "consumer", "c1", &[3])];
        let merged = merge_by_tier(&rows);
        let table = render(&merged, &["producer", "consumer"]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[2].contains("consumer") && lines[2].ends_with("MISSING TIER (no rows)"), "{table}");
        assert!(lines[4].ends_with("MISSING TIER producer (no rows upstream)"), "{table}");
        assert!(!table.contains("DUPLICATES") && !table.contains("LOSS"), "{table}");
    }

    #[test]
    fn a_tier_over_the_delay_threshold_is_marked_as_its_stored_kind_is() {
        let mut rows = vec![row(0, "producer", "p1", &[1, 2]), row(0, "consumer", "c1", &[1, 2])];
        (0..2).for_each(|_| rows[1].tally.latency.record(2_500));
        let merged = merge_by_tier(&rows);
        let (tiers, edges) = tiers_in_order(&rows);
        let slow = render_edges(&merged, &tiers, &edges, 1_000);
        assert!(slow.lines().nth(2).unwrap().ends_with("  complete +delay"), "{slow}");
        let fine = render_edges(&merged, &tiers, &edges, 3_000);
        assert!(fine.lines().nth(2).unwrap().ends_with("  complete"), "{fine}");
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
    }
}
