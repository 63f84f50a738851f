//! The core's side of CUSUM state at rest, pure like the rest of the core: it says which detector
//! states the store must learn after a pass and takes up the states stored by an earlier run (or
//! another owner of the topic); the driver does the reading and writing.
//!
//! A stored state is a detector's baseline and statistics, the last bucket it observed, and the
//! buckets within the horizon where it alarmed (its alert kind's `cusum_hits`, so a CUSUM-only
//! alert still breaches after a restart). A detector fed by a committed pass is *unsaved* until
//! the driver reports its state stored; a failed write leaves it unsaved, and the next pass writes
//! it again. A restart never feeds a bucket twice: a bucket whose verdict is stored is `Known` and
//! feeds nothing, whether or not the detectors' write after it landed.

use std::collections::{BTreeSet, HashMap};

use kaudit_schema::{CusumStateRow, EpochMillis};

use super::{EngineCore, SIGNALS};
use crate::config::VerifierConfig;
use crate::cusum::{DETECTOR_FORMAT, Detector};

/// What the core knows about the stored side of one topic's detectors.
#[derive(Debug, Default)]
pub(super) struct CusumBook {
    /// The stored states were taken up (once per run, before the topic's first pass commits).
    loaded: bool,
    /// The latest bucket each detector observed, by (tier, signal): its stored row's version.
    last_bucket: HashMap<(String, &'static str), EpochMillis>,
    /// Detectors fed since their state was last stored.
    unsaved: BTreeSet<(String, &'static str)>,
}

impl CusumBook {
    /// The detector of (`tier`, `signal`) observed `bucket`.
    pub(super) fn observed(&mut self, tier: &str, signal: &'static str, bucket: EpochMillis) {
        let key = (tier.to_string(), signal);
        let last = self.last_bucket.entry(key.clone()).or_insert(bucket);
        *last = (*last).max(bucket);
        self.unsaved.insert(key);
    }
}

/// The smallest sigma of a signal's baseline.
pub(super) fn sigma_floor(c: &VerifierConfig, signal: &str) -> f64 {
    if signal == "p99_delay_ms" { c.sigma_floor_delay_ms } else { c.sigma_floor_ratio }
}

impl EngineCore {
    /// Whether `topic`'s stored detector states must be loaded before its next pass: once per run,
    /// the first time the topic is evaluated.
    pub fn cusum_states_to_load(&self, topic: &str) -> bool {
        self.topics.get(topic).is_none_or(|t| !t.cusum.loaded)
    }

    /// Take up `topic`'s stored detector states (as read by the driver): each detector continues
    /// where it stopped, and its alarms within the horizon breach again. Returns why rows were
    /// left out (an unknown signal or format, a damaged state, other baseline settings): those
    /// detectors learn their baseline again.
    pub fn load_cusum_states(&mut self, topic: &str, rows: Vec<CusumStateRow>) -> Vec<String> {
        let c = &self.config;
        let state = self.topics.entry(topic.to_string()).or_default();
        state.cusum.loaded = true;
        let mut skipped = Vec::new();
        for row in rows {
            let Some((signal, kind)) = SIGNALS.into_iter().find(|(s, _)| *s == row.signal) else {
                skipped.push(format!("{}/{}: unknown signal", row.tier, row.signal));
                continue;
            };
            let hits = state.cusum_hits.entry((row.tier.clone(), kind)).or_default();
            for (bucket, h) in &row.hits {
                hits.entry(*bucket).or_insert(*h);
            }
            // Kept also for a state left out, so the new detector's first write replaces it.
            let key = (row.tier, signal);
            let last = state.cusum.last_bucket.entry(key.clone()).or_insert(row.last_bucket_ms);
            *last = (*last).max(row.last_bucket_ms);
            match Detector::from_bytes(row.format, &row.state) {
                Ok(d) if d.has_settings(c.baseline_window, c.baseline_min_samples, sigma_floor(c, signal)) => {
                    state.detectors.entry(key).or_insert(d);
                }
                Ok(_) => skipped.push(format!("{}/{signal}: baseline settings changed", key.0)),
                Err(e) => skipped.push(format!("{}/{signal}: {e}", key.0)),
            }
        }
        skipped
    }

    /// The states to store for `topic`'s detectors fed since their last write, stamped `now`.
    pub fn cusum_states_to_save(&self, topic: &str, now: EpochMillis) -> Vec<CusumStateRow> {
        let Some(state) = self.topics.get(topic) else { return Vec::new() };
        let row = |key: &(String, &'static str)| {
            let detector = state.detectors.get(key)?;
            let kind = SIGNALS.into_iter().find(|(s, _)| *s == key.1)?.1;
            let hits = state.cusum_hits.get(&(key.0.clone(), kind));
            Some(CusumStateRow {
                topic: topic.to_string(),
                tier: key.0.clone(),
                signal: key.1.to_string(),
                format: DETECTOR_FORMAT,
                state: detector.to_bytes(),
                last_bucket_ms: *state.cusum.last_bucket.get(key)?,
                hits: hits.map_or_else(Vec::new, |h| h.iter().map(|(b, h)| (*b, *h)).collect()),
                updated_ms: now,
            })
        };
        state.cusum.unsaved.iter().filter_map(row).collect()
    }

    /// The driver stored `rows` (from [`Self::cusum_states_to_save`]): saved until fed again.
    pub fn cusum_states_saved(&mut self, topic: &str, rows: &[CusumStateRow]) {
        let Some(state) = self.topics.get_mut(topic) else { return };
        state.cusum.unsaved.retain(|(tier, signal)| !rows.iter().any(|r| r.tier == *tier && r.signal == *signal));
    }
}
