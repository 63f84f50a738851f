//! Evaluating one bucket: merge each tier's rows across agents, compare every pipeline edge.

use std::collections::BTreeMap;

use kaudit_schema::{
    EpochMillis, NamedDifferences, NamedKind, Outcome, Tally, TallyRow, VerdictDetail, VerdictKind, VerdictRow,
};
use serde::{Deserialize, Serialize};

use crate::compare::{Verdict, compare_tiers};
use crate::hold::Hold;
use crate::named::name_differences;
use crate::pipeline::{Edge, Pipeline};

/// Each tier's tally for one bucket, merged across agents.
pub type BucketTiers = BTreeMap<String, Tally>;

/// When a verdict becomes an alert. Defaults are the production settings Chaperone's authors
/// recommend: loss ratio above 0.01 %, p99 delay above 1 s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Lost / upstream count above which a bucket alerts. Default 0.0001.
    pub loss_ratio: f64,
    /// Extra / upstream count above which a bucket alerts. Default 0.0001.
    pub duplicate_ratio: f64,
    /// Downstream p99 of (arrival − event time) above which a bucket is delayed, ms. Default 1000.
    pub p99_delay_ms: u64,
    /// How far a tier's watermark may be behind its upstream's before a `lag` alert (a warning,
    /// never a loss), ms. Default 300000 (5 min): a consumer group waits `session.timeout.ms`
    /// (45 s by default) before it reassigns a dead member's partitions, then rebalances and
    /// re-fetches; 5 minutes is past any healthy rebalance or rolling deploy, and is where lag
    /// monitors such as Burrow commonly warn.
    pub max_lag_ms: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { loss_ratio: 0.0001, duplicate_ratio: 0.0001, p99_delay_ms: 1_000, max_lag_ms: 300_000 }
    }
}

/// The verdict on one edge of one bucket, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeVerdict {
    pub topic: String,
    pub bucket_start_ms: EpochMillis,
    pub upstream: String,
    pub tier: String,
    pub verdict: Verdict,
    pub upstream_count: u64,
    pub count: u64,
    /// Missing / upstream count (0 when nothing is missing).
    pub loss_ratio: f64,
    /// Extra / upstream count (0 when nothing is extra).
    pub duplicate_ratio: f64,
    /// Downstream p99 latency, ms, when it recorded any.
    pub p99_ms: Option<u64>,
    /// Downstream latency quantiles, ms, when it recorded any (not kept with stored verdicts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<kaudit_schema::sketch::Quantiles>,
    /// `p99_ms` is over the threshold.
    pub delayed: bool,
    /// Set when the comparison is not the verdict (pending, indeterminate, unreached): its
    /// numbers are shown but prove nothing, and it breaches no threshold.
    #[serde(default)]
    pub hold: Option<Hold>,
    /// The messages the tiers' sketches name, when the tiers differ and both kept sketches: the
    /// first [`NamedDifferences::KEPT`] of them. When complete, `verdict` and the ratios count
    /// lost and extra messages exactly (a bucket can be both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named: Option<NamedDifferences>,
}

impl EdgeVerdict {
    /// The outcome: the hold's, or else the comparison's.
    pub fn outcome(&self) -> Outcome {
        self.hold.as_ref().map_or(self.verdict.outcome(), Hold::outcome)
    }

    /// Whether this is the bucket's final word for now (not pending): late rows may still revise it.
    pub fn is_final(&self) -> bool {
        !self.outcome().is_pending()
    }

    /// Messages lost: exact when the sketches named every difference, else upstream less
    /// downstream.
    pub fn missing(&self) -> u64 {
        match &self.named {
            Some(n) if n.complete => n.lost,
            _ => self.upstream_count.saturating_sub(self.count),
        }
    }

    /// Extra copies downstream: exact when the sketches named every difference, else
    /// downstream less upstream.
    pub fn extra(&self) -> u64 {
        match &self.named {
            Some(n) if n.complete => n.extra,
            _ => self.count.saturating_sub(self.upstream_count),
        }
    }

    /// The verdict's kind: its outcome, flagged when a comparison that stands was delayed.
    pub fn kind(&self) -> VerdictKind {
        VerdictKind::new(self.outcome(), self.delayed && self.hold.is_none())
    }

    /// The stored form of this verdict, reached at `evaluated_at_ms`.
    pub fn to_row(&self, evaluated_at_ms: EpochMillis) -> VerdictRow {
        VerdictRow {
            topic: self.topic.clone(),
            bucket_start_ms: self.bucket_start_ms,
            tier: self.tier.clone(),
            upstream_tier: self.upstream.clone(),
            kind: self.kind(),
            upstream_count: self.upstream_count,
            count: self.count,
            lost_fingerprint: match (self.verdict, &self.hold) {
                (Verdict::Loss { fingerprint, .. }, None) => fingerprint,
                _ => None,
            },
            p99_ms: self.p99_ms,
            evaluated_at_ms,
            detail: self.detail(),
        }
    }

    /// The stored detail: the hold's, and the named messages.
    fn detail(&self) -> Option<VerdictDetail> {
        let mut detail = self.hold.as_ref().map(Hold::detail).unwrap_or_default();
        detail.named.clone_from(&self.named);
        (detail != VerdictDetail::default()).then_some(detail)
    }

    /// A stored verdict as reached by an earlier run, as far as its row tells: the comparison is
    /// rebuilt from the counts (a content mismatch or a missing tier reads as complete or loss).
    pub fn from_row(row: &VerdictRow) -> Self {
        let (up, down) = (row.upstream_count, row.count);
        let named = row.detail.as_ref().and_then(|d| d.named.clone());
        let verdict = match down.cmp(&up) {
            std::cmp::Ordering::Less => Verdict::Loss { missing: up - down, fingerprint: row.lost_fingerprint },
            std::cmp::Ordering::Greater => Verdict::Duplicates { extra: down - up },
            std::cmp::Ordering::Equal => Verdict::Complete,
        };
        let verdict = named.as_ref().and_then(|n| named_verdict(n, row.lost_fingerprint)).unwrap_or(verdict);
        let (missing, extra) = match &named {
            Some(n) if n.complete => (n.lost, n.extra),
            _ => (up.saturating_sub(down), down.saturating_sub(up)),
        };
        EdgeVerdict {
            topic: row.topic.clone(),
            bucket_start_ms: row.bucket_start_ms,
            upstream: row.upstream_tier.clone(),
            tier: row.tier.clone(),
            verdict,
            upstream_count: up,
            count: down,
            loss_ratio: ratio(missing, up),
            duplicate_ratio: ratio(extra, up),
            p99_ms: row.p99_ms,
            latency: None,
            delayed: row.kind.delayed,
            hold: Hold::from_stored(row.kind.outcome, row.detail.as_ref()),
            named,
        }
    }
}

/// `n` of `of`, where anything of nothing is everything.
fn ratio(n: u64, of: u64) -> f64 {
    if of == 0 { if n == 0 { 0.0 } else { 1.0 } } else { n as f64 / of as f64 }
}

/// Merge stored rows per (bucket, tier) across agents.
pub fn merge_rows(rows: &[TallyRow]) -> BTreeMap<EpochMillis, BucketTiers> {
    let mut out: BTreeMap<EpochMillis, BucketTiers> = BTreeMap::new();
    for row in rows {
        let by_tier = out.entry(row.key.bucket_start_ms).or_default();
        match by_tier.get_mut(&row.key.tier) {
            Some(t) => t.merge(&row.tally),
            None => {
                by_tier.insert(row.key.tier.clone(), row.tally.clone());
            }
        }
    }
    out
}

/// Verdicts for every edge of `pipeline` in one bucket. An edge whose upstream and downstream
/// both have no rows had no traffic and gets no verdict.
pub fn evaluate_bucket(
    topic: &str,
    bucket_start_ms: EpochMillis,
    tiers: &BucketTiers,
    pipeline: &Pipeline,
    thresholds: &Thresholds,
) -> Vec<EdgeVerdict> {
    evaluate_edges(topic, bucket_start_ms, tiers, pipeline.edges(), thresholds)
}

/// Verdicts for each of `edges` in one bucket, in order, for any shape of pipeline (the report's
/// guessed chain included). An edge with no rows on either side gets no verdict.
pub fn evaluate_edges(
    topic: &str,
    bucket_start_ms: EpochMillis,
    tiers: &BucketTiers,
    edges: &[Edge],
    thresholds: &Thresholds,
) -> Vec<EdgeVerdict> {
    edges.iter().filter_map(|edge| evaluate_edge(topic, bucket_start_ms, tiers, edge, thresholds)).collect()
}

fn evaluate_edge(
    topic: &str,
    bucket_start_ms: EpochMillis,
    tiers: &BucketTiers,
    edge: &Edge,
    thresholds: &Thresholds,
) -> Option<EdgeVerdict> {
    let (up, down) = (tiers.get(&edge.upstream), tiers.get(&edge.downstream));
    if up.is_none() && down.is_none() {
        return None;
    }
    let upstream_count = up.map_or(0, |t| t.count);
    let count = down.map_or(0, |t| t.count);
    let p99_ms = down.and_then(|t| t.latency.quantile(0.99));
    let mut verdict = compare_tiers(up, down);
    let named = match (up, down) {
        (Some(u), Some(d)) if verdict != Verdict::Complete => name_differences(u, d, NamedDifferences::KEPT),
        _ => None,
    };
    let single = match verdict {
        Verdict::Loss { fingerprint, .. } => fingerprint,
        _ => None,
    };
    if let Some(exact) = named.as_ref().and_then(|n| named_verdict(n, single)) {
        verdict = exact;
    }
    let mut v = EdgeVerdict {
        topic: topic.to_string(),
        bucket_start_ms,
        upstream: edge.upstream.clone(),
        tier: edge.downstream.clone(),
        verdict,
        upstream_count,
        count,
        loss_ratio: 0.0,
        duplicate_ratio: 0.0,
        p99_ms,
        latency: down.and_then(|t| t.latency.quantiles()),
        delayed: p99_ms.is_some_and(|p| p > thresholds.p99_delay_ms),
        hold: None,
        named,
    };
    v.loss_ratio = ratio(v.missing(), upstream_count);
    v.duplicate_ratio = ratio(v.extra(), upstream_count);
    Some(v)
}

/// The verdict the named messages prove, when they were all named: loss when any was lost (the
/// duplicates beside it are counted in the numbers), else duplicates, else a content mismatch.
/// `single`: the one lost fingerprint the counts found, kept when the names agree.
fn named_verdict(n: &NamedDifferences, single: Option<u64>) -> Option<Verdict> {
    if !n.complete {
        return None;
    }
    let one_lost = n
        .messages
        .iter()
        .find(|m| m.kind == NamedKind::Lost)
        .and_then(|m| u64::from_str_radix(&m.fingerprint, 16).ok());
    Some(if n.lost > 0 {
        let fingerprint = if n.lost == 1 { one_lost.or(single) } else { None };
        Verdict::Loss { missing: n.lost, fingerprint }
    } else if n.extra > 0 {
        Verdict::Duplicates { extra: n.extra }
    } else if n.altered > 0 {
        Verdict::ContentMismatch
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Side;
    use crate::pipeline::PipelineConfig;
    use kaudit_schema::TallyKey;

    /// A bucket that lost 3 messages and got 3 duplicates has equal counts; with sketches both
    /// are counted exactly, the verdict is a loss, and both ratios breach.
    #[test]
    fn loss_and_duplicates_in_one_bucket_both_count() {
        use kaudit_schema::difference::{DEFAULT_GEOMETRY, DifferenceSketch, Locator};
        let sketched = |msgs: &[(u64, i64)]| {
            let mut t = Tally { sketch: Some(DifferenceSketch::new(DEFAULT_GEOMETRY)), ..Tally::default() };
            msgs.iter().for_each(|(fp, o)| t.add_at(*fp, 10, Some(Locator { partition: 0, offset: *o })));
            t
        };
        let up: Vec<(u64, i64)> = (0..100).map(|i| (7_919 * (i + 1), i as i64)).collect();
        let mut down: Vec<(u64, i64)> = up[3..].to_vec();
        down.extend([(up[10].0, 100), (up[11].0, 101), (up[12].0, 102)]);
        let tiers: BucketTiers =
            [("producer".to_string(), sketched(&up)), ("broker".to_string(), sketched(&down))].into();
        let v = &evaluate_bucket("t", 0, &tiers, &pipeline(), &Thresholds::default())[0];
        assert_eq!((v.upstream_count, v.count), (100, 100), "the counts alone net out");
        assert_eq!(v.verdict, Verdict::Loss { missing: 3, fingerprint: None });
        assert_eq!((v.missing(), v.extra(), v.loss_ratio, v.duplicate_ratio), (3, 3, 0.03, 0.03));
        let named = v.named.as_ref().unwrap();
        let lost: Vec<Option<i64>> =
            named.messages.iter().filter(|m| m.kind == NamedKind::Lost).map(|m| m.offset).collect();
        assert_eq!(lost, [Some(0), Some(1), Some(2)]);
        let row = v.to_row(5);
        assert_eq!(EdgeVerdict::from_row(&row).named.as_ref(), Some(named), "stored with the verdict");
        assert_eq!((EdgeVerdict::from_row(&row).missing(), EdgeVerdict::from_row(&row).extra()), (3, 3));
    }

    fn pipeline() -> Pipeline {
        PipelineConfig {
            topics: vec!["*".into()],
            tiers: vec!["producer".into(), "broker".into()],
            consumers: vec!["consumer/billing".into()],
        }
        .build()
    }

    fn row(tier: &str, agent: &str, fps: std::ops::Range<u64>, latency_ms: i64) -> TallyRow {
        let mut tally = Tally::default();
        for fp in fps {
            tally.add(fp * 7919, 10);
            tally.latency.record(latency_ms);
        }
        TallyRow {
            key: TallyKey { topic: "t".into(), bucket_start_ms: 0, tier: tier.into(), agent_id: agent.into() },
            bucket_width_ms: 60_000,
            version: 1,
            tally,
        }
    }

    #[test]
    fn merges_agents_then_compares_each_edge() {
        let rows = vec![
            row("producer", "p1", 0..5000, 5),
            row("producer", "p2", 5000..10000, 5),
            row("broker", "b1", 0..9999, 20),
            row("consumer/billing", "c1", 0..9999, 1500),
            row("consumer/billing", "c1-restarted", 9000..9002, 1500),
        ];
        let merged = merge_rows(&rows);
        let verdicts = evaluate_bucket("t", 0, &merged[&0], &pipeline(), &Thresholds::default());
        assert_eq!(verdicts.len(), 2);
        let broker = &verdicts[0];
        assert_eq!(broker.verdict, Verdict::Loss { missing: 1, fingerprint: Some(9999 * 7919) });
        assert!((broker.loss_ratio - 1e-4).abs() < 1e-12);
        assert!(!broker.delayed && broker.duplicate_ratio == 0.0);
        assert_eq!(broker.kind().to_string(), "loss");
        let billing = &verdicts[1];
        assert_eq!(billing.verdict, Verdict::Duplicates { extra: 2 });
        assert!((billing.duplicate_ratio - 2.0 / 9999.0).abs() < 1e-12);
        assert!(billing.delayed, "p99 over the 1000 ms threshold");
        assert!((1485..=1515).contains(&billing.p99_ms.unwrap()));
        let row = billing.to_row(7);
        assert_eq!((row.kind.to_string().as_str(), row.upstream_count, row.count), ("duplicates+delay", 9999, 10001));
        assert_eq!((row.upstream_tier.as_str(), row.evaluated_at_ms, row.lost_fingerprint), ("broker", 7, None));
        assert_eq!(broker.to_row(7).lost_fingerprint, Some(9999 * 7919));
    }

    #[test]
    fn a_silent_tier_is_missing_and_no_traffic_is_no_verdict() {
        let merged = merge_rows(&[row("producer", "p1", 0..10, 1)]);
        let verdicts = evaluate_bucket("t", 0, &merged[&0], &pipeline(), &Thresholds::default());
        assert_eq!(verdicts.len(), 1, "broker→consumer had no traffic on either side");
        assert_eq!(verdicts[0].verdict, Verdict::MissingTier { side: Side::Downstream });
        assert_eq!((verdicts[0].upstream_count, verdicts[0].count, verdicts[0].loss_ratio), (10, 0, 1.0));
        assert_eq!(verdicts[0].kind().to_string(), "missing_tier");
    }
}
