//! Each tier's progress and liveness at one instant, from the progress and heartbeat rows its
//! agents wrote. Pure: rows and `now` in, watermarks and liveness out.
//!
//! * A tier's **watermark** is the minimum of what its counted streams have reached
//!   ([`ProgressRow::reached_ms`]). Counted are all partition streams (a partition whose owner
//!   died keeps holding the tier back at its last report until the next owner reports) and the
//!   agent streams of live instances (a stream without a heartbeat counts as live). The agent
//!   stream of an instance that stopped cleanly is finished and left out altogether. When no
//!   stream is counted and none finished (every instance vanished), the watermark is the furthest
//!   any of them got, until a successor reports (the buckets they held are indeterminate, the tier
//!   is down). A tier with no counted streams and a finished one, or with no progress rows at all,
//!   has no watermark: time alone decides for it, as before progress existed.
//! * An instance has **vanished** when it is silent for longer than the agent timeout without a
//!   clean stop and does not resume exactly (a tap does): the buckets from its `open_from_ms` to
//!   the latest moment it can have died (last heartbeat + agent timeout) may lack its last
//!   interval's counts.
//! * A tier is **down** when it was heard from within the lateness window, no instance of it is
//!   live, and the one heard from last vanished (rather than stopped cleanly).

use std::collections::BTreeMap;

use kaudit_schema::{EpochMillis, HeartbeatRow, ProgressRow, StreamId, VanishedAgent};

/// What the agents of one tier say at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierProgress {
    /// `None`: the tier reports no progress, so time alone decides.
    pub watermark_ms: Option<EpochMillis>,
    /// Instances alive now (not stopped, heard from within the agent timeout).
    pub live: usize,
    /// Instances that vanished without a clean stop and do not resume, with the buckets they
    /// may have counted into after their last flush: `(instance, from_ms, until_ms)`, from the
    /// oldest bucket changed in that flush to the latest moment they can have died (their last
    /// heartbeat plus the agent timeout: had they lived longer, they would have heartbeated).
    pub vanished: Vec<(VanishedAgent, EpochMillis, EpochMillis)>,
    /// The tier is down: the last heartbeat of the instance heard from last, which vanished.
    pub down_since_ms: Option<EpochMillis>,
    /// The instance heard from last (within the lateness window) stopped cleanly.
    pub last_stopped_cleanly: bool,
}

/// Every tier of one topic that has progress or heartbeat rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicProgress {
    pub now_ms: EpochMillis,
    pub tiers: BTreeMap<String, TierProgress>,
}

/// How long instances are waited for, ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Silent longer than this without a clean stop: crashed.
    pub agent_timeout_ms: i64,
    /// Heard from within this: recent enough to call its tier down.
    pub window_ms: i64,
}

impl TopicProgress {
    /// The tiers' state at `now` per the latest rows of one topic.
    pub fn new(progress: &[ProgressRow], heartbeats: &[HeartbeatRow], now: EpochMillis, l: Liveness) -> Self {
        let mut tiers: BTreeMap<String, TierProgress> = BTreeMap::new();
        let mut by_tier: BTreeMap<&str, Vec<&HeartbeatRow>> = BTreeMap::new();
        heartbeats.iter().for_each(|h| by_tier.entry(&h.tier).or_default().push(h));
        for (tier, beats) in &by_tier {
            tiers.insert(tier.to_string(), liveness(beats, now, l));
        }
        let mut streams: BTreeMap<&str, Vec<&ProgressRow>> = BTreeMap::new();
        progress.iter().for_each(|p| streams.entry(&p.tier).or_default().push(p));
        for (tier, rows) in streams {
            let beat = |agent: &str| by_tier.get(tier).and_then(|b| b.iter().find(|h| h.agent_id == agent).copied());
            // An agent stream whose instance stopped cleanly is finished: it reported everything
            // it will ever report, so it holds nothing back.
            let finished = |r: &ProgressRow| match &r.stream {
                StreamId::Partition(_) => false,
                StreamId::Agent(agent) => beat(agent).is_some_and(|h| h.stopped),
            };
            let any_finished = rows.iter().any(|r| finished(r));
            let unfinished: Vec<&ProgressRow> = rows.into_iter().filter(|r| !finished(r)).collect();
            let counted = unfinished.iter().filter(|r| match &r.stream {
                StreamId::Partition(_) => true,
                StreamId::Agent(agent) => beat(agent).is_none_or(|h| h.is_live(now, l.agent_timeout_ms)),
            });
            // With no live stream: a tier that ended with a clean stop holds nothing back; one
            // whose last instances all vanished stays where they got to until a successor reports.
            let watermark = counted
                .map(|r| r.reached_ms())
                .min()
                .or_else(|| if any_finished { None } else { unfinished.iter().map(|r| r.reached_ms()).max() });
            tiers.entry(tier.to_string()).or_default().watermark_ms = watermark;
        }
        Self { now_ms: now, tiers }
    }

    pub fn tier(&self, tier: &str) -> Option<&TierProgress> {
        self.tiers.get(tier)
    }

    /// The tier's watermark; `None` when it reports no progress.
    pub fn watermark(&self, tier: &str) -> Option<EpochMillis> {
        self.tiers.get(tier)?.watermark_ms
    }

    /// How far `tier` is behind `upstream` (or, when the upstream reports no progress, the clock),
    /// with the tier's watermark; `None` when the tier reports no progress.
    pub fn lag(&self, upstream: &str, tier: &str) -> Option<Lag> {
        let behind_since_ms = self.watermark(tier)?;
        let ahead = self.watermark(upstream).unwrap_or(self.now_ms);
        Some(Lag { lag_ms: (ahead - behind_since_ms).max(0), behind_since_ms, ahead_ms: ahead })
    }

    /// The vanished instances of `tiers` that held the bucket starting at `bucket_start` open.
    pub fn vanished_at(&self, tiers: [&str; 2], bucket_start: EpochMillis) -> Vec<VanishedAgent> {
        let held = |(_, from, until): &(VanishedAgent, EpochMillis, EpochMillis)| {
            *from <= bucket_start && bucket_start <= *until
        };
        let mut out: Vec<VanishedAgent> = tiers
            .iter()
            .filter_map(|t| self.tiers.get(*t))
            .flat_map(|t| t.vanished.iter().filter(|v| held(v)).map(|(a, _, _)| a.clone()))
            .collect();
        out.sort_by(|a, b| (&a.tier, &a.agent_id).cmp(&(&b.tier, &b.agent_id)));
        out.dedup();
        out
    }
}

/// How far a tier is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    pub lag_ms: i64,
    /// The tier's watermark: it has counted nothing of what came after.
    pub behind_since_ms: EpochMillis,
    /// Where its upstream (or the clock) is.
    pub ahead_ms: EpochMillis,
}

fn liveness(beats: &[&HeartbeatRow], now: EpochMillis, l: Liveness) -> TierProgress {
    let live = beats.iter().filter(|h| h.is_live(now, l.agent_timeout_ms)).count();
    let vanished = beats
        .iter()
        .filter(|h| h.crashed(now, l.agent_timeout_ms) && !h.resumes)
        .filter_map(|h| {
            let agent =
                VanishedAgent { agent_id: h.agent_id.clone(), tier: h.tier.clone(), last_heartbeat_ms: h.heartbeat_ms };
            h.open_from_ms.map(|from| (agent, from, h.heartbeat_ms + l.agent_timeout_ms))
        })
        .collect();
    let last = beats
        .iter()
        .filter(|h| now - h.heartbeat_ms <= l.window_ms)
        .max_by_key(|h| (h.heartbeat_ms, h.started_at_ms, h.agent_id.as_str()));
    let down_since_ms = last.filter(|h| live == 0 && h.crashed(now, l.agent_timeout_ms)).map(|h| h.heartbeat_ms);
    let last_stopped_cleanly = last.is_some_and(|h| h.stopped);
    TierProgress { watermark_ms: None, live, vanished, down_since_ms, last_stopped_cleanly }
}

#[cfg(test)]
mod tests;
