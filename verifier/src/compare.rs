//! Comparing a tier's merged tally for one bucket with its upstream tier's.

use kaudit_schema::{Outcome, Tally};
use serde::{Deserialize, Serialize};

/// What a downstream tier's bucket says about its upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verdict {
    /// Counts, XOR and sum all equal.
    Complete,
    /// Downstream counted fewer messages. With exactly one lost, `fingerprint` names it.
    Loss { missing: u64, fingerprint: Option<u64> },
    /// Downstream counted more: duplicates (or foreign messages).
    Duplicates { extra: u64 },
    /// Equal counts but different fingerprint aggregates: a message replaced or altered.
    ContentMismatch,
    /// A tier expected to report has no rows for the bucket (agent down or misconfigured).
    MissingTier { side: Side },
}

impl Verdict {
    /// The verdict without its numbers, as stored in a [`kaudit_schema::VerdictKind`].
    pub fn outcome(&self) -> Outcome {
        match self {
            Verdict::Complete => Outcome::Complete,
            Verdict::Loss { .. } => Outcome::Loss,
            Verdict::Duplicates { .. } => Outcome::Duplicates,
            Verdict::ContentMismatch => Outcome::ContentMismatch,
            Verdict::MissingTier { .. } => Outcome::MissingTier,
        }
    }
}

/// Which side of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Upstream,
    Downstream,
}

/// Compare two tiers of which either may have no rows at all for the bucket.
pub fn compare_tiers(upstream: Option<&Tally>, downstream: Option<&Tally>) -> Verdict {
    match (upstream, downstream) {
        (Some(up), Some(down)) => compare(up, down),
        (Some(_), None) => Verdict::MissingTier { side: Side::Downstream },
        (None, Some(_)) => Verdict::MissingTier { side: Side::Upstream },
        (None, None) => Verdict::Complete,
    }
}

/// Compare `downstream` with `upstream` for the same topic and bucket.
///
/// With one message lost, `up.fp_sum - down.fp_sum` is exactly its fingerprint, but only if the
/// remaining messages are the same; the XOR difference must agree, which it does exactly when
/// the set difference is that one message (or an astronomically unlikely collision).
pub fn compare(upstream: &Tally, downstream: &Tally) -> Verdict {
    use std::cmp::Ordering::*;
    match downstream.count.cmp(&upstream.count) {
        Less => {
            let missing = upstream.count - downstream.count;
            let sum_diff = upstream.fp_sum.wrapping_sub(downstream.fp_sum);
            let xor_diff = upstream.fp_xor ^ downstream.fp_xor;
            let fingerprint = (missing == 1 && sum_diff == xor_diff).then_some(sum_diff);
            Verdict::Loss { missing, fingerprint }
        }
        Greater => Verdict::Duplicates { extra: downstream.count - upstream.count },
        Equal if downstream.fp_xor == upstream.fp_xor && downstream.fp_sum == upstream.fp_sum => Verdict::Complete,
        Equal => Verdict::ContentMismatch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tally(fps: &[u64]) -> Tally {
        let mut t = Tally::default();
        fps.iter().for_each(|fp| t.add(*fp, 1));
        t
    }

    #[test]
    fn the_verdict_table() {
        let up = tally(&[1, 2, 3]);
        assert_eq!(compare(&up, &tally(&[3, 1, 2])), Verdict::Complete);
        assert_eq!(compare(&up, &tally(&[1, 3])), Verdict::Loss { missing: 1, fingerprint: Some(2) });
        assert_eq!(compare(&up, &tally(&[1])), Verdict::Loss { missing: 2, fingerprint: None });
        assert_eq!(compare(&up, &tally(&[1, 2, 3, 3])), Verdict::Duplicates { extra: 1 });
        assert_eq!(compare(&up, &tally(&[1, 2, 4])), Verdict::ContentMismatch);
    }

    #[test]
    fn a_tier_without_rows_is_missing_not_a_loss_or_duplicates() {
        let t = tally(&[1]);
        assert_eq!(compare_tiers(Some(&t), None), Verdict::MissingTier { side: Side::Downstream });
        assert_eq!(compare_tiers(None, Some(&t)), Verdict::MissingTier { side: Side::Upstream });
        assert_eq!(compare_tiers(Some(&t), Some(&t)), Verdict::Complete);
    }

    proptest! {
        /// Invariant: dropping any one message of any bucket yields a loss naming exactly it.
        #[test]
        fn a_single_loss_names_its_fingerprint(fps in prop::collection::vec(any::<u64>(), 1..200), pick in any::<prop::sample::Index>()) {
            let lost = pick.index(fps.len());
            let down: Vec<u64> = fps.iter().enumerate().filter(|(i, _)| *i != lost).map(|(_, f)| *f).collect();
            prop_assert_eq!(compare(&tally(&fps), &tally(&down)), Verdict::Loss { missing: 1, fingerprint: Some(fps[lost]) });
        }
    }
}
