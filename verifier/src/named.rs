//! Naming the messages that differ on one edge of one bucket, pure: subtract the downstream tier's
//! merged sketch from the upstream's and decode it (`kaudit_schema::difference`).
//!
//! Each difference is a message (by fingerprint) one tier has more copies of. Where the tiers
//! share a cluster, each single copy comes with its partition and offset; a lost message and an
//! extra one at the *same* partition and offset are one message altered in place (downstream
//! holds other content there), named once as `altered`. So a bucket that lost 3 messages and got
//! 3 duplicates, whose counts are equal, reads as 3 lost and 3 extra, not as a content mismatch.
//!
//! Nothing is named when either tier kept no sketch (an older agent, or sketches turned off) or
//! the two used different geometries: the verdict then rests on counts alone, as before.

use std::collections::HashMap;

use kaudit_schema::difference::{Difference, Locator};
use kaudit_schema::{NamedDifferences, NamedKind, NamedMessage, Tally, TallyRow};

use crate::evaluate::merge_rows;
use crate::pipeline::Pipeline;

/// The messages `upstream` and `downstream` differ by, all of them named when the sketch can
/// (`complete`), at most `keep` listed. `None` when the tiers' sketches cannot be compared.
pub fn name_differences(upstream: &Tally, downstream: &Tally, keep: usize) -> Option<NamedDifferences> {
    let (up, down) = (upstream.sketch.as_ref()?, downstream.sketch.as_ref()?);
    let decoded = up.subtract(down).ok()?.decode();
    Some(summarise(&decoded.differences, decoded.complete, keep))
}

/// Counts and the ordered list of `differences`: altered pairs first, then lost, then extra,
/// each by partition and offset (unlocated last), then fingerprint.
pub fn summarise(differences: &[Difference], complete: bool, keep: usize) -> NamedDifferences {
    let extra_at: HashMap<Locator, u64> =
        differences.iter().filter(|d| d.copies == -1).filter_map(|d| Some((d.locator?, d.fingerprint))).collect();
    let mut out = NamedDifferences { complete, ..NamedDifferences::default() };
    let mut messages = Vec::with_capacity(differences.len());
    let mut replaced: Vec<Locator> = Vec::new();
    for d in differences.iter().filter(|d| d.copies > 0) {
        let by = d.locator.filter(|_| d.copies == 1).and_then(|l| extra_at.get(&l).map(|fp| (l, *fp)));
        let kind = if by.is_some() { NamedKind::Altered } else { NamedKind::Lost };
        if let Some((at, _)) = by {
            replaced.push(at);
            out.altered += 1;
        } else {
            out.lost += d.copies as u64;
        }
        messages.push(message(kind, d, by.map(|(_, fp)| fp)));
    }
    for d in differences.iter().filter(|d| d.copies < 0) {
        if d.copies == -1 && d.locator.is_some_and(|l| replaced.contains(&l)) {
            continue;
        }
        out.extra += d.copies.unsigned_abs();
        messages.push(message(NamedKind::Extra, d, None));
    }
    messages.sort_by(|a, b| {
        let at = |m: &NamedMessage| (m.kind, m.partition.is_none(), m.partition, m.offset);
        at(a).cmp(&at(b)).then_with(|| a.fingerprint.cmp(&b.fingerprint))
    });
    out.total = messages.len() as u64;
    messages.truncate(keep);
    out.messages = messages;
    out
}

/// Every message that differs on the edge into `tier` of one bucket, from the bucket's tally
/// rows (all agents of all tiers): what `GET /api/v1/buckets/{topic}/{bucket}/diff` and `kaudit
/// lost` show.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BucketDiff {
    pub topic: String,
    pub bucket_start_ms: i64,
    pub upstream_tier: String,
    pub tier: String,
    pub upstream_count: u64,
    pub count: u64,
    /// Every named message (`messages` is not cut here).
    pub named: NamedDifferences,
}

/// Why a bucket's difference cannot be named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    #[error("tier {tier:?} has no upstream tier in the pipeline of topic {topic:?} (its tiers: {tiers})")]
    NoEdge { topic: String, tier: String, tiers: String },
    #[error("no tally rows of tier {tier:?} for topic {topic:?} in bucket {bucket_start_ms}")]
    NoRows { topic: String, tier: String, bucket_start_ms: i64 },
    #[error(
        "the rows of tier {tier:?} or {upstream:?} carry no comparable sketch (an agent without sketches, or two \
         sketch sizes): only the counts are known"
    )]
    NoSketch { upstream: String, tier: String },
}

/// The difference on the edge into `tier` of the bucket starting `bucket_start_ms`, from `rows`.
pub fn bucket_diff(
    topic: &str,
    bucket_start_ms: i64,
    tier: &str,
    rows: &[TallyRow],
    pipeline: &Pipeline,
) -> Result<BucketDiff, DiffError> {
    let Some(edge) = pipeline.edges().iter().find(|e| e.downstream == tier) else {
        let tiers = pipeline.tiers().join(", ");
        return Err(DiffError::NoEdge { topic: topic.into(), tier: tier.into(), tiers });
    };
    let rows: Vec<TallyRow> = rows.iter().filter(|r| r.key.bucket_start_ms == bucket_start_ms).cloned().collect();
    let tiers = merge_rows(&rows).remove(&bucket_start_ms).unwrap_or_default();
    let side = |t: &str| {
        let no_rows = || DiffError::NoRows { topic: topic.into(), tier: t.into(), bucket_start_ms };
        tiers.get(t).ok_or_else(no_rows)
    };
    let (up, down) = (side(&edge.upstream)?, side(tier)?);
    let named = name_differences(up, down, usize::MAX)
        .ok_or_else(|| DiffError::NoSketch { upstream: edge.upstream.clone(), tier: tier.into() })?;
    Ok(BucketDiff {
        topic: topic.into(),
        bucket_start_ms,
        upstream_tier: edge.upstream.clone(),
        tier: tier.into(),
        upstream_count: up.count,
        count: down.count,
        named,
    })
}

fn message(kind: NamedKind, d: &Difference, replaced_by: Option<u64>) -> NamedMessage {
    NamedMessage {
        kind,
        fingerprint: format!("{:016x}", d.fingerprint),
        copies: d.copies.unsigned_abs(),
        partition: d.locator.map(|l| l.partition),
        offset: d.locator.map(|l| l.offset),
        replaced_by: replaced_by.map(|fp| format!("{fp:016x}")),
    }
}

#[cfg(test)]
mod tests {
    use kaudit_schema::difference::{DEFAULT_GEOMETRY, DifferenceSketch};

    use super::*;

    fn tally(msgs: &[(u64, i32, i64)]) -> Tally {
        let mut t = Tally { sketch: Some(DifferenceSketch::new(DEFAULT_GEOMETRY)), ..Tally::default() };
        for (fp, partition, offset) in msgs {
            t.add_at(*fp, 10, Some(Locator { partition: *partition, offset: *offset }));
        }
        t
    }

    #[test]
    fn lost_duplicated_and_altered_in_one_bucket_are_each_named() {
        let base: Vec<(u64, i32, i64)> = (0..50).map(|i| (1_000 + i, 0, i as i64)).collect();
        let mut up = base.clone();
        up.extend([(7, 1, 100), (8, 1, 101), (9, 1, 102), (11, 2, 5)]);
        let mut down = base.clone();
        down.extend([(1_003, 0, 60), (1_004, 0, 61), (1_005, 0, 62), (12, 2, 5)]); // 3 duplicates, 1 altered
        let named = name_differences(&tally(&up), &tally(&down), 100).unwrap();
        assert!(named.complete);
        assert_eq!((named.lost, named.extra, named.altered, named.total), (3, 3, 1, 7));
        let first = &named.messages[0];
        assert_eq!((first.kind, first.partition, first.offset), (NamedKind::Altered, Some(2), Some(5)));
        assert_eq!(first.replaced_by.as_deref(), Some("000000000000000c"));
        let lost: Vec<_> = named.messages.iter().filter(|m| m.kind == NamedKind::Lost).map(|m| m.offset).collect();
        assert_eq!(lost, [Some(100), Some(101), Some(102)]);
        assert_eq!(named.messages.last().map(|m| (m.kind, m.offset)), Some((NamedKind::Extra, Some(62))));
        let cut = name_differences(&tally(&up), &tally(&down), 2).unwrap();
        assert_eq!((cut.messages.len(), cut.total, cut.lost), (2, 7, 3), "listed in part, counted in full");
    }

    #[test]
    fn nothing_is_named_without_both_sketches() {
        let with = tally(&[(1, 0, 0)]);
        let mut without = Tally::default();
        without.add(1, 10);
        assert_eq!(name_differences(&with, &without, 10), None);
        let other = Tally {
            sketch: Some(DifferenceSketch::new(kaudit_schema::difference::Geometry { cells: 60, hashes: 5 })),
            ..Tally::default()
        };
        assert_eq!(name_differences(&with, &other, 10), None, "different geometries");
    }
}
