//! What the core remembers of each edge's verdicts between passes, compactly: a verifier keeps
//! every bucket of every edge of every topic it owns within the lateness window (60 buckets × the
//! edges × 10,000 topics by default), so each is a few numbers, not a verdict and its stored row.
//!
//! A [`Recalled`] (64 bytes) holds what the alerts read (the counts, the outcome, the p99, the one
//! lost fingerprint), a digest of the stored row (to tell a fresh verdict that says the same from
//! one that revises it), whether this run decided it already, and the stored row itself only
//! while it is pending: a bucket that leaves the window pending is closed as `unreached` from it.
//! The digest is 64-bit: two different rows taken for one another, so that a revision went
//! unwritten, has a probability of about 2⁻⁶⁴ per comparison.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::ops::RangeBounds;

use kaudit_schema::{EpochMillis, NamedMessage, Outcome, VerdictRow};

use crate::evaluate::{EdgeVerdict, Thresholds};

/// One edge's verdict on one bucket, as remembered.
#[derive(Debug, Clone, PartialEq)]
pub struct Recalled {
    pub upstream_count: u64,
    pub count: u64,
    /// Extra copies downstream: exact where the sketches named every difference, else
    /// downstream less upstream. Lost messages follow: `upstream + extra − count`.
    extra: u64,
    /// The first named messages, when the tiers' sketches named any (the alert carries them).
    named: Option<Box<NamedList>>,
    /// The lost message's fingerprint when exactly one was lost (see `flags`).
    lost_fingerprint: u64,
    /// Digest of the stored row, its evaluation time left out.
    stored: u64,
    /// The stored row while it is pending.
    pending: Option<Box<VerdictRow>>,
    /// Downstream p99, ms (`u32::MAX`: none; saturated at 49 days less a millisecond).
    p99_ms: u32,
    pub outcome: Outcome,
    flags: u8,
}

/// `Recalled::flags`: the p99 was over the delay threshold on a comparison that stands.
const DELAYED: u8 = 1;
/// `Recalled::flags`: `lost_fingerprint` is one.
const LOST_FINGERPRINT: u8 = 2;
/// `Recalled::flags`: this run decided the bucket (not only loaded its stored row).
const DECIDED: u8 = 4;

impl Recalled {
    /// A row stored (by this run or an earlier one), not decided in this run yet.
    pub fn stored(row: VerdictRow) -> Self {
        let pending = row.kind.outcome.is_pending();
        let named = row.detail.as_ref().and_then(|d| d.named.as_ref());
        let extra = match named {
            Some(n) if n.complete => n.extra,
            _ => row.count.saturating_sub(row.upstream_count),
        };
        let named = named.filter(|n| !n.messages.is_empty()).map(|n| {
            let messages = n.messages.iter().take(kaudit_alerting::NAMED_IN_ALERT).cloned().collect();
            Box::new(NamedList { messages, total: n.total })
        });
        let flags = if row.kind.delayed { DELAYED } else { 0 }
            | if row.lost_fingerprint.is_some() { LOST_FINGERPRINT } else { 0 };
        Self {
            upstream_count: row.upstream_count,
            count: row.count,
            extra,
            named,
            lost_fingerprint: row.lost_fingerprint.unwrap_or(0),
            stored: row_digest(&row),
            p99_ms: row.p99_ms.map_or(u32::MAX, |p| p.min(u64::from(u32::MAX - 1)) as u32),
            outcome: row.kind.outcome,
            flags,
            pending: pending.then(|| Box::new(row)),
        }
    }

    /// A verdict decided in this run, whose stored form is `row`.
    pub fn decided(row: VerdictRow) -> Self {
        let mut r = Self::stored(row);
        r.flags |= DECIDED;
        r
    }

    /// Whether the stored row says what `row` says, whenever each was reached.
    pub fn stores(&self, row: &VerdictRow) -> bool {
        self.stored == row_digest(row)
    }

    pub fn is_decided(&self) -> bool {
        self.flags & DECIDED != 0
    }

    /// The p99 was over the delay threshold, on a comparison that stands.
    pub fn delayed(&self) -> bool {
        self.flags & DELAYED != 0
    }

    /// The lost message's fingerprint when exactly one was lost.
    pub fn lost_fingerprint(&self) -> Option<u64> {
        (self.flags & LOST_FINGERPRINT != 0).then_some(self.lost_fingerprint)
    }

    /// Downstream p99 latency, ms, when it recorded any.
    pub fn p99_ms(&self) -> Option<u64> {
        (self.p99_ms != u32::MAX).then_some(u64::from(self.p99_ms))
    }

    /// The stored row, while pending.
    pub fn pending_row(&self) -> Option<&VerdictRow> {
        self.pending.as_deref()
    }

    pub fn is_pending(&self) -> bool {
        self.outcome.is_pending()
    }

    pub fn is_final(&self) -> bool {
        !self.is_pending()
    }

    /// Held (pending, indeterminate, unreached): its numbers prove nothing.
    pub fn is_held(&self) -> bool {
        matches!(self.outcome, Outcome::Pending | Outcome::Indeterminate | Outcome::Unreached)
    }

    /// Messages lost, as the verdict had it (exact where the sketches named them all).
    pub fn missing(&self) -> u64 {
        (self.upstream_count + self.extra).saturating_sub(self.count)
    }

    /// Extra copies downstream, as the verdict had it.
    pub fn extra(&self) -> u64 {
        self.extra
    }

    /// The first named messages and how many were named in all.
    pub fn named(&self) -> Option<(&[NamedMessage], u64)> {
        self.named.as_deref().map(|n| (n.messages.as_slice(), n.total))
    }

    /// Missing / upstream count, as the verdict had it.
    pub fn loss_ratio(&self) -> f64 {
        ratio(self.missing(), self.upstream_count)
    }

    /// Extra / upstream count, as the verdict had it.
    pub fn duplicate_ratio(&self) -> f64 {
        ratio(self.extra, self.upstream_count)
    }

    /// Whether this bucket breaches `kind` by the absolute thresholds; nothing while held.
    pub fn breaches(&self, kind: kaudit_alerting::AlertKind, t: &Thresholds) -> bool {
        use kaudit_alerting::AlertKind;
        !self.is_held()
            && match kind {
                AlertKind::Loss => self.loss_ratio() > t.loss_ratio,
                AlertKind::Duplicates => self.duplicate_ratio() > t.duplicate_ratio,
                AlertKind::ContentMismatch => self.outcome == Outcome::ContentMismatch,
                AlertKind::MissingTier => self.outcome == Outcome::MissingTier,
                AlertKind::Delay => self.delayed(),
                AlertKind::Lag | AlertKind::TierDown | AlertKind::Flood => false,
            }
    }
}

/// `n` of `of`, where anything of nothing is everything (as `evaluate` has it).
fn ratio(n: u64, of: u64) -> f64 {
    if of == 0 { if n == 0 { 0.0 } else { 1.0 } } else { n as f64 / of as f64 }
}

/// The named messages a bucket's alert shows.
#[derive(Debug, Clone, PartialEq)]
struct NamedList {
    messages: Vec<NamedMessage>,
    total: u64,
}

/// A stored row's digest, its evaluation time left out.
fn row_digest(r: &VerdictRow) -> u64 {
    let mut h = DefaultHasher::new();
    (&r.topic, r.bucket_start_ms, &r.tier, &r.upstream_tier, r.kind, r.upstream_count, r.count).hash(&mut h);
    (r.lost_fingerprint, r.p99_ms, &r.detail).hash(&mut h);
    h.finish()
}

/// One edge's remembered verdicts, by bucket, in bucket order.
#[derive(Debug, Default)]
pub struct EdgeRecall {
    buckets: Vec<(EpochMillis, Recalled)>,
}

impl EdgeRecall {
    /// Built from decided verdicts (tests and tools).
    pub fn from_verdicts<'a>(verdicts: impl IntoIterator<Item = &'a EdgeVerdict>) -> Self {
        let mut recall = Self::default();
        for v in verdicts {
            recall.insert(v.bucket_start_ms, Recalled::decided(v.to_row(0)));
        }
        recall
    }

    fn position(&self, bucket: EpochMillis) -> Result<usize, usize> {
        self.buckets.binary_search_by_key(&bucket, |(b, _)| *b)
    }

    pub fn get(&self, bucket: EpochMillis) -> Option<&Recalled> {
        self.position(bucket).ok().map(|i| &self.buckets[i].1)
    }

    /// Remember `recalled` for `bucket`, replacing what was.
    pub fn insert(&mut self, bucket: EpochMillis, recalled: Recalled) {
        match self.position(bucket) {
            Ok(i) => self.buckets[i].1 = recalled,
            Err(i) => self.buckets.insert(i, (bucket, recalled)),
        }
    }

    /// A verdict was decided for `bucket` whose stored row says the same: remember it as decided.
    pub fn decided_known(&mut self, bucket: EpochMillis) {
        if let Ok(i) = self.position(bucket) {
            self.buckets[i].1.flags |= DECIDED;
        }
    }

    /// Remember `recalled` for `bucket` unless something is remembered for it already.
    pub fn insert_if_absent(&mut self, bucket: EpochMillis, recalled: Recalled) {
        if let Err(i) = self.position(bucket) {
            self.buckets.insert(i, (bucket, recalled));
        }
    }

    /// Every bucket remembered, stored or decided.
    pub fn all(&self) -> impl DoubleEndedIterator<Item = (EpochMillis, &Recalled)> {
        self.buckets.iter().map(|(b, r)| (*b, r))
    }

    /// The buckets decided in this run: what the alerts read.
    pub fn verdicts(&self) -> impl DoubleEndedIterator<Item = (EpochMillis, &Recalled)> {
        self.all().filter(|(_, r)| r.is_decided())
    }

    /// The decided verdict of `bucket`.
    pub fn verdict(&self, bucket: EpochMillis) -> Option<&Recalled> {
        self.get(bucket).filter(|r| r.is_decided())
    }

    /// The decided verdicts of the buckets in `range`.
    pub fn verdicts_in(&self, range: impl RangeBounds<EpochMillis>) -> impl Iterator<Item = (EpochMillis, &Recalled)> {
        self.verdicts().filter(move |(b, _)| range.contains(b))
    }

    /// How many buckets are remembered, decided or not.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Forget the buckets starting before `first`, and give back what they held.
    pub fn forget_before(&mut self, first: EpochMillis) {
        let keep_from = self.buckets.partition_point(|(b, _)| *b < first);
        if keep_from > 0 {
            self.buckets.drain(..keep_from);
            if self.buckets.capacity() > 2 * self.buckets.len() + 8 {
                self.buckets.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaudit_schema::VerdictKind;

    fn row(bucket: EpochMillis, outcome: Outcome, count: u64) -> VerdictRow {
        VerdictRow {
            topic: "t".into(),
            bucket_start_ms: bucket,
            tier: "c".into(),
            upstream_tier: "p".into(),
            kind: VerdictKind::new(outcome, false),
            upstream_count: 10,
            count,
            lost_fingerprint: None,
            p99_ms: Some(3),
            evaluated_at_ms: 1,
            detail: None,
        }
    }

    #[test]
    fn a_row_is_told_apart_from_a_revision_but_not_from_a_later_copy() {
        let r = Recalled::stored(row(0, Outcome::Loss, 9));
        assert!(r.stores(&VerdictRow { evaluated_at_ms: 99, ..row(0, Outcome::Loss, 9) }), "evaluation time aside");
        assert!(!r.stores(&row(0, Outcome::Complete, 10)));
        assert!(r.pending_row().is_none() && !r.is_decided());
        assert_eq!((r.loss_ratio(), r.duplicate_ratio()), (0.1, 0.0));
        let pending = Recalled::stored(row(0, Outcome::Pending, 0));
        assert_eq!(pending.pending_row().map(|r| r.count), Some(0), "kept while pending");
        assert!(pending.is_held() && !pending.breaches(kaudit_alerting::AlertKind::Loss, &Thresholds::default()));
        assert!(r.breaches(kaudit_alerting::AlertKind::Loss, &Thresholds::default()));
        assert_eq!(std::mem::size_of::<Recalled>(), 64, "what 10,000 topics' windows are made of");
        assert_eq!((r.p99_ms(), r.lost_fingerprint(), r.delayed()), (Some(3), None, false));
    }

    #[test]
    fn buckets_stay_in_order_and_are_forgotten_from_the_front() {
        let mut e = EdgeRecall::default();
        for b in [30, 10, 20] {
            e.insert(b, Recalled::stored(row(b, Outcome::Complete, 10)));
        }
        e.insert_if_absent(20, Recalled::stored(row(20, Outcome::Loss, 1)));
        assert_eq!(e.all().map(|(b, _)| b).collect::<Vec<_>>(), [10, 20, 30]);
        assert_eq!(e.get(20).map(|r| r.outcome), Some(Outcome::Complete), "present: kept");
        assert_eq!(e.verdicts().count(), 0, "stored, none decided");
        e.forget_before(20);
        assert_eq!(e.all().map(|(b, _)| b).collect::<Vec<_>>(), [20, 30]);
    }
}
