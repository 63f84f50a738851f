//! The verifier's records at rest: verdicts, alert state and the notification outbox.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bucket::EpochMillis;

/// What a comparison of a tier with its upstream tier found for one bucket, without the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Counts and fingerprint aggregates all equal.
    Complete,
    /// The downstream tier counted fewer messages.
    Loss,
    /// The downstream tier counted more messages.
    Duplicates,
    /// Equal counts, different fingerprint aggregates.
    ContentMismatch,
    /// A tier expected to report had no rows although it reported progress past the bucket.
    MissingTier,
    /// A tier has not got past the bucket yet (its watermark is before the bucket's end): nothing
    /// can be said yet. Revised once it has.
    Pending,
    /// An agent instance feeding the edge vanished without its final flush while it still had
    /// the bucket open: its last interval's counts are unknown, so a difference proves nothing.
    Indeterminate,
    /// A tier never got past the bucket within the lateness horizon: the final word on it.
    Unreached,
}

impl Outcome {
    /// Every outcome, in declaration order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Complete,
        Outcome::Loss,
        Outcome::Duplicates,
        Outcome::ContentMismatch,
        Outcome::MissingTier,
        Outcome::Pending,
        Outcome::Indeterminate,
        Outcome::Unreached,
    ];

    /// The stored name, also the `kind` label of `kaudit_verifier_verdicts_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Loss => "loss",
            Outcome::Duplicates => "duplicates",
            Outcome::ContentMismatch => "content_mismatch",
            Outcome::MissingTier => "missing_tier",
            Outcome::Pending => "pending",
            Outcome::Indeterminate => "indeterminate",
            Outcome::Unreached => "unreached",
        }
    }

    /// Whether the verdict may still change because a tier has not got past the bucket.
    pub fn is_pending(self) -> bool {
        self == Outcome::Pending
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verdict's kind as stored and served: the outcome, flagged `+delay` when the downstream tier's
/// p99 latency was also over the threshold (`complete`, `loss+delay`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VerdictKind {
    pub outcome: Outcome,
    /// The downstream tier's p99 latency was over the delay threshold.
    pub delayed: bool,
}

impl VerdictKind {
    pub const fn new(outcome: Outcome, delayed: bool) -> Self {
        Self { outcome, delayed }
    }
}

impl From<Outcome> for VerdictKind {
    fn from(outcome: Outcome) -> Self {
        Self { outcome, delayed: false }
    }
}

const DELAY_SUFFIX: &str = "+delay";

impl fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.outcome.as_str())?;
        if self.delayed { f.write_str(DELAY_SUFFIX) } else { Ok(()) }
    }
}

/// A stored verdict kind that names no known outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown verdict kind {0:?}")]
pub struct UnknownVerdictKind(pub String);

impl FromStr for Outcome {
    type Err = UnknownVerdictKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s).ok_or_else(|| UnknownVerdictKind(s.to_string()))
    }
}

impl FromStr for VerdictKind {
    type Err = UnknownVerdictKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (base, delayed) = s.strip_suffix(DELAY_SUFFIX).map_or((s, false), |base| (base, true));
        let outcome = base.parse().map_err(|_| UnknownVerdictKind(s.to_string()))?;
        Ok(Self { outcome, delayed })
    }
}

impl Serialize for VerdictKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VerdictKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// One stored verdict: a tier against its upstream tier for one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictRow {
    pub topic: String,
    pub bucket_start_ms: EpochMillis,
    pub tier: String,
    pub upstream_tier: String,
    /// Stored as its string: `complete`, `loss`, `duplicates`, `content_mismatch`, `missing_tier`,
    /// `pending`, `indeterminate`, `unreached`, and `+delay` when the bucket is also late.
    pub kind: VerdictKind,
    pub upstream_count: u64,
    pub count: u64,
    /// The lost message's fingerprint when exactly one was lost.
    pub lost_fingerprint: Option<u64>,
    pub p99_ms: Option<u64>,
    pub evaluated_at_ms: EpochMillis,
    /// Why a verdict is pending, indeterminate or unreached; `None` for the others.
    pub detail: Option<VerdictDetail>,
}

/// What a verdict that is not a comparison rests on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct VerdictDetail {
    /// The tier that has not got past the bucket (pending, unreached).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behind_tier: Option<String>,
    /// How far that tier's watermark is before the bucket's end, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<i64>,
    /// Agent instances that vanished without their final flush while holding the bucket open
    /// (indeterminate), with their last heartbeat.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vanished: Vec<VanishedAgent>,
    /// The messages the tiers' sketches name, on a comparison that differs (both tiers kept
    /// sketches): at most the first [`NamedDifferences::KEPT`] with a verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub named: Option<NamedDifferences>,
}

/// What subtracting the downstream tier's sketch from the upstream's named on one edge of one
/// bucket (`kaudit_schema::difference`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct NamedDifferences {
    /// Every difference was named: `lost`, `extra` and `altered` are exact. Otherwise there were
    /// more than the sketch could name, and they count the messages named (a correct part).
    pub complete: bool,
    /// Messages upstream has and downstream has not (copies), altered ones aside.
    pub lost: u64,
    /// Extra copies downstream (duplicates, or messages upstream never counted), altered aside.
    pub extra: u64,
    /// Locators where the two tiers hold different content (one message in place of another).
    pub altered: u64,
    /// Messages named in all; `messages` may hold only the first of them.
    pub total: u64,
    /// The named messages: altered first, then lost, then extra, each by partition and offset.
    pub messages: Vec<NamedMessage>,
}

impl NamedDifferences {
    /// Named messages kept with a stored verdict (the API and `kaudit lost` name them all).
    pub const KEPT: usize = 100;
}

/// One named message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NamedMessage {
    pub kind: NamedKind,
    /// Its fingerprint, 16 hex digits.
    pub fingerprint: String,
    /// Copies one tier has more of than the other (more than 1: several duplicates of it).
    pub copies: u64,
    /// Where it lives in Kafka, when its tier recorded that and the sketch could verify it:
    /// upstream's copy for `lost` and `altered`, the extra copy for `extra`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// `altered`: the fingerprint downstream holds at that partition and offset instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
}

/// What a named message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedKind {
    /// Altered: downstream has other content at its partition and offset.
    Altered,
    /// Lost: upstream counted it, downstream did not.
    Lost,
    /// An extra copy downstream.
    Extra,
}

impl NamedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NamedKind::Altered => "altered",
            NamedKind::Lost => "lost",
            NamedKind::Extra => "extra",
        }
    }
}

/// An agent instance that stopped heartbeating without a clean stop.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VanishedAgent {
    pub agent_id: String,
    pub tier: String,
    pub last_heartbeat_ms: EpochMillis,
}

/// An alert's last known state, by dedup key. `body` is the alert as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub dedup_key: String,
    /// `firing` or `resolved`.
    pub state: String,
    pub body: String,
    pub updated_at_ms: EpochMillis,
}

/// A notification waiting for a sink, delivered in `seq` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub sink: String,
    pub seq: i64,
    pub dedup_key: String,
    /// The notification, as JSON; the sink renders it for its receiver.
    pub payload: String,
    pub attempts: u32,
}

/// One CUSUM detector of the verifier at rest, per (topic, tier, signal), so a restart or a new
/// owner of the topic continues its baseline and statistic. Stores keep, per key, the row with the
/// latest `last_bucket_ms`: a state written for an older bucket never replaces one for a newer, and
/// writing the same state twice is harmless.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CusumStateRow {
    pub topic: String,
    /// The downstream tier of the edge.
    pub tier: String,
    /// `loss_ratio`, `duplicate_ratio` or `p99_delay_ms`.
    pub signal: String,
    /// How `state` is encoded; the verifier reads the formats it knows and learns the rest again.
    pub format: u32,
    /// The detector (baseline window, held values, statistics), encoded by the verifier.
    pub state: Vec<u8>,
    /// The last bucket the detector observed: the row's version.
    pub last_bucket_ms: EpochMillis,
    /// Buckets within the lateness horizon where the detector alarmed upward, with the decision
    /// interval then, in bucket order: what keeps a CUSUM-only alert firing across a restart.
    pub hits: Vec<(EpochMillis, f64)>,
    /// When the verifier wrote the row, ms.
    pub updated_ms: EpochMillis,
}

impl CusumStateRow {
    /// `hits` as stored: JSON `[[bucket_start_ms, h], ...]`.
    pub(crate) fn hits_text(&self) -> String {
        serde_json::to_string(&self.hits).expect("pairs of numbers serialize")
    }

    /// `hits` from their stored text.
    pub(crate) fn parse_hits(topic: &str, text: &str) -> Result<Vec<(EpochMillis, f64)>, crate::StoreError> {
        serde_json::from_str(text)
            .map_err(|e| crate::StoreError::Corrupt { topic: topic.into(), reason: format!("cusum hits: {e}") })
    }
}

/// Who wrote verdicts of one bucket of a topic, in which tenure of the topic's shard (sharded
/// verifiers only): one row per (topic, bucket, epoch, owner), so a check can prove that no
/// bucket's verdicts were written by two instances in one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VerdictOwnerRow {
    pub topic: String,
    pub bucket_start_ms: EpochMillis,
    /// The tenure of the topic's shard the verdicts were written in: it grows with each hand-over.
    pub epoch: i64,
    /// The verifier instance that wrote them.
    pub owner: String,
    /// When the owner last wrote verdicts of the bucket in that epoch, ms.
    pub written_ms: EpochMillis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_kinds_read_and_write_the_stored_strings() {
        let names = ["complete", "loss", "duplicates", "content_mismatch", "missing_tier"];
        for (outcome, name) in Outcome::ALL.into_iter().zip(names) {
            for delayed in [false, true] {
                let kind = VerdictKind::new(outcome, delayed);
                let text = if delayed { format!("{name}+delay") } else { name.to_string() };
                assert_eq!(kind.to_string(), text);
                assert_eq!(text.parse::<VerdictKind>(), Ok(kind));
                assert_eq!(serde_json::to_string(&kind).unwrap(), format!("{text:?}"));
                assert_eq!(serde_json::from_str::<VerdictKind>(&format!("{text:?}")).unwrap(), kind);
            }
        }
        for bad in ["", "+delay", "lost", "loss+delay+delay", "Loss", "loss +delay"] {
            assert_eq!(bad.parse::<VerdictKind>(), Err(UnknownVerdictKind(bad.to_string())), "{bad}");
        }
    }
}
