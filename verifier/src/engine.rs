//! The streaming verifier: every `evaluate_interval` it reads recent tallies, evaluates the buckets
//! past the watermark, stores new and revised verdicts, feeds the CUSUM detectors, and records
//! alert transitions for the dispatcher to deliver.
//!
//! Watermark: a bucket is evaluated once `now > bucket_end + grace`. Buckets stay under watch
//! until `lateness` after that: late tallies that change a verdict revise it (and may resolve an
//! alert). A bucket feeds the detectors and the message counters once, at its first evaluation.
//! After a restart the engine reloads alert state and the verdicts already stored, so it neither
//! repeats a notification nor counts a bucket twice, and takes up each topic's stored CUSUM states
//! (baselines, statistics, alarms within the horizon) the first time it evaluates the topic, so
//! its detectors continue where they stopped and a CUSUM-only alert keeps firing.
//!
//! Lag is not loss: each pass also reads the topic's progress and heartbeat rows, so the core
//! judges an edge only once both tiers have got past the bucket (`pending` until then,
//! `unreached` if never), takes differences in buckets a crashed agent held open for
//! `indeterminate`, and raises `lag` and `tier_down` instead of loss or missing-tier alerts.
//!
//! Incremental: the first pass after a start reads each topic's window in full; later passes read
//! the store's change index since the previous pass and re-read only the buckets whose tallies
//! changed or that are still open (not due yet, or with a pending edge). Each topic's progress and
//! heartbeat rows are kept and read again only when the index says they were written; an idle
//! topic (nothing changed, nothing open) costs no read at all: its liveness and lag are worked out
//! again from the kept rows at the pass's time.
//!
//! Bounded: topics are taken under watch a few per pass and up to a limit ([`Watchlist`]), and
//! a pass's alert transitions beyond `alerting.max_notifications_per_pass` are stored without a
//! notification each, one flood alert naming them instead ([`guard`]).
//!
//! Every decision is made by the pure [`EngineCore`]; this file is its driver: it reads from the
//! store, asks the core, writes the verdicts, records alert transitions through the dispatcher and
//! updates the metrics. The core remembers a pass only once its verdicts are written.

mod core;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kaudit_alerting::dispatch::Limits;
use kaudit_alerting::ownership::{Fenced, Hold, Ownership};
use kaudit_alerting::{Alert, AlertState, Dispatcher};
use kaudit_schema::{
    Clock, EpochMillis, HeartbeatRow, ProgressRow, REPORTS_CHANGED, Store, StoreError, TallyRow, VerdictOwnerRow,
};

use crate::alerts::flood::{FLOOD_KEY, Guarded, guard};
use crate::config::VerifierConfig;
use crate::metrics::VerifierMetrics;
use crate::pipeline::{Pipeline, pipeline_for};
use crate::watch::{Admission, Watchlist};

/// Most one log line about waiting or ignored topics per this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The flood alert resolves after this many evaluation intervals without a pass over the limit
/// (and at least a minute), so a flood that comes in waves pages once.
const FLOOD_QUIET_PASSES: u64 = 10;

/// Topics whose CUSUM states are written in one store write.
const CUSUM_SAVE_TOPICS: usize = 250;

pub use self::core::{
    AlertUpdate, CusumReading, Decision, EdgeRecall, EngineCore, MetricDeltas, Phase, Recalled, Reports, TierGauge,
    TopicPass, Watermark,
};

/// How far back each read of the change index reaches before where the previous one ended, ms:
/// writes still in flight when it was read, and writers' clocks behind the reader's. Buckets read
/// twice because of it are decided once (an unchanged verdict is not written again).
const CHANGE_OVERLAP_MS: i64 = 60_000;

/// How far ahead of now a full read reaches, ms: the agents' default `agent.max_future_ms` (rows
/// further ahead are refused by default).
const FUTURE_READ_MS: i64 = 3_600_000;

/// Why a pass failed: the store, or this instance's membership of the verifier group.
#[derive(Debug, thiserror::Error)]
pub enum TickError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fenced(#[from] Fenced),
}

/// What one evaluation pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    pub first_evaluations: usize,
    pub revisions: usize,
    pub notifications: usize,
}

pub struct Engine {
    store: Arc<dyn Store>,
    dispatcher: Option<Dispatcher>,
    pipelines: Vec<Pipeline>,
    core: EngineCore,
    evaluate_interval_ms: u64,
    clock: Arc<dyn Clock>,
    metrics: VerifierMetrics,
    /// Stored alerts have been taken up (once, before the first pass).
    alerts_loaded: bool,
    ready: Arc<AtomicBool>,
    watch: Watchlist,
    /// How long the flood alert waits without a pass over the limit before it resolves, ms.
    flood_quiet_ms: i64,
    /// When waiting and ignored topics were last logged.
    logged: [Option<Instant>; 2],
    /// Where the next read of the change index starts (store time, ms); `None` before the first
    /// pass, which reads every topic in full.
    changes_since: Option<EpochMillis>,
    /// Changes read within the overlap, per topic: (bucket, latest write seen) in bucket order,
    /// `REPORTS_CHANGED` for its reports. A change is acted on when it is the first of its bucket
    /// read or later than the latest seen, and the bucket once more when its latest leaves the
    /// overlap (an earlier write of another agent that became visible late is read then), though
    /// read on every pass in between. 16 bytes a bucket: a whole window flushed in the last minute
    /// (a backfill) costs a kilobyte a topic.
    changes_seen: HashMap<String, Vec<(EpochMillis, EpochMillis)>>,
    /// Each topic's latest progress and heartbeat rows, read again when the change index says
    /// they were written.
    reports: HashMap<String, (Vec<ProgressRow>, Vec<HeartbeatRow>)>,
    /// The topics this instance evaluates (all of them, alone).
    ownership: Ownership,
    /// The version of the owned set the state was built for.
    owned_version: u64,
    /// The owned shards and epochs the state was built for (sharded).
    owned: std::collections::BTreeMap<u32, i64>,
    /// Topics not yet read in full whose tallies changed recently: read first among the cold.
    cold_changed: std::collections::HashSet<String>,
    /// Shards taken over from another owner: their topics are admitted at once, not a few per
    /// pass like new topic names (the previous owner watched them).
    taken_over: std::collections::HashSet<u32>,
    /// Set when the service stops: the pass in progress ends at its next topic (see `run`).
    stopping: Arc<AtomicBool>,
}

impl Engine {
    /// An engine over `store`; `dispatcher` receives alert transitions (none: verdicts only).
    pub fn new(
        store: Arc<dyn Store>,
        dispatcher: Option<Dispatcher>,
        config: VerifierConfig,
        flush_interval_ms: u64,
        clock: Arc<dyn Clock>,
        metrics: VerifierMetrics,
    ) -> Self {
        let pipelines = config.pipelines.iter().map(|p| p.build()).collect();
        let evaluate_interval_ms = config.evaluate_interval_ms;
        let grace_ms = config.grace_ms(flush_interval_ms);
        let agent_timeout_ms = config.agent_timeout_ms(flush_interval_ms);
        let watch = Watchlist::new(config.max_new_topics_per_pass, config.max_topics);
        let flood_quiet_ms = (FLOOD_QUIET_PASSES * evaluate_interval_ms).max(60_000) as i64;
        let core = EngineCore::new(config, grace_ms, agent_timeout_ms);
        Self {
            store,
            dispatcher,
            pipelines,
            core,
            evaluate_interval_ms,
            clock,
            metrics,
            alerts_loaded: false,
            ready: Arc::default(),
            watch,
            flood_quiet_ms,
            logged: [None, None],
            changes_since: None,
            changes_seen: HashMap::new(),
            reports: HashMap::new(),
            ownership: Ownership::sole(""),
            owned_version: 0,
            owned: Default::default(),
            taken_over: Default::default(),
            cold_changed: Default::default(),
            stopping: Arc::default(),
        }
    }

    /// The same engine evaluating only the topics `ownership` owns, writing under its fence.
    pub fn with_ownership(self, ownership: Ownership) -> Self {
        Self { ownership, ..self }
    }

    /// The owned shards changed: forget the topics of every shard lost or whose epoch changed,
    /// and take up the alerts of the shards gained; their topics are then read in full, with their
    /// stored verdicts and CUSUM states, where the previous owner left them (as after a restart).
    /// Topics of unchanged shards keep their state: a rebalance costs only what moved.
    async fn take_over(&mut self, hold: &Hold<'_>) -> Result<(), StoreError> {
        let (Some(shards), Some(now_owned)) = (self.ownership.shards(), hold.epochs()) else { return Ok(()) };
        let moved: std::collections::HashSet<u32> = self
            .owned
            .iter()
            .filter(|(s, e)| now_owned.get(s) != Some(e))
            .chain(now_owned.iter().filter(|(s, e)| self.owned.get(s) != Some(e)))
            .map(|(s, _)| *s)
            .collect();
        let gained: std::collections::HashSet<u32> = now_owned.keys().filter(|s| moved.contains(s)).copied().collect();
        if self.alerts_loaded && !moved.is_empty() {
            let gone = |t: &str| moved.contains(&kaudit_alerting::shard_of(t, shards));
            self.core.forget_topics(gone);
            for topic in self.watch.forget(gone) {
                self.metrics.topics.clear_gauges(&topic);
            }
            self.reports.retain(|t, _| !gone(t));
            self.metrics.alert_firing.reset();
            let mut alerts = Vec::new();
            for record in self.store.list_alerts().await? {
                if let Ok(alert) = serde_json::from_str::<Alert>(&record.body)
                    && gained.contains(&kaudit_alerting::shard_of(&alert.topic, shards))
                {
                    alerts.push((record.dedup_key, alert));
                }
            }
            self.core.restore_alerts(alerts);
            // Their changes within the overlap were read while another instance owned them.
            let changed =
                self.changes_seen.iter().filter(|(t, seen)| gone(t) && seen.iter().any(|(b, _)| *b != REPORTS_CHANGED));
            let changed: Vec<String> = changed.map(|(t, _)| t.clone()).collect();
            self.cold_changed.extend(changed);
        }
        tracing::info!(
            gained = gained.len(),
            lost = moved.len() - gained.len(),
            owned = now_owned.len(),
            "taking over shards"
        );
        self.taken_over.extend(gained);
        self.owned = now_owned.clone();
        self.owned_version = hold.version();
        Ok(())
    }

    /// Set once a pass has succeeded (the API's `/readyz`).
    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    /// Current alerts by dedup key.
    pub fn alerts(&self) -> &std::collections::HashMap<String, Alert> {
        self.core.alerts()
    }

    async fn load_alerts(&mut self, hold: &Hold<'_>) -> Result<(), StoreError> {
        let mut alerts = Vec::new();
        for record in self.store.list_alerts().await? {
            match serde_json::from_str::<Alert>(&record.body) {
                Ok(alert) if hold.owns(&alert.topic) => alerts.push((record.dedup_key, alert)),
                Ok(_) => {}
                Err(error) => tracing::warn!(key = %record.dedup_key, %error, "ignoring unreadable stored alert"),
            }
        }
        self.core.restore_alerts(alerts);
        self.alerts_loaded = true;
        Ok(())
    }

    /// One evaluation pass over every owned topic with a pipeline.
    pub async fn tick(&mut self) -> Result<TickReport, TickError> {
        let started = Instant::now();
        let ownership = self.ownership.clone();
        let hold = ownership.hold().await?;
        if hold.version() != self.owned_version {
            self.take_over(&hold).await?;
        }
        if !self.alerts_loaded {
            self.load_alerts(&hold).await?;
        }
        let now = self.clock.now_ms();
        let mut report = TickReport::default();
        let since = self.take_changes().await?;
        let pipelines = &self.pipelines;
        self.cold_changed.retain(|t| hold.owns(t) && pipeline_for(pipelines, t).is_some());
        let topics = self.store.list_topics().await?.into_iter().filter(|t| hold.owns(t)).collect();
        let admission = self.admit(topics);
        self.taken_over.clear();
        if self.changes_since.is_none() {
            self.load_all_cusum_states(&admission.topics).await?;
        }
        let mut updates = Vec::new();
        let mut evaluated = Vec::with_capacity(admission.topics.len());
        let (order, deferred) = self.pass_order(admission.topics, started);
        let mut skipped = 0;
        for topic in order {
            if self.stopping.load(Ordering::SeqCst) {
                // Stopping: the topics evaluated so far are finished below (alerts recorded,
                // CUSUM states saved); whoever owns the rest next reads them.
                tracing::info!(evaluated = evaluated.len(), "stopping: pass ended early");
                break;
            }
            if hold.handing_over() {
                // A revocation waits for this pass: stop here, the next pass takes up what is left.
                return Err(Fenced("shards are being handed over".into()).into());
            }
            if deferred.as_ref().is_some_and(|d| d.cut(&self.core, &topic)) {
                skipped += 1;
                continue;
            }
            let pipeline = pipeline_for(&self.pipelines, &topic).expect("admitted topics have a pipeline").clone();
            self.evaluate_topic(&topic, &pipeline, now, &hold, &mut report).await?;
            self.cold_changed.remove(&topic);
            updates.extend(self.core.alert_updates(&topic, &pipeline, now));
            evaluated.push(topic);
        }
        if skipped > 0 {
            self.metrics.topics_waiting.set((admission.waiting + skipped) as i64);
            tracing::debug!(skipped, "cold topics left for the next pass");
        }
        hold.ensure().await?;
        if let Err(error) = self.save_cusum_states(&evaluated, now).await {
            // Not on the alerting path: the states stay unsaved and the next pass writes them.
            tracing::warn!(%error, "storing cusum states failed; retrying next pass");
        }
        self.leave_overlap(since);
        report.notifications += self.record_alerts(updates, now, &hold).await?;
        self.metrics.alerts_firing.set(self.core.firing() as i64);
        for alert in self.core.alerts().values() {
            let labels = [alert.kind.as_str(), alert.topic.as_str(), alert.tier.as_str()];
            if alert.state == AlertState::Firing {
                self.metrics.alert_firing.with_label_values(&labels).set(1);
            } else {
                let _ = self.metrics.alert_firing.remove_label_values(&labels);
            }
        }
        self.metrics.evaluation_duration.observe(started.elapsed().as_secs_f64());
        self.ready.store(true, Ordering::SeqCst);
        drop(hold);
        Ok(report)
    }

    /// Read, decide, write, then commit: a failed write leaves the core as it was. A topic read in
    /// full once is read incrementally after: only its buckets that changed or are still open,
    /// and nothing at all while it is idle (but for its reports now and then, for liveness).
    async fn evaluate_topic(
        &mut self,
        topic: &str,
        pipeline: &Pipeline,
        now: EpochMillis,
        hold: &Hold<'_>,
        report: &mut TickReport,
    ) -> Result<(), TickError> {
        if !self.reports.contains_key(topic) {
            let progress = self.store.read_progress(topic).await?;
            let heartbeats = self.store.read_heartbeats(topic).await?;
            self.reports.insert(topic.to_string(), (progress, heartbeats));
        }
        let (progress, heartbeats) = &self.reports[topic];
        let reports = Reports { progress, heartbeats };
        if self.core.is_idle(topic, now) {
            self.core.refresh_progress(topic, reports, now);
            record_gauges(&self.metrics, topic, &self.core.tier_gauges(topic, pipeline));
            return Ok(());
        }
        let (from, rows) = match self.core.buckets_to_read(topic, now) {
            Some(buckets) => (
                self.core.watermark().first_bucket(self.width_or_zero(topic), now),
                self.read_buckets(topic, &buckets).await?,
            ),
            None => {
                let (from, rows) = self.read_rows(topic, now).await?;
                self.metrics.full_reads.inc();
                let buckets: BTreeSet<EpochMillis> = rows.iter().map(|r| r.key.bucket_start_ms).collect();
                self.core.note_buckets(topic, buckets, true);
                (from, rows)
            }
        };
        self.metrics.rows_read.inc_by(rows.len() as u64);
        if let Some((from, to)) = self.core.verdicts_to_load(topic, from, now) {
            let stored = self.store.read_verdicts(topic, from, to).await?;
            self.core.load_verdicts(topic, from, stored);
        }
        if self.core.cusum_states_to_load(topic) {
            self.load_cusum_states(topic).await?;
        }
        let (progress, heartbeats) = &self.reports[topic];
        let reports = Reports { progress, heartbeats };
        let pass = self.core.plan_with(topic, pipeline, &rows, reports, now);
        let writes = pass.writes();
        if !writes.is_empty() {
            hold.ensure().await?;
            if self.ownership.shards().is_some() {
                self.store.write_verdict_owners(&owner_rows(topic, &writes, hold, now)).await?;
            }
            self.store.write_verdicts(&writes).await?;
        }
        let deltas = self.core.commit(pass);
        report.first_evaluations += deltas.buckets_evaluated as usize;
        report.revisions += deltas.revisions as usize;
        record_metrics(&self.metrics, topic, &deltas);
        record_gauges(&self.metrics, topic, &self.core.tier_gauges(topic, pipeline));
        Ok(())
    }

    fn width_or_zero(&self, topic: &str) -> i64 {
        self.core.width_ms(topic).unwrap_or(0)
    }

    /// Every row of each of `buckets` (starts) of `topic`.
    async fn read_buckets(&self, topic: &str, buckets: &[EpochMillis]) -> Result<Vec<TallyRow>, StoreError> {
        let mut rows = Vec::new();
        for bucket in buckets {
            rows.extend(self.store.read_range(topic, *bucket, bucket + 1).await?);
        }
        Ok(rows)
    }

    /// The order a sharded pass evaluates `topics` in, and its budget for topics not yet read in
    /// full (taken over, or new): topics read in full first (their passes are cheap), then the cold
    /// ones with recent changes, then the rest; cold topics stop being read once the pass has run
    /// for an evaluation interval (at least one per pass). A takeover's full reads then spread over
    /// a few passes, the topics that changed first, instead of holding every alert of the pass back
    /// until all are read. A sole instance keeps the admission's order and reads everything.
    fn pass_order(&self, topics: Vec<String>, started: Instant) -> (Vec<String>, Option<ColdBudget>) {
        if self.ownership.shards().is_none() {
            // Alone: the admission's order, every topic every pass.
            return (topics, None);
        }
        let (mut order, mut cold): (Vec<String>, Vec<String>) =
            topics.into_iter().partition(|t| self.core.read_in_full(t));
        cold.sort_by_key(|t| !self.cold_changed.contains(t));
        order.extend(cold);
        let budget = ColdBudget {
            until: started + Duration::from_millis(self.evaluate_interval_ms.max(1_000)),
            first: std::cell::Cell::new(true),
        };
        (order, Some(budget))
    }

    /// Read the change index since the last pass and take note of what changed: each new tally
    /// change opens its bucket in the core (kept there if the pass fails), each new report change
    /// drops the topic's kept reports. The first pass reads every topic in full, so what the index
    /// holds then is only taken as seen. Returns where the next read starts, once this pass is
    /// through.
    async fn take_changes(&mut self) -> Result<EpochMillis, StoreError> {
        let changes = match self.changes_since {
            Some(since) => self.store.read_changes(since).await?,
            None => {
                let until_ms = self.store.read_changes(EpochMillis::MAX).await?.until_ms;
                let covered = self.store.read_changes(until_ms - CHANGE_OVERLAP_MS).await?;
                for t in covered.topics {
                    let tallies = t.buckets.iter().any(|(b, _)| *b != REPORTS_CHANGED);
                    if tallies && self.ownership.shards().is_some() {
                        self.cold_changed.insert(t.topic.clone());
                    }
                    self.see(t.topic, &t.buckets);
                }
                // A first pass that fails part way continues from here: the topics it read in full
                // are incremental after, the others are read in full then.
                self.changes_since = Some(covered.until_ms - CHANGE_OVERLAP_MS);
                return Ok(covered.until_ms - CHANGE_OVERLAP_MS);
            }
        };
        for t in changes.topics {
            let new: Vec<(EpochMillis, EpochMillis)> =
                t.buckets.iter().copied().filter(|(b, written)| self.is_new(&t.topic, *b, *written)).collect();
            if new.is_empty() {
                continue;
            }
            let tallies = new.iter().map(|(b, _)| *b).filter(|b| *b != REPORTS_CHANGED);
            if new.len() > tallies.clone().count() {
                self.reports.remove(&t.topic);
            }
            if self.core.read_in_full(&t.topic) {
                self.core.note_buckets(&t.topic, tallies, false);
            } else if self.ownership.shards().is_some() && tallies.clone().next().is_some() {
                self.cold_changed.insert(t.topic.clone());
            }
            self.see(t.topic, &new);
        }
        Ok(changes.until_ms - CHANGE_OVERLAP_MS)
    }

    /// Whether a write of `topic`'s `bucket` (or reports) at `written_ms` is later than what was seen.
    fn is_new(&self, topic: &str, bucket: EpochMillis, written_ms: EpochMillis) -> bool {
        let Some(seen) = self.changes_seen.get(topic) else { return true };
        match seen.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(i) => seen[i].1 < written_ms,
            Err(_) => true,
        }
    }

    /// Remember `topic`'s `buckets` as seen, each with its latest write.
    fn see(&mut self, topic: String, buckets: &[(EpochMillis, EpochMillis)]) {
        let seen = self.changes_seen.entry(topic).or_default();
        for &(bucket, written_ms) in buckets {
            match seen.binary_search_by_key(&bucket, |(b, _)| *b) {
                Ok(i) => seen[i].1 = seen[i].1.max(written_ms),
                Err(i) => seen.insert(i, (bucket, written_ms)),
            }
        }
    }

    /// After a pass: the next read starts at `since`; the changes older than it leave the overlap,
    /// and their buckets are read once more (a change row can be seen before the tally it points
    /// at, in a store that is only eventually consistent: that later read sees the tally).
    fn leave_overlap(&mut self, since: EpochMillis) {
        self.changes_since = Some(since);
        let core = &mut self.core;
        self.changes_seen.retain(|topic, seen| {
            let leaving = seen.iter().filter(|(b, written)| *written < since && *b != REPORTS_CHANGED);
            let leaving: Vec<EpochMillis> = leaving.map(|(b, _)| *b).collect();
            if !leaving.is_empty() && core.read_in_full(topic) {
                core.note_buckets(topic, leaving, false);
            }
            seen.retain(|(_, written)| *written >= since);
            if seen.capacity() > 2 * seen.len() + 8 {
                seen.shrink_to_fit();
            }
            !seen.is_empty()
        });
    }

    /// A full read of the rows a pass needs, and the first bucket start they cover. While the
    /// topic's bucket width is unknown, the rows from the horizon on tell it; then the one bucket
    /// that may straddle the horizon is read too. No rows at all: nothing to evaluate. Rows of
    /// buckets up to [`FUTURE_READ_MS`] ahead are read too: written before this full read, they
    /// would never appear in the change index after it.
    async fn read_rows(&self, topic: &str, now: EpochMillis) -> Result<(EpochMillis, Vec<TallyRow>), StoreError> {
        let watermark = self.core.watermark();
        let until = now + FUTURE_READ_MS;
        if let Some(width) = self.core.width_ms(topic) {
            let from = watermark.first_bucket(width, now);
            return Ok((from, self.store.read_range(topic, from, until).await?));
        }
        let horizon = watermark.horizon(now);
        let recent = self.store.read_range(topic, horizon, until).await?;
        let Some(width) = recent.iter().map(|r| r.bucket_width_ms).max() else { return Ok((horizon, recent)) };
        let from = watermark.first_bucket(width, now);
        let mut rows = self.store.read_range(topic, from, horizon).await?;
        rows.extend(recent);
        Ok((from, rows))
    }

    /// The topics with a pipeline this pass looks at ([`Watchlist`]), with the gauges and the
    /// rate-limited log lines about the others.
    fn admit(&mut self, topics: Vec<String>) -> Admission {
        let candidates = topics.into_iter().filter(|t| pipeline_for(&self.pipelines, t).is_some()).collect();
        let known: std::collections::HashSet<&str> = self.core.alerts().values().map(|a| a.topic.as_str()).collect();
        let shards = self.ownership.shards().unwrap_or(1);
        let taken_over = |t: &str| self.taken_over.contains(&kaudit_alerting::shard_of(t, shards));
        let admission = self.watch.admit(candidates, |t| known.contains(t) || taken_over(t));
        self.metrics.topics_watched.set(self.watch.len() as i64);
        self.metrics.topics_waiting.set(admission.waiting as i64);
        self.metrics.topics_ignored.set(admission.ignored as i64);
        let due = |last: &mut Option<Instant>| {
            let due = last.is_none_or(|t| t.elapsed() >= LOG_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if admission.waiting > 0 && due(&mut self.logged[0]) {
            tracing::info!(
                waiting = admission.waiting,
                admitted = admission.admitted,
                "new topics wait for later passes (verifier.max_new_topics_per_pass)"
            );
        }
        if admission.ignored > 0 && due(&mut self.logged[1]) {
            tracing::warn!(
                ignored = admission.ignored,
                watched = self.watch.len(),
                "topics ignored: verifier.max_topics topics are watched already"
            );
        }
        admission
    }

    /// Record a pass's alert transitions under the flood guard, then keep the alerts; returns how
    /// many were notified.
    async fn record_alerts(
        &mut self,
        updates: Vec<AlertUpdate>,
        now: EpochMillis,
        hold: &Hold<'_>,
    ) -> Result<usize, TickError> {
        let limits = self.dispatcher.as_ref().map_or(Limits::default(), Dispatcher::limits);
        let previous = self.core.alerts().get(FLOOD_KEY);
        let Guarded { notify, quiet, unchanged, flood } =
            guard(updates, limits.max_notifications_per_pass, previous, self.flood_quiet_ms, now);
        unchanged.into_iter().for_each(|a| self.core.apply_alert(a));
        let (flood_notify, flood_quiet) = match flood {
            Some(f) if f.transition => (Some(f.alert), None),
            Some(f) => (None, Some(f.alert)),
            None => (None, None),
        };
        let mut sent = 0;
        for alert in notify.into_iter().chain(flood_notify) {
            tracing::warn!(key = %alert.dedup_key, state = alert.state.as_str(), summary = %alert.summary(), "alert");
            if let Some(d) = &self.dispatcher {
                hold.ensure().await?;
                d.record(&alert, now).await?;
            }
            sent += 1;
            self.core.apply_alert(alert);
        }
        for alert in quiet.into_iter().chain(flood_quiet) {
            tracing::debug!(key = %alert.dedup_key, state = alert.state.as_str(), "alert (flood guard: not notified)");
            if alert.kind != kaudit_alerting::AlertKind::Flood {
                self.metrics.notifications_suppressed.with_label_values(&[alert.kind.as_str()]).inc();
            }
            if let Some(d) = &self.dispatcher {
                hold.ensure().await?;
                d.record_state(&alert, now).await?;
            }
            self.core.apply_alert(alert);
        }
        if let Some(d) = &self.dispatcher
            && sent > 0
        {
            d.trim_outboxes().await?;
        }
        Ok(sent)
    }

    /// Take up `topic`'s stored CUSUM states, once per run, before its first pass commits. A failed
    /// read fails the pass (retried next interval) rather than feed fresh detectors, whose states
    /// would then replace the stored baselines.
    async fn load_cusum_states(&mut self, topic: &str) -> Result<(), StoreError> {
        let stored = self.store.read_cusum_states(Some(topic)).await?;
        self.take_cusum_states(topic, stored);
        Ok(())
    }

    fn take_cusum_states(&mut self, topic: &str, stored: Vec<kaudit_schema::CusumStateRow>) {
        for reason in self.core.load_cusum_states(topic, stored) {
            tracing::warn!(topic, %reason, "stored cusum state left out: its baseline is learned again");
        }
    }

    /// At the first pass: every admitted topic's stored CUSUM states in one read, not one per topic.
    async fn load_all_cusum_states(&mut self, topics: &[String]) -> Result<(), StoreError> {
        let mut by_topic: HashMap<String, Vec<kaudit_schema::CusumStateRow>> = HashMap::new();
        for row in self.store.read_cusum_states(None).await? {
            by_topic.entry(row.topic.clone()).or_default().push(row);
        }
        for topic in topics {
            if self.core.cusum_states_to_load(topic) {
                let stored = by_topic.remove(topic).unwrap_or_default();
                self.take_cusum_states(topic, stored);
            }
        }
        Ok(())
    }

    /// Store the states of `topic`'s detectors fed since their last write: after the pass's
    /// verdicts are written and committed, never before.
    ///
    /// If this write fails, or the verifier dies between the verdicts' write and this one, the
    /// pass's verdicts are stored and the detectors' new states are not. In the same run the core
    /// keeps them unsaved and the topic's next pass writes them. After a restart the detectors
    /// continue from their previous stored state, and the pass's buckets, whose verdicts are
    /// stored, are `Known` and feed nothing: the detectors miss that pass's observations (one per
    /// bucket and signal) and never see one twice. A missed sample delays a baseline by a bucket; a
    /// doubled one would bias it.
    /// A pass's topics are written [`CUSUM_SAVE_TOPICS`] at a time.
    async fn save_cusum_states(&mut self, topics: &[String], now: EpochMillis) -> Result<(), StoreError> {
        // A few hundred topics a write: a first pass over 10,000 topics would otherwise hold every
        // detector's serialised state (kilobytes each) at once.
        for chunk in topics.chunks(CUSUM_SAVE_TOPICS) {
            let by_topic: Vec<(&String, Vec<_>)> = chunk
                .iter()
                .map(|t| (t, self.core.cusum_states_to_save(t, now)))
                .filter(|(_, r)| !r.is_empty())
                .collect();
            if by_topic.is_empty() {
                continue;
            }
            let rows: Vec<_> = by_topic.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
            self.store.write_cusum_states(&rows).await?;
            for (topic, rows) in &by_topic {
                self.core.cusum_states_saved(topic, rows);
            }
        }
        Ok(())
    }

    /// Evaluate every `evaluate_interval` until `shutdown` resolves; store errors are logged and
    /// retried on the next pass.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticker = tokio::time::interval(std::time::Duration::from_millis(self.evaluate_interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let stopping = self.stopping.clone();
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    // A stop does not wait for the whole pass, which can take long after a
                    // takeover: the pass ends at its next topic, finishing those it evaluated.
                    let (result, stopped) = {
                        let pass = self.tick();
                        tokio::pin!(pass);
                        tokio::select! {
                            result = &mut pass => (result, false),
                            _ = &mut shutdown => {
                                stopping.store(true, Ordering::SeqCst);
                                (pass.await, true)
                            }
                        }
                    };
                    if let Err(error) = result {
                        if matches!(error, TickError::Fenced(_)) {
                            self.ownership.unfence();
                        }
                        self.metrics.evaluation_failures.inc();
                        tracing::warn!(%error, "evaluation failed; retrying next interval");
                    }
                    if stopped {
                        return;
                    }
                }
                _ = &mut shutdown => return,
            }
        }
    }
}

/// How long a sharded pass reads cold topics (see `Engine::pass_order`).
struct ColdBudget {
    until: Instant,
    /// No cold topic read yet this pass: the first is always read.
    first: std::cell::Cell<bool>,
}

impl ColdBudget {
    /// Whether `topic` is left for a later pass.
    fn cut(&self, core: &EngineCore, topic: &str) -> bool {
        if core.read_in_full(topic) {
            return false;
        }
        if self.first.replace(false) {
            return false;
        }
        Instant::now() >= self.until
    }
}

/// Who writes `writes` (verdicts of `topic`): one row per bucket, with the shard's epoch.
fn owner_rows(
    topic: &str,
    writes: &[kaudit_schema::VerdictRow],
    hold: &Hold<'_>,
    now: EpochMillis,
) -> Vec<VerdictOwnerRow> {
    let epoch = hold.epoch(topic).unwrap_or(0);
    let buckets: BTreeSet<EpochMillis> = writes.iter().map(|w| w.bucket_start_ms).collect();
    buckets
        .into_iter()
        .map(|bucket_start_ms| VerdictOwnerRow {
            topic: topic.to_string(),
            bucket_start_ms,
            epoch,
            owner: hold.owner().to_string(),
            written_ms: now,
        })
        .collect()
}

/// Add a committed pass's deltas to the metrics.
fn record_metrics(metrics: &VerifierMetrics, topic: &str, deltas: &MetricDeltas) {
    metrics.buckets_evaluated.inc_by(deltas.buckets_evaluated);
    metrics.revisions.inc_by(deltas.revisions);
    for (outcome, n) in &deltas.verdicts {
        metrics.verdicts.with_label_values(&[outcome.as_str()]).inc_by(*n);
    }
    for (tier, n) in &deltas.upstream_messages {
        metrics.topics.add_upstream(topic, tier, *n);
    }
    for (tier, (missing, extra)) in &deltas.messages {
        metrics.topics.add_messages(topic, tier, *missing, *extra);
    }
    for (tier, (_, q)) in &deltas.latency {
        metrics.topics.set_latency(topic, tier, [q.p50, q.p95, q.p99, q.max]);
    }
    for r in &deltas.cusum {
        metrics.topics.set_cusum(topic, &r.tier, r.signal, r.statistic);
        if r.alarm {
            tracing::info!(topic, tier = %r.tier, signal = r.signal, bucket = r.bucket_start_ms, z = r.z, "cusum alarm");
        }
    }
}

/// Set the tiers' lag and liveness gauges after a committed pass.
fn record_gauges(metrics: &VerifierMetrics, topic: &str, gauges: &[TierGauge]) {
    for g in gauges {
        metrics.topics.set_tier(topic, &g.tier, g.lag_seconds, g.agents_live as i64);
    }
}

#[cfg(test)]
mod tests;
