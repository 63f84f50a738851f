//! What a demo run found, and how it ends.

use std::collections::BTreeSet;

use super::alerts::AlertTiming;
use super::check::EdgeCheck;
use super::faults::{FaultPlan, Ledger};

/// What the demo found.
#[derive(Debug)]
pub struct DemoOutcome {
    pub ledger: Ledger,
    /// The faults that were planned.
    pub plan: FaultPlan,
    pub checks: Vec<EdgeCheck>,
    pub table: String,
    /// The messages the verdicts name, against those injected.
    pub names: String,
    /// Alerts the faults must raise.
    pub expected_alerts: BTreeSet<String>,
    /// Alerts the faults may raise (too close to a threshold, or inside a crash window).
    pub optional_alerts: BTreeSet<String>,
    pub alerts: Vec<AlertTiming>,
    /// Bucket width + grace + evaluation interval: the most an alert should take, ms.
    pub alert_bound_ms: i64,
    /// Notifications the sinks had not accepted by the end.
    pub undelivered: usize,
    pub store: String,
}

/// How a run ended, as the exit code says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conclusion {
    /// Every verdict carries the injected count and exactly the expected alerts fired.
    Matches,
    /// Detection matched, but an alert sink did not accept every notification.
    Undelivered,
    /// Some verdict or alert disagrees with what was injected.
    Mismatch,
}

impl DemoOutcome {
    fn fired(&self) -> BTreeSet<String> {
        self.alerts.iter().map(|a| a.alert.dedup_key.clone()).collect()
    }

    /// Every bucket's verdicts match the injected faults and exactly the expected alerts fired.
    pub fn matches(&self) -> bool {
        let fired = self.fired();
        let allowed = |k: &String| self.expected_alerts.contains(k) || self.optional_alerts.contains(k);
        !self.checks.is_empty()
            && self.checks.iter().all(|c| c.matches)
            && self.expected_alerts.is_subset(&fired)
            && fired.iter().all(allowed)
    }

    pub fn conclusion(&self) -> Conclusion {
        match (self.matches(), self.undelivered) {
            (false, _) => Conclusion::Mismatch,
            (true, 0) => Conclusion::Matches,
            (true, _) => Conclusion::Undelivered,
        }
    }
}
