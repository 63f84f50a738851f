//! Per-bucket tallies and their merge.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bucket::{BucketWidth, EpochMillis};
use crate::difference::{DifferenceSketch, Locator};
use crate::sketch::LatencySketch;

/// Everything one agent counted for one (topic, bucket, tier).
///
/// `fp_xor` and `fp_sum` aggregate message fingerprints in an order-independent way: with equal
/// counts, a differing aggregate means a message was replaced or altered; with exactly one message
/// lost, `upstream.fp_sum - downstream.fp_sum` is its fingerprint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Messages counted, including those with a missing or malformed event time.
    pub count: u64,
    /// Payload bytes counted.
    pub bytes: u64,
    /// XOR of fingerprints.
    pub fp_xor: u64,
    /// Wrapping sum of fingerprints.
    pub fp_sum: u64,
    /// Messages without an event time, counted in the bucket of their arrival time.
    pub no_time: u64,
    /// Messages whose event time could not be parsed, counted in the bucket of their arrival time.
    pub malformed: u64,
    /// `arrival_time - event_time` of messages that had a valid event time, in milliseconds.
    pub latency: LatencySketch,
    /// Every message counted, invertibly: what names the messages one tier has and another has
    /// not ([`crate::difference`]). `None` with messages counted: an agent that keeps no sketch,
    /// and then no merge with it has one either (it would name that agent's messages as missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sketch: Option<DifferenceSketch>,
}

impl Tally {
    /// Count one message with fingerprint `fp` and `bytes` of payload.
    #[inline]
    pub fn add(&mut self, fp: u64, bytes: u64) {
        self.add_at(fp, bytes, None);
    }

    /// Count one message, and where it lives in Kafka when the tier knows (its sketch keeps it).
    #[inline]
    pub fn add_at(&mut self, fp: u64, bytes: u64, locator: Option<Locator>) {
        self.count += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        self.fp_xor ^= fp;
        self.fp_sum = self.fp_sum.wrapping_add(fp);
        if let Some(sketch) = &mut self.sketch {
            sketch.insert(fp, locator);
        }
    }

    /// Whether this tally is the identity of merge: nothing counted and no sketch.
    fn is_identity(&self) -> bool {
        self.count == 0 && self.sketch.is_none()
    }

    /// Fold `other` into `self`. Associative and commutative, with `Tally::default()` as identity.
    /// The sketches merge when both have one of one geometry; otherwise the merge has none (a
    /// tally that counted messages without a sketch, or another geometry, leaves nothing exact).
    pub fn merge(&mut self, other: &Tally) {
        if self.is_identity() {
            self.sketch.clone_from(&other.sketch);
        } else if !other.is_identity() {
            let merged = match (&mut self.sketch, &other.sketch) {
                (Some(mine), Some(theirs)) => mine.merge(theirs).is_ok(),
                _ => false,
            };
            if !merged {
                self.sketch = None;
            }
        }
        self.count += other.count;
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.fp_xor ^= other.fp_xor;
        self.fp_sum = self.fp_sum.wrapping_add(other.fp_sum);
        self.no_time += other.no_time;
        self.malformed += other.malformed;
        self.latency.merge(&other.latency);
    }

    /// Merge of any number of tallies.
    pub fn merged<'a>(tallies: impl IntoIterator<Item = &'a Tally>) -> Tally {
        tallies.into_iter().fold(Tally::default(), |mut acc, t| {
            acc.merge(t);
            acc
        })
    }
}

/// Roll fine buckets up to `coarse` ones (10 min, 1 h, 1 d): a merge of every fine bucket that
/// starts inside each coarse one. Exact when `coarse` is a multiple of the fine width.
///
/// ```
/// use kaudit_schema::{BucketWidth, Tally, tally::rollup};
/// let mut a = Tally::default();
/// a.add(1, 10);
/// let mut b = Tally::default();
/// b.add(2, 10);
/// let hour = BucketWidth::from_millis(3_600_000).unwrap();
/// let rolled = rollup([(0, &a), (60_000, &b)], hour);
/// assert_eq!(rolled[&0].count, 2);
/// ```
pub fn rollup<'a>(
    buckets: impl IntoIterator<Item = (EpochMillis, &'a Tally)>,
    coarse: BucketWidth,
) -> BTreeMap<EpochMillis, Tally> {
    let mut out: BTreeMap<EpochMillis, Tally> = BTreeMap::new();
    for (start, tally) in buckets {
        out.entry(coarse.start_of(start)).or_default().merge(tally);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_tally() -> impl Strategy<Value = Tally> {
        prop::collection::vec((any::<u64>(), 0u64..10_000, prop::option::of(-10i64..100_000), 0u8..3), 0..40).prop_map(
            |msgs| {
                let mut t = Tally::default();
                for (fp, bytes, lat, kind) in msgs {
                    t.add(fp, bytes);
                    match (kind, lat) {
                        (1, _) => t.no_time += 1,
                        (2, _) => t.malformed += 1,
                        (_, Some(l)) => t.latency.record(l),
                        _ => {}
                    }
                }
                t
            },
        )
    }

    proptest! {
        /// Invariant: merge is commutative.
        #[test]
        fn merge_commutes(a in arb_tally(), b in arb_tally()) {
            let mut ab = a.clone(); ab.merge(&b);
            let mut ba = b.clone(); ba.merge(&a);
            prop_assert_eq!(ab, ba);
        }

        /// Invariant: merge is associative, and the default tally is its identity.
        #[test]
        fn merge_associates(a in arb_tally(), b in arb_tally(), c in arb_tally()) {
            let mut left = a.clone(); left.merge(&b); left.merge(&c);
            let mut bc = b.clone(); bc.merge(&c);
            let mut right = a.clone(); right.merge(&bc);
            prop_assert_eq!(&left, &right);
            let mut with_identity = left.clone(); with_identity.merge(&Tally::default());
            prop_assert_eq!(with_identity, left);
        }
    }

    proptest! {
        /// Invariant: tallying into 1-minute buckets and rolling up to 10 minutes equals
        /// tallying into 10-minute buckets directly.
        #[test]
        fn rollup_equals_direct_coarse_tally(msgs in prop::collection::vec((0i64..7_200_000, any::<u64>(), 0i64..5_000), 0..300)) {
            let fine = BucketWidth::from_millis(60_000).unwrap();
            let coarse = BucketWidth::from_millis(600_000).unwrap();
            let mut by_fine: BTreeMap<EpochMillis, Tally> = BTreeMap::new();
            let mut direct: BTreeMap<EpochMillis, Tally> = BTreeMap::new();
            for (t, fp, lat) in msgs {
                for (map, w) in [(&mut by_fine, fine), (&mut direct, coarse)] {
                    let tally = map.entry(w.start_of(t)).or_default();
                    tally.add(fp, 3);
                    tally.latency.record(lat);
                }
            }
            prop_assert_eq!(rollup(by_fine.iter().map(|(b, t)| (*b, t)), coarse), direct);
        }
    }

    #[test]
    fn one_lost_message_is_named_by_sum_difference() {
        let fps = [0xdead_beef_u64, u64::MAX - 3, 42, 0x1234_5678_9abc_def0];
        let mut up = Tally::default();
        fps.iter().for_each(|fp| up.add(*fp, 10));
        let mut down = Tally::default();
        fps.iter().filter(|fp| **fp != 42).for_each(|fp| down.add(*fp, 10));
        assert_eq!(up.fp_sum.wrapping_sub(down.fp_sum), 42);
        assert_eq!(up.fp_xor ^ down.fp_xor, 42);
        assert_eq!(up.count - down.count, 1);
    }
}
