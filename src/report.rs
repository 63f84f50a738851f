//! Per-bucket, per-tier tables of stored tallies, with each tier's verdict against its upstream.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kaudit_schema::{EpochMillis, Tally, TallyRow};
use kaudit_verifier::{Side, Verdict, compare_tiers};

/// Tallies of one bucket merged per tier, with how many agent rows went into each.
pub type BucketTiers = BTreeMap<String, (Tally, usize)>;

/// Merge stored rows per (bucket, tier) across agents.
pub fn merge_by_tier(rows: &[TallyRow]) -> BTreeMap<EpochMillis, BucketTiers> {
    let mut out: BTreeMap<EpochMillis, BucketTiers> = BTreeMap::new();
    for row in rows {
        let entry = out.entry(row.key.bucket_start_ms).or_default().entry(row.key.tier.clone()).or_default();
        entry.0.merge(&row.tally);
        entry.1 += 1;
    }
    out
}

/// Verdict of every downstream tier of `tiers` (in pipeline order) against the tier before it.
pub fn verdicts(merged: &BTreeMap<EpochMillis, BucketTiers>, tiers: &[&str]) -> Vec<(EpochMillis, String, Verdict)> {
    verdicts_for_edges(merged, &chain(tiers))
}

fn chain(tiers: &[&str]) -> Vec<(String, String)> {
    tiers.windows(2).map(|p| (p[0].to_string(), p[1].to_string())).collect()
}

/// Verdict of each (upstream, downstream) edge per bucket.
pub fn verdicts_for_edges(
    merged: &BTreeMap<EpochMillis, BucketTiers>,
    edges: &[(String, String)],
) -> Vec<(EpochMillis, String, Verdict)> {
    let mut out = Vec::new();
    for (bucket, by_tier) in merged {
        for (up, down) in edges {
            let u = by_tier.get(up).map(|t| &t.0);
            let d = by_tier.get(down).map(|t| &t.0);
            if u.is_none() && d.is_none() {
                continue;
            }
            out.push((*bucket, down.clone(), compare_tiers(u, d)));
        }
    }
    out
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

fn verdict_text(v: &Verdict, upstream: &str) -> String {
    match v {
        Verdict::MissingTier { side: Side::Downstream } => "MISSING TIER (no rows)".into(),
        Verdict::MissingTier { side: Side::Upstream } => format!("MISSING TIER {upstream} (no rows upstream)"),
        Verdict::Complete => "complete".into(),
        Verdict::Loss { missing, fingerprint: Some(fp) } => format!("LOSS {missing} (fingerprint {fp:016x})"),
        Verdict::Loss { missing, fingerprint: None } => format!("LOSS {missing}"),
        Verdict::Duplicates { extra } => format!("DUPLICATES {extra}"),
        Verdict::ContentMismatch => "CONTENT MISMATCH".into(),
    }
}

/// The table: one line per (bucket, tier), tiers in pipeline order, each compared with the tier
/// before it.
pub fn render(merged: &BTreeMap<EpochMillis, BucketTiers>, tiers: &[&str]) -> String {
    let owned: Vec<String> = tiers.iter().map(|t| t.to_string()).collect();
    render_edges(merged, &owned, &chain(tiers), u64::MAX)
}

/// The table for any pipeline shape: each tier compared with its upstream in `edges`; a downstream
/// tier whose p99 latency is over `p99_delay_ms` is marked `+delay`, as the verifier's verdicts are.
pub fn render_edges(
    merged: &BTreeMap<EpochMillis, BucketTiers>,
    tiers: &[String],
    edges: &[(String, String)],
    p99_delay_ms: u64,
) -> String {
    let verdicts: BTreeMap<(EpochMillis, String), Verdict> =
        verdicts_for_edges(merged, edges).into_iter().map(|(b, t, v)| ((b, t), v)).collect();
    let upstream_of: BTreeMap<&str, &str> = edges.iter().map(|(u, d)| (d.as_str(), u.as_str())).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<19}  {:<18} {:>9} {:>11} {:>7} {:>9} {:>7} {:>7}  vs upstream",
        "bucket (UTC)", "tier", "count", "bytes", "no_time", "malformed", "p50 ms", "p99 ms"
    );
    for (bucket, by_tier) in merged {
        for tier in tiers {
            let upstream = upstream_of.get(tier.as_str()).copied().unwrap_or("");
            let verdict =
                verdicts.get(&(*bucket, tier.to_string())).map_or("-".to_string(), |v| verdict_text(v, upstream));
            let Some((t, _agents)) = by_tier.get(tier) else {
                let _ = writeln!(out, "{:<19}  {:<18} {:>9} {:>61}  {verdict}", utc(*bucket), tier, "no rows", "");
                continue;
            };
            let q = t.latency.quantiles();
            let delayed =
                q.is_some_and(|q| q.p99 > p99_delay_ms) && verdicts.contains_key(&(*bucket, tier.to_string()));
            let verdict = if delayed { format!("{verdict} +delay") } else { verdict };
            let _ = writeln!(
                out,
                "{:<19}  {:<18} {:>9} {:>11} {:>7} {:>9} {:>7} {:>7}  {}",
                utc(*bucket),
                tier,
                t.count,
                t.bytes,
                t.no_time,
                t.malformed,
                q.map_or("-".into(), |q| q.p50.to_string()),
                q.map_or("-".into(), |q| q.p99.to_string()),
                verdict
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaudit_schema::TallyKey;

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
        assert_eq!(merged[&0]["producer"].1, 2);
        let v = verdicts(&merged, &["producer", "consumer"]);
        assert_eq!(v[0], (0, "consumer".to_string(), Verdict::Loss { missing: 1, fingerprint: Some(2) }));
        assert_eq!(v[1].2, Verdict::Complete);
        let table = render(&merged, &["producer", "consumer"]);
        assert!(table.contains("LOSS 1 (fingerprint 0000000000000002)"), "{table}");
        assert_eq!(table.lines().count(), 5);
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
    fn utc_formatting() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
    }
}
