//! A mergeable latency sketch with bounded relative error.
//!
//! Backed by an HDR histogram with two significant digits: every recorded value is reported within
//! 1 % of itself (the histogram's sub-buckets are 1/128 wide relative to their magnitude), and two
//! sketches merge exactly by adding their counts. Values are milliseconds; negative latencies (a
//! producer clock ahead of the observer) are recorded as zero and counted in [`LatencySketch::negative`].

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

const SIGNIFICANT_DIGITS: u8 = 2;

/// Latency distribution of `arrival_time - event_time`, in milliseconds.
#[derive(Clone, Default)]
pub struct LatencySketch {
    /// Allocated on first record: most tallies in memory are for a few buckets, and an empty
    /// sketch should cost nothing to create, merge or serialise.
    hist: Option<Box<Histogram<u64>>>,
    negative: u64,
}

/// Quantiles read from a sketch, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

/// The sketch's serialised form could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("corrupt latency sketch: {0}")]
pub struct SketchDecodeError(String);

impl LatencySketch {
    /// Record one latency, in milliseconds.
    #[inline]
    pub fn record(&mut self, latency_ms: i64) {
        let value = if latency_ms < 0 {
            self.negative += 1;
            0
        } else {
            latency_ms as u64
        };
        self.histogram_mut().record(value).expect("auto-resizing histogram accepts any u64");
    }

    /// Fold `other` into `self`; exact, associative and commutative.
    pub fn merge(&mut self, other: &LatencySketch) {
        self.negative += other.negative;
        if let Some(theirs) = &other.hist {
            self.histogram_mut().add(theirs.as_ref()).expect("auto-resizing histogram accepts any range");
        }
    }

    /// Number of latencies recorded.
    pub fn len(&self) -> u64 {
        self.hist.as_ref().map_or(0, |h| h.len())
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many recorded latencies were negative (clock skew) and were counted as zero.
    pub fn negative(&self) -> u64 {
        self.negative
    }

    /// The latency at quantile `q` (0.0..=1.0), within 1 %; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let h = self.hist.as_ref().filter(|h| !h.is_empty())?;
        Some(h.value_at_quantile(q))
    }

    /// p50, p95, p99 and max; `None` when empty.
    pub fn quantiles(&self) -> Option<Quantiles> {
        let h = self.hist.as_ref().filter(|h| !h.is_empty())?;
        Some(Quantiles {
            p50: h.value_at_quantile(0.50),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        })
    }

    /// Serialise to bytes: the negative count (8 bytes, big endian) then HDR's V2 encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.negative.to_be_bytes().to_vec();
        if let Some(h) = &self.hist {
            V2Serializer::new().serialize(h.as_ref(), &mut out).expect("writing to a Vec cannot fail");
        }
        out
    }

    /// Read back what [`LatencySketch::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SketchDecodeError> {
        let (neg, rest) =
            bytes.split_first_chunk::<8>().ok_or_else(|| SketchDecodeError("shorter than its 8-byte header".into()))?;
        let hist = if rest.is_empty() {
            None
        } else {
            let mut h: Histogram<u64> =
                Deserializer::new().deserialize(&mut &rest[..]).map_err(|e| SketchDecodeError(format!("{e:?}")))?;
            h.auto(true);
            Some(Box::new(h))
        };
        Ok(Self { hist, negative: u64::from_be_bytes(*neg) })
    }

    #[inline]
    fn histogram_mut(&mut self) -> &mut Histogram<u64> {
        self.hist
            .get_or_insert_with(|| Box::new(Histogram::new(SIGNIFICANT_DIGITS).expect("2 significant digits is valid")))
    }
}

impl PartialEq for LatencySketch {
    fn eq(&self, other: &Self) -> bool {
        if self.negative != other.negative || self.len() != other.len() {
            return false;
        }
        match (&self.hist, &other.hist) {
            (Some(a), Some(b)) => a
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .eq(b.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value()))),
            _ => true, // both empty: len() matched at zero
        }
    }
}

impl Eq for LatencySketch {}

impl std::fmt::Debug for LatencySketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencySketch")
            .field("len", &self.len())
            .field("negative", &self.negative)
            .field("quantiles", &self.quantiles())
            .finish()
    }
}

impl Serialize for LatencySketch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for LatencySketch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = Deserialize::deserialize(d)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact_quantile(sorted: &[i64], q: f64) -> i64 {
        // HDR's definition: the smallest value with at least ceil(q * n) values at or below it.
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    proptest! {
        /// Invariant: every quantile read back is within 1 % of the exact quantile of the input.
        #[test]
        fn quantiles_within_one_percent(mut values in prop::collection::vec(0i64..10_000_000, 1..2000)) {
            let mut s = LatencySketch::default();
            for v in &values { s.record(*v); }
            values.sort_unstable();
            for q in [0.5, 0.95, 0.99, 1.0] {
                let exact = exact_quantile(&values, q) as f64;
                let got = s.quantile(q).unwrap() as f64;
                prop_assert!((got - exact).abs() <= exact * 0.01 + 1.0, "q={q} exact={exact} got={got}");
            }
        }

        /// Invariant: merging sketches equals recording all values into one, in any grouping.
        #[test]
        fn merge_equals_union(a in prop::collection::vec(-100i64..1_000_000, 0..300),
                              b in prop::collection::vec(-100i64..1_000_000, 0..300)) {
            let mut sa = LatencySketch::default();
            a.iter().for_each(|v| sa.record(*v));
            let mut sb = LatencySketch::default();
            b.iter().for_each(|v| sb.record(*v));
            let mut all = LatencySketch::default();
            a.iter().chain(&b).for_each(|v| all.record(*v));
            let mut ab = sa.clone();
            ab.merge(&sb);
            let mut ba = sb.clone();
            ba.merge(&sa);
            prop_assert_eq!(&ab, &all);
            prop_assert_eq!(&ba, &all);
        }

        /// Invariant: bytes round-trip to an equal sketch.
        #[test]
        fn bytes_round_trip(a in prop::collection::vec(-5i64..100_000_000, 0..300)) {
            let mut s = LatencySketch::default();
            a.iter().for_each(|v| s.record(*v));
            let back = LatencySketch::from_bytes(&s.to_bytes()).unwrap();
            prop_assert_eq!(back.quantiles(), s.quantiles());
            prop_assert_eq!(&back, &s);
        }
    }

    #[test]
    fn negative_latency_counts_as_zero() {
        let mut s = LatencySketch::default();
        s.record(-40);
        s.record(10);
        assert_eq!(s.negative(), 1);
        assert_eq!(s.quantile(0.0), Some(0));
        assert_eq!(s.quantiles().unwrap().max, 10);
    }

    #[test]
    fn empty_sketch_has_no_quantiles_and_tiny_encoding() {
        let s = LatencySketch::default();
        assert_eq!(s.quantiles(), None);
        assert_eq!(s.to_bytes().len(), 8);
        assert!(LatencySketch::from_bytes(&[1, 2]).is_err());
        assert!(LatencySketch::from_bytes(&[0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9]).is_err());
    }
}
