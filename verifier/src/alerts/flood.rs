//! The flood guard, pure: how many of one pass's alert transitions get a notification each.
//!
//! A pass may change thousands of alerts at once (a burst of invented topics, a store that comes
//! back after an outage). Paging on-call thousands of times helps no one, and fills every sink's
//! outbox. So the first `budget` transitions of a pass (critical ones first, then in pass order)
//! are notified as usual; the rest are *quiet*: stored as alert state, listed by the API, logged
//! at DEBUG, but not sent. Instead one alert, `flood/kaudit`, fires and says how many there were,
//! of which kinds, and the first few topics. It stays firing while passes keep going over the
//! budget (its numbers add up, without a notification each time) and resolves once no pass has
//! gone over it for `quiet_ms`. While it fires, a pass over the budget notifies nothing on its own
//! (a flood that lasts many passes pages `budget` + 2 times in all, not `budget` per pass); a pass
//! within the budget is notified as usual. Its own transitions are always notified.

use std::collections::BTreeSet;

use kaudit_alerting::{Alert, AlertKind, AlertNumbers, AlertState, Severity};
use kaudit_schema::EpochMillis;

use crate::engine::AlertUpdate;

/// The flood alert's dedup key: one for the verifier, firing and resolving.
pub const FLOOD_KEY: &str = "flood/kaudit";

/// Topics a flood alert names.
const TOPICS_SHOWN: usize = 5;

/// One pass's transitions, split.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Guarded {
    /// Notify each.
    pub notify: Vec<Alert>,
    /// Store each without a notification.
    pub quiet: Vec<Alert>,
    /// Not transitions: keep as current state, nothing to store.
    pub unchanged: Vec<Alert>,
    /// The flood alert as it should be now, and whether that is a transition (to notify).
    pub flood: Option<AlertUpdate>,
}

/// Split a pass's `updates` under `budget` notifications; `previous` is the flood alert as it
/// stands; it resolves once `quiet_ms` passed since the last pass over the budget.
pub fn guard(
    updates: Vec<AlertUpdate>,
    budget: usize,
    previous: Option<&Alert>,
    quiet_ms: i64,
    now: EpochMillis,
) -> Guarded {
    let mut out = Guarded::default();
    let mut transitions = Vec::new();
    for u in updates {
        if u.transition { transitions.push(u.alert) } else { out.unchanged.push(u.alert) }
    }
    transitions.sort_by_key(|a| std::cmp::Reverse(a.severity)); // stable: pass order within a severity
    let flooding = previous.is_some_and(|p| p.state == AlertState::Firing);
    let budget = if flooding && transitions.len() > budget { 0 } else { budget.min(transitions.len()) };
    let quiet = transitions.split_off(budget);
    out.notify = transitions;
    out.flood = flood_alert(&quiet, previous, quiet_ms, now);
    out.quiet = quiet;
    out
}

/// The flood alert after a pass whose `quiet` transitions were held back.
fn flood_alert(quiet: &[Alert], previous: Option<&Alert>, quiet_ms: i64, now: EpochMillis) -> Option<AlertUpdate> {
    let firing = previous.filter(|p| p.state == AlertState::Firing);
    if quiet.is_empty() {
        let p = firing.filter(|p| now - p.last_bucket_ms >= quiet_ms)?;
        let resolved = Alert {
            state: AlertState::Resolved,
            ends_at_ms: Some(now),
            resolution: Some(format!("no pass over the limit for {}", kaudit_alerting::alert::duration_text(quiet_ms))),
            ..p.clone()
        };
        return Some(AlertUpdate { alert: resolved, transition: true });
    }
    let mut numbers = firing.map(|p| p.numbers.clone()).unwrap_or_default();
    add_up(&mut numbers, quiet);
    let severity = quiet.iter().map(|a| a.severity).max().unwrap_or(Severity::Warning);
    let alert = Alert {
        dedup_key: FLOOD_KEY.into(),
        kind: AlertKind::Flood,
        state: AlertState::Firing,
        severity: firing.map_or(severity, |p| p.severity.max(severity)),
        topic: String::new(),
        upstream_tier: String::new(),
        tier: String::new(),
        first_bucket_ms: firing.map_or(now, |p| p.first_bucket_ms),
        last_bucket_ms: now,
        numbers,
        detected_by: vec!["flood_guard".into()],
        starts_at_ms: firing.map_or(now, |p| p.starts_at_ms),
        ends_at_ms: None,
        resolution: None,
    };
    Some(AlertUpdate { alert, transition: firing.is_none() })
}

/// Count `quiet` into a flood alert's numbers.
fn add_up(n: &mut AlertNumbers, quiet: &[Alert]) {
    *n.suppressed.get_or_insert(0) += quiet.len() as u64;
    for a in quiet {
        *n.suppressed_kinds.entry(a.kind.as_str().to_string()).or_default() += 1;
    }
    let mut shown: BTreeSet<&str> = n.suppressed_topics.iter().map(String::as_str).collect();
    let mut more = Vec::new();
    for a in quiet {
        if shown.len() >= TOPICS_SHOWN {
            break;
        }
        if shown.insert(&a.topic) {
            more.push(a.topic.clone());
        }
    }
    n.suppressed_topics.extend(more);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: AlertKind, topic: &str, severity: Severity) -> AlertUpdate {
        let alert = Alert {
            dedup_key: Alert::dedup_key(kind, topic, "broker"),
            kind,
            state: AlertState::Firing,
            severity,
            topic: topic.into(),
            upstream_tier: "producer".into(),
            tier: "broker".into(),
            first_bucket_ms: 0,
            last_bucket_ms: 0,
            numbers: AlertNumbers::default(),
            detected_by: vec!["threshold".into()],
            starts_at_ms: 0,
            ends_at_ms: None,
            resolution: None,
        };
        AlertUpdate { alert, transition: true }
    }

    fn flood_of(n: usize) -> Vec<AlertUpdate> {
        (0..n).map(|i| alert(AlertKind::MissingTier, &format!("orders.card{i}"), Severity::Warning)).collect()
    }

    #[test]
    fn within_the_budget_everything_is_notified_and_no_flood_fires() {
        let mut updates = flood_of(3);
        updates.push(AlertUpdate { transition: false, ..alert(AlertKind::Loss, "orders", Severity::Critical) });
        let g = guard(updates, 20, None, 60_000, 1_000);
        assert_eq!((g.notify.len(), g.quiet.len(), g.unchanged.len()), (3, 0, 1));
        assert_eq!(g.flood, None);
    }

    /// 40,002 transitions in one pass: 20 notifications, one flood alert, the rest quiet.
    #[test]
    fn past_the_budget_one_summary_names_the_rest() {
        let mut updates = flood_of(40_001);
        updates.push(alert(AlertKind::Loss, "payments", Severity::Critical));
        let g = guard(updates, 20, None, 60_000, 1_000);
        assert_eq!((g.notify.len(), g.quiet.len()), (20, 39_982));
        assert_eq!(g.notify[0].topic, "payments", "critical first");
        let flood = g.flood.expect("a flood alert");
        assert!(flood.transition);
        let a = flood.alert;
        assert_eq!((a.dedup_key.as_str(), a.kind, a.state), (FLOOD_KEY, AlertKind::Flood, AlertState::Firing));
        assert_eq!(a.numbers.suppressed, Some(39_982));
        assert_eq!(a.numbers.suppressed_kinds.get("missing_tier"), Some(&39_982));
        assert_eq!(
            a.numbers.suppressed_topics,
            ["orders.card19", "orders.card20", "orders.card21", "orders.card22", "orders.card23"]
        );
        assert_eq!(
            a.summary(),
            "[FIRING] kaudit flood: 39982 alert changes without their own notification \
             (missing_tier 39982); topics orders.card19, orders.card20, orders.card21, orders.card22, orders.card23, ..."
        );
    }

    #[test]
    fn the_flood_alert_adds_up_quietly_then_resolves_after_a_quiet_spell() {
        let first = guard(flood_of(30), 20, None, 60_000, 1_000).flood.unwrap();
        let second = guard(flood_of(25), 20, Some(&first.alert), 60_000, 6_000);
        assert!(second.notify.is_empty(), "over the budget while flooding: nothing on its own");
        let again = second.flood.unwrap();
        assert!(!again.transition, "still firing: no second page");
        assert_eq!((again.alert.numbers.suppressed, again.alert.starts_at_ms), (Some(35), 1_000));
        let calm = guard(flood_of(3), 20, Some(&again.alert), 60_000, 11_000);
        assert_eq!((calm.notify.len(), calm.flood), (3, None), "within the budget: notified; not quiet long enough");
        let resolved = guard(vec![], 20, Some(&again.alert), 60_000, 66_000).flood.unwrap();
        assert!(resolved.transition);
        assert_eq!((resolved.alert.state, resolved.alert.ends_at_ms), (AlertState::Resolved, Some(66_000)));
        assert_eq!(guard(vec![], 20, Some(&resolved.alert), 60_000, 70_000).flood, None);
        let next = guard(flood_of(21), 20, Some(&resolved.alert), 60_000, 80_000).flood.unwrap();
        assert!(next.transition && next.alert.numbers.suppressed == Some(1), "a new flood starts afresh");
    }
}
