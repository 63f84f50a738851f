//! The core's alert decisions and tier gauges, from what the last committed pass remembered: the
//! verdict kinds per edge (`alerts::desired_alert`), `lag` per downstream tier and `tier_down` per
//! tier (`alerts::tier`).

use std::collections::BTreeMap;

use kaudit_alerting::{Alert, AlertKind, AlertState};
use kaudit_schema::EpochMillis;

use super::{AlertUpdate, EngineCore, TopicState};
use crate::alerts::tier::{TierRef, lag_alert, tier_down_alert};
use crate::alerts::{EdgeState, VERDICT_KINDS, desired_alert};
use crate::pipeline::Pipeline;

/// One tier's gauges after a pass; `None` where the tier reports nothing to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct TierGauge {
    pub tier: String,
    /// How far its watermark is behind its upstream's (or the clock), s: a downstream tier that
    /// reports progress.
    pub lag_seconds: Option<f64>,
    /// Instances alive: a tier that reports progress or heartbeats.
    pub agents_live: usize,
}

impl EngineCore {
    /// The alert of every kind on every edge and tier of `topic` as it should be at `now`.
    pub fn alert_updates(&self, topic: &str, pipeline: &Pipeline, now: EpochMillis) -> Vec<AlertUpdate> {
        let Some(state) = self.topics.get(topic) else { return Vec::new() };
        let mut alerts = self.verdict_alerts(topic, pipeline, state, now);
        alerts.extend(self.tier_alerts(topic, pipeline, state, now));
        alerts.into_iter().map(|alert| self.update(alert)).collect()
    }

    fn update(&self, alert: Alert) -> AlertUpdate {
        let previous = self.alerts.get(&alert.dedup_key);
        let transition = previous.is_none_or(|p| p.state != alert.state);
        AlertUpdate { alert, transition }
    }

    fn previous(&self, kind: AlertKind, topic: &str, tier: &str) -> Option<&Alert> {
        self.alerts.get(&Alert::dedup_key(kind, topic, tier))
    }

    /// Loss, duplicates, content mismatch, delay and missing tier, per edge, from its verdicts.
    fn verdict_alerts(&self, topic: &str, pipeline: &Pipeline, state: &TopicState, now: EpochMillis) -> Vec<Alert> {
        let Some(width_ms) = state.width_ms else { return Vec::new() };
        let empty = BTreeMap::new();
        let c = &self.config;
        let mut out = Vec::new();
        for edge in pipeline.edges() {
            let Some(history) = state.edge(&edge.downstream) else { continue };
            for kind in VERDICT_KINDS {
                let cusum = state.cusum_hits.get(&(edge.downstream.clone(), kind)).unwrap_or(&empty);
                let edge_state =
                    EdgeState { topic, upstream: &edge.upstream, tier: &edge.downstream, history, cusum, width_ms };
                let previous = self.previous(kind, topic, &edge.downstream);
                out.extend(desired_alert(kind, &edge_state, &c.thresholds, c.resolve_after_buckets, previous, now));
            }
        }
        out
    }

    /// Lag per tier with an upstream, and tier down per tier, from the tiers' progress.
    fn tier_alerts(&self, topic: &str, pipeline: &Pipeline, state: &TopicState, now: EpochMillis) -> Vec<Alert> {
        let mut out = Vec::new();
        for tier in pipeline.tiers() {
            let upstream = upstream_of(pipeline, tier);
            let at = TierRef { topic, upstream: upstream.unwrap_or(""), tier };
            if let Some(up) = upstream {
                let lag = state.progress.lag(up, tier);
                let previous = self.previous(AlertKind::Lag, topic, tier);
                out.extend(lag_alert(at, lag, self.config.thresholds.max_lag_ms, previous, now));
            }
            let previous = self.previous(AlertKind::TierDown, topic, tier);
            out.extend(tier_down_alert(at, state.progress.tier(tier), previous, now));
        }
        out
    }

    /// Each pipeline tier's lag and live agents as of the last committed pass over `topic`.
    pub fn tier_gauges(&self, topic: &str, pipeline: &Pipeline) -> Vec<TierGauge> {
        let Some(state) = self.topics.get(topic) else { return Vec::new() };
        let progress = &state.progress;
        pipeline
            .tiers()
            .iter()
            .filter_map(|tier| {
                let reported = progress.tier(tier)?;
                let lag = upstream_of(pipeline, tier).and_then(|up| progress.lag(up, tier));
                Some(TierGauge {
                    tier: tier.clone(),
                    lag_seconds: lag.map(|l| l.lag_ms as f64 / 1_000.0),
                    agents_live: reported.live,
                })
            })
            .collect()
    }

    /// Keep `alert` as current (after its transition, if any, is recorded).
    pub fn apply_alert(&mut self, alert: Alert) {
        self.alerts.insert(alert.dedup_key.clone(), alert);
    }

    pub fn firing(&self) -> usize {
        self.alerts.values().filter(|a| a.state == AlertState::Firing).count()
    }
}

/// The tier `tier` is compared with, if any.
fn upstream_of<'a>(pipeline: &'a Pipeline, tier: &str) -> Option<&'a str> {
    pipeline.edges().iter().find(|e| e.downstream == tier).map(|e| e.upstream.as_str())
}
