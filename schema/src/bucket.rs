//! Event-time buckets: tumbling windows aligned to the Unix epoch.
//!
//! Every tier puts a message in the same bucket whenever it sees it, because the bucket depends on
//! the message's event time only. That is what makes tiers comparable.

use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (may be negative for pre-1970 event times).
pub type EpochMillis = i64;

/// Width of an event-time bucket, in milliseconds, never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct BucketWidth(NonZeroU64);

impl BucketWidth {
    /// The default width: 60 s, Chaperone's choice and fine enough to localise a fault.
    pub const DEFAULT: BucketWidth = BucketWidth(NonZeroU64::new(60_000).unwrap());

    /// A width of `ms` milliseconds; `None` for zero or widths past `i64::MAX`.
    pub fn from_millis(ms: u64) -> Option<Self> {
        if ms > i64::MAX as u64 {
            return None;
        }
        NonZeroU64::new(ms).map(Self)
    }

    /// The width in milliseconds.
    pub fn as_millis(self) -> i64 {
        self.0.get() as i64
    }

    /// Start of the bucket that holds `t` (floor towards minus infinity, so pre-1970 works).
    #[inline]
    pub fn start_of(self, t: EpochMillis) -> EpochMillis {
        t.div_euclid(self.as_millis()) * self.as_millis()
    }

    /// End (exclusive) of the bucket starting at `start`, saturating at the end of time.
    pub fn end_of(self, start: EpochMillis) -> EpochMillis {
        start.saturating_add(self.as_millis())
    }

    /// Whether `coarser` is a whole multiple of this width, so its buckets are unions of ours.
    pub fn divides(self, coarser: BucketWidth) -> bool {
        coarser.0.get().is_multiple_of(self.0.get())
    }
}

impl Default for BucketWidth {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u64> for BucketWidth {
    type Error = String;
    fn try_from(ms: u64) -> Result<Self, Self::Error> {
        Self::from_millis(ms).ok_or_else(|| format!("bucket width must be 1..=i64::MAX ms, got {ms}"))
    }
}

impl From<BucketWidth> for u64 {
    fn from(w: BucketWidth) -> u64 {
        w.0.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn aligns_to_epoch() {
        let w = BucketWidth::DEFAULT;
        assert_eq!(w.start_of(0), 0);
        assert_eq!(w.start_of(59_999), 0);
        assert_eq!(w.start_of(60_000), 60_000);
        assert_eq!(w.start_of(-1), -60_000);
        assert_eq!(w.end_of(60_000), 120_000);
    }

    #[test]
    fn rejects_zero_width() {
        assert!(BucketWidth::from_millis(0).is_none());
        assert!(BucketWidth::try_from(0u64).is_err());
        assert!(BucketWidth::from_millis(u64::MAX).is_none());
    }

    proptest! {
        /// Invariant: every time falls in exactly the bucket [start, start + width) computed for it,
        /// and a coarser width that is a multiple of ours maps each fine bucket into one coarse one.
        #[test]
        fn bucket_contains_time(t in any::<i32>().prop_map(|v| v as i64 * 1000 + 7), w in 1u64..10_000_000, k in 1u64..100) {
            let width = BucketWidth::from_millis(w).unwrap();
            let start = width.start_of(t);
            prop_assert!(start <= t && t < width.end_of(start));
            prop_assert_eq!(start.rem_euclid(width.as_millis()), 0);
            let coarse = BucketWidth::from_millis(w * k).unwrap();
            prop_assert!(width.divides(coarse));
            prop_assert_eq!(coarse.start_of(start), coarse.start_of(t));
        }
    }
}
