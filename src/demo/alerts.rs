//! Watching the store for this run's alerts: each printed as its state changes, the first of
//! each kept with how long it took from the first faulty message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kaudit_alerting::{Alert, AlertState};
use kaudit_schema::{EpochMillis, Shutdown, Store};
use tokio::task::JoinHandle;

/// How long an alert took, from the first faulty message to its firing.
#[derive(Debug, Clone)]
pub struct AlertTiming {
    pub alert: Alert,
    pub after_fault_ms: i64,
}

/// Prints alerts of this run as their state changes, and keeps them.
pub struct AlertWatcher {
    faults_from: EpochMillis,
    shutdown: Shutdown,
    task: JoinHandle<BTreeMap<String, Alert>>,
}

impl AlertWatcher {
    /// Watch `store` for alerts that started after `run_start`.
    pub fn spawn(store: Arc<dyn Store>, run_start: EpochMillis, faults_from: EpochMillis) -> Self {
        let shutdown = Shutdown::new();
        let stopped = shutdown.signal();
        let task = tokio::spawn(async move {
            let mut seen = Seen { run_start, faults_from, states: HashMap::new(), firsts: BTreeMap::new() };
            loop {
                let stopping = stopped.is_stopped();
                seen.poll(&*store).await;
                if stopping {
                    return seen.firsts;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stopped.stopped() => {}
                }
            }
        });
        Self { faults_from, shutdown, task }
    }

    /// Stop watching (after one last look) and return the alerts with their timing.
    pub async fn finish(self) -> Vec<AlertTiming> {
        self.shutdown.trigger();
        let alerts = self.task.await.unwrap_or_default();
        alerts
            .into_values()
            .map(|alert| AlertTiming { after_fault_ms: alert.starts_at_ms - self.faults_from, alert })
            .collect()
    }
}

/// What the watcher has seen so far.
struct Seen {
    run_start: EpochMillis,
    faults_from: EpochMillis,
    states: HashMap<String, AlertState>,
    firsts: BTreeMap<String, Alert>,
}

impl Seen {
    /// Print every alert of this run whose state changed since the last look.
    async fn poll(&mut self, store: &dyn Store) {
        for record in store.list_alerts().await.unwrap_or_default() {
            let Ok(alert) = serde_json::from_str::<Alert>(&record.body) else { continue };
            if alert.starts_at_ms < self.run_start || self.states.get(&alert.dedup_key) == Some(&alert.state) {
                continue;
            }
            let after = (alert.starts_at_ms - self.faults_from) as f64 / 1000.0;
            let when = match alert.state {
                AlertState::Firing => format!("{after:+.1} s after faults began"),
                AlertState::Resolved => "resolved".into(),
            };
            eprintln!("\nALERT ({when}) {}", alert.summary());
            self.states.insert(alert.dedup_key.clone(), alert.state);
            self.firsts.entry(alert.dedup_key.clone()).or_insert(alert);
        }
    }
}
