//! When a comparison is not taken at its word: lag is not loss, and a crash is not a duplicate.
//!
//! * **pending**: a tier of the edge has not got past the bucket's end (its watermark is before
//!   it: a watermark means everything with an earlier event time is counted, so a producer whose
//!   oldest in-flight bucket starts at the end has passed the bucket). Only a bucket never judged final can be pending: once both tiers have passed it,
//!   the comparison stands and late rows revise it as before.
//! * **unreached**: the bucket was still pending when it left the lateness window; final.
//! * **indeterminate**: the comparison is not complete and an instance of either tier vanished
//!   without its final flush while it held the bucket open, so the difference proves nothing.
//!   Final; it pages no one. A tap resumes exactly and is never such an instance.
//!
//! Pure: the edge's verdict and the tiers' progress in, a [`Hold`] or none out.

use kaudit_schema::{EpochMillis, Outcome, VanishedAgent, VerdictDetail};
use serde::{Deserialize, Serialize};

use crate::compare::Verdict;
use crate::evaluate::EdgeVerdict;
use crate::progress::TopicProgress;

/// Why an edge's comparison is not its verdict, with what it rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Hold {
    /// `behind_tier` has not got past the bucket: its watermark is `lag_ms` before the bucket's end.
    Pending { behind_tier: String, lag_ms: i64 },
    /// `behind_tier` never got past the bucket within the lateness window.
    Unreached { behind_tier: String, lag_ms: i64 },
    /// These instances vanished while holding the bucket open.
    Indeterminate { vanished: Vec<VanishedAgent> },
}

impl Hold {
    pub fn outcome(&self) -> Outcome {
        match self {
            Hold::Pending { .. } => Outcome::Pending,
            Hold::Unreached { .. } => Outcome::Unreached,
            Hold::Indeterminate { .. } => Outcome::Indeterminate,
        }
    }

    /// The stored detail.
    pub fn detail(&self) -> VerdictDetail {
        match self {
            Hold::Pending { behind_tier, lag_ms } | Hold::Unreached { behind_tier, lag_ms } => VerdictDetail {
                behind_tier: Some(behind_tier.clone()),
                lag_ms: Some(*lag_ms),
                ..VerdictDetail::default()
            },
            Hold::Indeterminate { vanished } => {
                VerdictDetail { vanished: vanished.clone(), ..VerdictDetail::default() }
            }
        }
    }

    /// The hold a stored verdict says it had; `None` for a comparison.
    pub fn from_stored(outcome: Outcome, detail: Option<&VerdictDetail>) -> Option<Hold> {
        let d = detail.cloned().unwrap_or_default();
        let behind = || (d.behind_tier.clone().unwrap_or_default(), d.lag_ms.unwrap_or(0));
        match outcome {
            Outcome::Pending => Some(Hold::Pending { behind_tier: behind().0, lag_ms: behind().1 }),
            Outcome::Unreached => Some(Hold::Unreached { behind_tier: behind().0, lag_ms: behind().1 }),
            Outcome::Indeterminate => Some(Hold::Indeterminate { vanished: d.vanished.clone() }),
            _ => None,
        }
    }

    /// A pending hold made final as the bucket leaves the lateness window; `lag_ms` refreshed
    /// from the tier's watermark now, when it has one.
    pub fn unreached(self, end: EpochMillis, progress: &TopicProgress) -> Hold {
        match self {
            Hold::Pending { behind_tier, lag_ms } => {
                let lag_ms = progress.watermark(&behind_tier).map_or(lag_ms, |wm| end - wm);
                Hold::Unreached { behind_tier, lag_ms }
            }
            other => other,
        }
    }
}

/// The hold on `v` (a bucket ending at `end`), given the tiers' progress; `judged` says whether
/// the edge already has a final verdict for the bucket (then it is never pending again).
pub fn hold_for(v: &EdgeVerdict, end: EpochMillis, progress: &TopicProgress, judged: bool) -> Option<Hold> {
    if !judged && let Some(pending) = pending(v, end, progress) {
        return Some(pending);
    }
    if v.verdict == Verdict::Complete {
        return None;
    }
    let vanished = progress.vanished_at([&v.upstream, &v.tier], v.bucket_start_ms);
    (!vanished.is_empty()).then_some(Hold::Indeterminate { vanished })
}

/// Pending behind the tier of the edge furthest behind whose watermark is before `end` (the
/// downstream tier on a tie).
fn pending(v: &EdgeVerdict, end: EpochMillis, progress: &TopicProgress) -> Option<Hold> {
    [&v.tier, &v.upstream]
        .into_iter()
        .filter_map(|t| Some((progress.watermark(t)?, t)))
        .filter(|(wm, _)| *wm < end)
        .min_by_key(|(wm, _)| *wm)
        .map(|(wm, t)| Hold::Pending { behind_tier: t.clone(), lag_ms: end - wm })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::{Liveness, TierProgress};

    fn verdict(verdict: Verdict) -> EdgeVerdict {
        EdgeVerdict {
            topic: "t".into(),
            bucket_start_ms: 60_000,
            upstream: "producer".into(),
            tier: "consumer".into(),
            verdict,
            upstream_count: 10,
            count: 9,
            loss_ratio: 0.1,
            duplicate_ratio: 0.0,
            p99_ms: None,
            latency: None,
            delayed: false,
            hold: None,
            named: None,
        }
    }

    fn progress(tiers: &[(&str, Option<i64>)]) -> TopicProgress {
        let tiers = tiers
            .iter()
            .map(|(t, wm)| (t.to_string(), TierProgress { watermark_ms: *wm, ..TierProgress::default() }))
            .collect();
        TopicProgress { now_ms: 1_000_000, tiers }
    }

    #[test]
    fn pending_names_the_tier_furthest_behind_until_judged() {
        let v = verdict(Verdict::Loss { missing: 1, fingerprint: None });
        let end = 120_000;
        let p = progress(&[("producer", Some(100_000)), ("consumer", Some(110_000))]);
        assert_eq!(
            hold_for(&v, end, &p, false),
            Some(Hold::Pending { behind_tier: "producer".into(), lag_ms: 20_000 })
        );
        let p = progress(&[("producer", Some(500_000)), ("consumer", Some(end - 1))]);
        assert_eq!(hold_for(&v, end, &p, false), Some(Hold::Pending { behind_tier: "consumer".into(), lag_ms: 1 }));
        let p = progress(&[("producer", Some(500_000)), ("consumer", Some(end))]);
        assert_eq!(hold_for(&v, end, &p, false), None, "both past the end: the comparison stands");
        assert_eq!(hold_for(&v, end, &progress(&[]), false), None, "no progress: time alone decides");
        let behind = progress(&[("consumer", Some(0))]);
        assert_eq!(hold_for(&v, end, &behind, true), None, "judged once: never pending again");
        let unreached = hold_for(&v, end, &behind, false).unwrap().unreached(end, &progress(&[("consumer", Some(5))]));
        assert_eq!(unreached, Hold::Unreached { behind_tier: "consumer".into(), lag_ms: end - 5 });
    }

    #[test]
    fn a_vanished_instance_makes_only_a_difference_indeterminate() {
        let hb = |tier: &str, agent: &str, resumes| kaudit_schema::HeartbeatRow {
            topic: "t".into(),
            tier: tier.into(),
            agent_id: agent.into(),
            started_at_ms: 0,
            heartbeat_ms: 100_000,
            open_from_ms: Some(60_000),
            stopped: false,
            resumes,
            version: 1,
        };
        let liveness = Liveness { agent_timeout_ms: 20_000, window_ms: 3_600_000 };
        let p = TopicProgress::new(&[], &[hb("producer", "p-1", false), hb("broker", "tap", true)], 200_000, liveness);
        let dup = verdict(Verdict::Duplicates { extra: 3 });
        let Some(Hold::Indeterminate { vanished }) = hold_for(&dup, 120_000, &p, false) else { panic!() };
        assert_eq!((vanished.len(), vanished[0].agent_id.as_str(), vanished[0].last_heartbeat_ms), (1, "p-1", 100_000));
        assert_eq!(hold_for(&verdict(Verdict::Complete), 120_000, &p, false), None);
        let hold = Hold::Indeterminate { vanished };
        assert_eq!(Hold::from_stored(Outcome::Indeterminate, Some(&hold.detail())), Some(hold));
        assert_eq!(Hold::from_stored(Outcome::Loss, None), None);
    }
}
