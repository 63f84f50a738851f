//! The alerts about a tier rather than its verdicts, pure: `lag` (its watermark is more than
//! `max_lag_ms` behind its upstream's: a warning, since a tier that is behind has lost nothing
//! yet) and `tier_down` (no instance alive, and the one heard from last vanished without a clean
//! stop: critical, since nothing is counting). Each fires and resolves on the tiers' progress at
//! the pass, and a resolved one says why.

use kaudit_alerting::alert::duration_text;
use kaudit_alerting::{Alert, AlertKind, AlertNumbers, AlertState};

use super::severity;
use crate::progress::{Lag, TierProgress};

/// Which tier of which topic, and its upstream (empty for the chain's first tier).
#[derive(Debug, Clone, Copy)]
pub struct TierRef<'a> {
    pub topic: &'a str,
    pub upstream: &'a str,
    pub tier: &'a str,
}

/// The `lag` alert `tier` should have, given its lag now (`None`: it reports no progress).
pub fn lag_alert(
    at: TierRef<'_>,
    lag: Option<Lag>,
    max_lag_ms: u64,
    previous: Option<&Alert>,
    now_ms: i64,
) -> Option<Alert> {
    let firing = lag.is_some_and(|l| l.lag_ms > max_lag_ms as i64);
    let numbers = |l: Lag| AlertNumbers {
        lag_ms: Some(l.lag_ms),
        behind_since_ms: Some(l.behind_since_ms),
        ..AlertNumbers::default()
    };
    match (lag, firing, previous) {
        (Some(l), true, previous) => {
            let mut alert = firing_alert(AlertKind::Lag, at, previous, now_ms);
            (alert.first_bucket_ms, alert.last_bucket_ms) = (l.behind_since_ms, l.ahead_ms);
            alert.numbers = numbers(l);
            Some(alert)
        }
        (_, _, Some(p)) if p.state == AlertState::Firing => {
            let (numbers, why) = match lag {
                Some(l) => (numbers(l), format!("caught up (lag {})", duration_text(l.lag_ms))),
                None => (p.numbers.clone(), "the tier no longer reports progress".to_string()),
            };
            Some(resolved(p, numbers, why, now_ms))
        }
        (_, _, previous) => previous.cloned(),
    }
}

/// The `tier_down` alert `tier` should have, given its liveness now (`None`: no heartbeats).
pub fn tier_down_alert(
    at: TierRef<'_>,
    liveness: Option<&TierProgress>,
    previous: Option<&Alert>,
    now_ms: i64,
) -> Option<Alert> {
    match (liveness.and_then(|t| t.down_since_ms), previous) {
        (Some(last), previous) => {
            let mut alert = firing_alert(AlertKind::TierDown, at, previous, now_ms);
            (alert.first_bucket_ms, alert.last_bucket_ms) = (last, last);
            alert.numbers = AlertNumbers { last_heartbeat_ms: Some(last), ..AlertNumbers::default() };
            Some(alert)
        }
        (None, Some(p)) if p.state == AlertState::Firing => {
            let why = match liveness {
                Some(t) if t.live > 0 => "an agent is live again",
                Some(t) if t.last_stopped_cleanly => "an instance started and stopped cleanly since",
                _ => "no instance heard from within the lateness window: the tier is taken as retired",
            };
            Some(resolved(p, p.numbers.clone(), why.into(), now_ms))
        }
        (None, previous) => previous.cloned(),
    }
}

fn firing_alert(kind: AlertKind, at: TierRef<'_>, previous: Option<&Alert>, now_ms: i64) -> Alert {
    let still_firing = previous.filter(|p| p.state == AlertState::Firing);
    Alert {
        dedup_key: Alert::dedup_key(kind, at.topic, at.tier),
        kind,
        state: AlertState::Firing,
        severity: severity(kind),
        topic: at.topic.into(),
        upstream_tier: at.upstream.into(),
        tier: at.tier.into(),
        first_bucket_ms: 0,
        last_bucket_ms: 0,
        numbers: AlertNumbers::default(),
        detected_by: vec![if kind == AlertKind::TierDown { "heartbeat" } else { "threshold" }.into()],
        starts_at_ms: still_firing.map_or(now_ms, |p| p.starts_at_ms),
        ends_at_ms: None,
        resolution: None,
    }
}

fn resolved(previous: &Alert, numbers: AlertNumbers, why: String, now_ms: i64) -> Alert {
    Alert { state: AlertState::Resolved, numbers, ends_at_ms: Some(now_ms), resolution: Some(why), ..previous.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: TierRef<'static> = TierRef { topic: "orders", upstream: "producer", tier: "consumer" };

    fn lag(lag_ms: i64) -> Option<Lag> {
        Some(Lag { lag_ms, behind_since_ms: 1_000_000 - lag_ms, ahead_ms: 1_000_000 })
    }

    #[test]
    fn lag_fires_over_the_threshold_and_resolves_caught_up() {
        assert_eq!(lag_alert(AT, lag(300_000), 300_000, None, 1), None, "at the threshold: fine");
        assert_eq!(lag_alert(AT, None, 300_000, None, 1), None);
        let fired = lag_alert(AT, lag(372_000), 300_000, None, 10).unwrap();
        assert_eq!(
            (fired.dedup_key.as_str(), fired.state, fired.severity),
            ("lag/orders/consumer", AlertState::Firing, kaudit_alerting::Severity::Warning)
        );
        assert_eq!((fired.numbers.lag_ms, fired.numbers.behind_since_ms), (Some(372_000), Some(628_000)));
        let still = lag_alert(AT, lag(400_000), 300_000, Some(&fired), 20).unwrap();
        assert_eq!((still.starts_at_ms, still.numbers.lag_ms), (10, Some(400_000)));
        let resolved = lag_alert(AT, lag(2_000), 300_000, Some(&still), 30).unwrap();
        assert_eq!((resolved.state, resolved.ends_at_ms), (AlertState::Resolved, Some(30)));
        assert_eq!(resolved.resolution.as_deref(), Some("caught up (lag 2 s)"));
        assert_eq!(resolved.numbers.lag_ms, Some(2_000), "the final numbers, not the last faulty pass's");
        assert_eq!(lag_alert(AT, lag(0), 300_000, Some(&resolved), 40), Some(resolved));
    }

    #[test]
    fn tier_down_fires_while_no_instance_lives_and_says_what_revived_it() {
        let down = TierProgress { down_since_ms: Some(500), ..TierProgress::default() };
        assert_eq!(tier_down_alert(AT, None, None, 1), None);
        let fired = tier_down_alert(AT, Some(&down), None, 10).unwrap();
        assert_eq!(
            (fired.dedup_key.as_str(), fired.numbers.last_heartbeat_ms),
            ("tier_down/orders/consumer", Some(500))
        );
        assert_eq!(fired.severity, kaudit_alerting::Severity::Critical);
        let live = TierProgress { live: 1, ..TierProgress::default() };
        let resolved = tier_down_alert(AT, Some(&live), Some(&fired), 20).unwrap();
        assert_eq!(resolved.state, AlertState::Resolved);
        assert_eq!(resolved.resolution.as_deref(), Some("an agent is live again"));
        let gone = tier_down_alert(AT, None, Some(&fired), 20).unwrap();
        assert!(gone.resolution.unwrap().contains("retired"));
    }
}
