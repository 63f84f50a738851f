//! The engine's decisions, pure: no store, no clock, no tokio. Given a topic's tally rows, the
//! verdicts already stored, `now` and its own state, the core says which buckets are due, which
//! verdicts are new or revised (the rows to write), what the metrics and detectors see, and which
//! alert transitions follow. The driver in `engine.rs` does the reading and writing around it.
//!
//! A pass over one topic has two halves, so that nothing is remembered that was not stored:
//! [`EngineCore::plan`] (`&self`) decides, the driver writes the verdicts it asks for, and only then
//! [`EngineCore::commit`] (`&mut self`) remembers them, feeds the detectors and yields the metric
//! deltas. A pass whose write fails leaves the core as it was, and the next pass decides the same.
//!
//! Lag is not loss. Each pass also takes the topic's progress and heartbeat rows
//! ([`Reports`]), from which [`TopicProgress`] derives each tier's watermark and liveness. A due
//! bucket that a tier of the edge has not got past is `pending` (stored with how far behind the
//! tier is, but not yet judged); once both tiers have passed it, the comparison is its first
//! verdict (pending → final is not a revision). A bucket still pending when it leaves the
//! lateness window becomes `unreached`. A difference on a bucket that a vanished, non-resuming
//! agent instance held open is `indeterminate`. Tiers that report no progress are judged by time
//! alone, exactly as before progress existed.
//!
//! Invariants (property-tested in `core/tests.rs`):
//! * a bucket is judged only while `end + grace < now <= end + grace + lateness` ([`Watermark`]);
//! * a bucket is never judged final while a tier of its edge has a watermark before its end,
//!   unless it was judged final before (then late rows revise it, as before);
//! * an edge's verdict is written once when first reached and again only when late rows change
//!   it (a revision); the same rows, in any order, any number of times, write nothing more;
//! * a bucket feeds the message counters and the detectors once, at its first final verdict, and
//!   only when that is a comparison (not indeterminate or unreached, which prove nothing);
//! * verdicts loaded from the store (an earlier run's) count as reached: no recount after a restart;
//! * detector states loaded from the store continue exactly where they stopped (`cusum_state`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kaudit_alerting::{Alert, AlertKind};
use kaudit_schema::sketch::Quantiles;
use kaudit_schema::{EpochMillis, HeartbeatRow, Outcome, ProgressRow, TallyRow, VerdictRow};

use crate::config::VerifierConfig;
use crate::cusum::{Detector, Shift};
use crate::evaluate::{EdgeVerdict, evaluate_bucket, merge_rows};
use crate::hold::{Hold, hold_for};
use crate::pipeline::Pipeline;
use crate::progress::{Liveness, TopicProgress};

mod alerting;
mod cusum_state;
mod recall;

pub use self::alerting::TierGauge;
pub use self::recall::{EdgeRecall, Recalled};

/// The signals a CUSUM watches per edge, and the alert kind an upward shift raises.
pub(super) const SIGNALS: [(&str, AlertKind); 3] =
    [("loss_ratio", AlertKind::Loss), ("duplicate_ratio", AlertKind::Duplicates), ("p99_delay_ms", AlertKind::Delay)];

/// The time watermark: when a bucket may be judged, and until when late rows revise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// A bucket is judged once `now > end + grace_ms`.
    pub grace_ms: i64,
    /// ... and re-judged on late rows while `now <= end + grace_ms + lateness_ms`.
    pub lateness_ms: i64,
}

/// Where a bucket stands against the watermark at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Its agents may still be flushing it: not judged yet.
    Open,
    /// Judged now, and revised if late rows change it.
    Due,
    /// Past the lateness horizon: left as it was last judged.
    Closed,
}

impl Watermark {
    /// The earliest bucket *end* still judged at `now`.
    pub fn horizon(&self, now: EpochMillis) -> EpochMillis {
        now - self.lateness_ms - self.grace_ms
    }

    /// The phase at `now` of the bucket `[start, start + width)`.
    pub fn phase(&self, start: EpochMillis, width_ms: i64, now: EpochMillis) -> Phase {
        let end = start + width_ms;
        if end + self.grace_ms >= now {
            Phase::Open
        } else if end < self.horizon(now) {
            Phase::Closed
        } else {
            Phase::Due
        }
    }

    /// The first bucket start a pass at `now` needs rows from, for buckets `width_ms` wide.
    pub fn first_bucket(&self, width_ms: i64, now: EpochMillis) -> EpochMillis {
        self.horizon(now) - width_ms
    }
}

/// What a pass decided about one edge of one due bucket.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A tier has not got past the bucket: store it (for the API), count nothing.
    Pending { verdict: EdgeVerdict, row: VerdictRow },
    /// The first final verdict: store it, count it, feed the detectors (a comparison only).
    First { verdict: EdgeVerdict, row: VerdictRow },
    /// Reached before and changed by late rows: store the revision.
    Revised { verdict: EdgeVerdict, row: VerdictRow },
    /// Stored already with this outcome (by an earlier run): remember it; nothing to write or count.
    Known { verdict: EdgeVerdict },
}

impl Decision {
    pub fn verdict(&self) -> &EdgeVerdict {
        match self {
            Decision::Pending { verdict, .. }
            | Decision::First { verdict, .. }
            | Decision::Revised { verdict, .. }
            | Decision::Known { verdict } => verdict,
        }
    }

    /// The row to write, if any.
    pub fn row(&self) -> Option<&VerdictRow> {
        match self {
            Decision::Pending { row, .. } | Decision::First { row, .. } | Decision::Revised { row, .. } => Some(row),
            Decision::Known { .. } => None,
        }
    }
}

/// The decisions of one pass over one topic, to be written and then committed.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicPass {
    pub topic: String,
    pub now: EpochMillis,
    /// The topic's bucket width per its rows (`None`: no rows seen yet, so nothing to evaluate).
    pub width_ms: Option<i64>,
    /// Buckets leaving the lateness window still pending (as `unreached`) first, then due
    /// buckets; each in bucket order, then pipeline edge order.
    pub decisions: Vec<Decision>,
    /// The tiers' progress and liveness at `now`, as the decisions saw them.
    pub progress: TopicProgress,
}

/// The progress and heartbeat rows of one topic, as read for a pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reports<'a> {
    pub progress: &'a [ProgressRow],
    pub heartbeats: &'a [HeartbeatRow],
}

impl TopicPass {
    /// The verdict rows to write before [`EngineCore::commit`].
    pub fn writes(&self) -> Vec<VerdictRow> {
        self.decisions.iter().filter_map(Decision::row).cloned().collect()
    }
}

/// What the metrics should add after a committed pass over one topic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricDeltas {
    /// Edges of buckets judged for the first time.
    pub buckets_evaluated: u64,
    pub revisions: u64,
    /// Verdicts reached or revised, by outcome (the `kind` label).
    pub verdicts: BTreeMap<Outcome, u64>,
    /// (missing, extra) messages at first evaluation, by downstream tier; zeros included.
    pub messages: BTreeMap<String, (u64, u64)>,
    /// Upstream messages of the edges judged for the first time (comparisons only), by
    /// downstream tier: the denominator of loss and duplicate ratios.
    pub upstream_messages: BTreeMap<String, u64>,
    /// Each detector observation, in the order made.
    pub cusum: Vec<CusumReading>,
    /// Downstream latency of the latest bucket judged for the first time, by tier: (bucket, quantiles).
    pub latency: BTreeMap<String, (EpochMillis, Quantiles)>,
}

/// One CUSUM observation of one edge's signal.
#[derive(Debug, Clone, PartialEq)]
pub struct CusumReading {
    pub tier: String,
    pub signal: &'static str,
    pub bucket_start_ms: EpochMillis,
    pub z: f64,
    pub statistic: f64,
    /// An upward shift alarmed on this observation.
    pub alarm: bool,
}

/// An alert as it should be now, and whether its state changed (a notification to send).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertUpdate {
    pub alert: Alert,
    pub transition: bool,
}

/// What the core remembers about one topic between passes, bounded by the lateness horizon.
#[derive(Debug, Default)]
struct TopicState {
    width_ms: Option<i64>,
    /// Each edge's verdicts by bucket, stored (by this run or, loaded, an earlier one) or decided
    /// in this run, by downstream tier: what decisions and alerts are made from (`recall`).
    edges: Vec<(String, EdgeRecall)>,
    /// The earliest bucket start from which stored verdicts were loaded.
    loaded_from: Option<EpochMillis>,
    detectors: HashMap<(String, &'static str), Detector>,
    /// Buckets where a CUSUM alarmed, with the decision interval, by (tier, alert kind).
    cusum_hits: HashMap<(String, AlertKind), BTreeMap<EpochMillis, f64>>,
    /// Which detectors' states are stored, and whether the stored ones were taken up.
    cusum: cusum_state::CusumBook,
    /// The tiers' progress as of the last committed pass: what lag and liveness alerts read.
    progress: TopicProgress,
    /// Buckets with tallies whose every edge is not final yet (not due, pending, or never read
    /// since they changed): what an incremental pass reads besides the changed ones. Bounded by
    /// the lateness horizon.
    open: BTreeSet<EpochMillis>,
    /// The topic's rows were read in full once in this run: later passes may read only buckets
    /// that changed or are open.
    read_in_full: bool,
}

/// The verifier's state and decisions for every topic.
pub struct EngineCore {
    config: VerifierConfig,
    watermark: Watermark,
    liveness: Liveness,
    topics: HashMap<String, TopicState>,
    alerts: HashMap<String, Alert>,
}

impl EngineCore {
    /// A core with nothing known; `grace_ms` and `agent_timeout_ms` as resolved from the agents'
    /// flush interval.
    pub fn new(config: VerifierConfig, grace_ms: u64, agent_timeout_ms: u64) -> Self {
        let watermark = Watermark { grace_ms: grace_ms as i64, lateness_ms: config.lateness_ms as i64 };
        let liveness = Liveness { agent_timeout_ms: agent_timeout_ms as i64, window_ms: config.lateness_ms as i64 };
        Self { config, watermark, liveness, topics: HashMap::new(), alerts: HashMap::new() }
    }

    pub fn watermark(&self) -> Watermark {
        self.watermark
    }

    /// The topic's bucket width, once rows have shown it.
    pub fn width_ms(&self, topic: &str) -> Option<i64> {
        self.topics.get(topic)?.width_ms
    }

    /// Whether `topic` has been read in full in this run (later changes to it must be noted; a
    /// topic not read yet is read in full when its turn comes, whatever changed).
    pub fn read_in_full(&self, topic: &str) -> bool {
        self.topics.get(topic).is_some_and(|s| s.read_in_full)
    }

    /// Take note of buckets of `topic` whose tallies changed (or that a full read found): each is
    /// open until every edge has a final verdict. `full` marks the topic as read in full.
    pub fn note_buckets(&mut self, topic: &str, buckets: impl IntoIterator<Item = EpochMillis>, full: bool) {
        let state = self.topics.entry(topic.to_string()).or_default();
        state.open.extend(buckets);
        state.read_in_full |= full;
    }

    /// The buckets an incremental pass over `topic` must read at `now`: the open ones that are
    /// due, in order. `None` when the topic needs a full read (not read in full in this run, or
    /// its bucket width unknown).
    pub fn buckets_to_read(&self, topic: &str, now: EpochMillis) -> Option<Vec<EpochMillis>> {
        let state = self.topics.get(topic).filter(|s| s.read_in_full)?;
        let width = state.width_ms?;
        Some(state.open.iter().copied().filter(|b| self.watermark.phase(*b, width, now) == Phase::Due).collect())
    }

    /// The tiers' progress of an idle `topic` at `now` from its latest `reports` (unchanged since
    /// read: time alone moves liveness and lag), for the alerts and gauges.
    pub fn refresh_progress(&mut self, topic: &str, reports: Reports<'_>, now: EpochMillis) {
        if let Some(state) = self.topics.get_mut(topic) {
            let progress = TopicProgress::new(reports.progress, reports.heartbeats, now, self.liveness);
            state.reopen_for_vanished(&progress);
            state.progress = progress;
        }
    }

    /// Whether a pass over `topic` at `now` can decide nothing: no open bucket is due and no
    /// stored verdict is pending (which only time or progress could close). Such a topic's
    /// tallies and reports need not be read.
    pub fn is_idle(&self, topic: &str, now: EpochMillis) -> bool {
        self.buckets_to_read(topic, now).is_some_and(|b| b.is_empty())
            && self.topics.get(topic).is_some_and(|s| s.remembered().all(|(_, _, r)| !r.is_pending()))
    }

    /// Current alerts by dedup key.
    pub fn alerts(&self) -> &HashMap<String, Alert> {
        &self.alerts
    }

    /// Drop everything known about the topics `gone` selects, and their alerts: this instance no
    /// longer owns them, or takes them over from another owner and must read them afresh.
    pub fn forget_topics(&mut self, gone: impl Fn(&str) -> bool) {
        self.topics.retain(|t, _| !gone(t));
        self.alerts.retain(|_, a| !gone(&a.topic));
    }

    /// Take up alerts as stored by an earlier run (their state decides what is a transition).
    pub fn restore_alerts(&mut self, alerts: impl IntoIterator<Item = (String, Alert)>) {
        self.alerts.extend(alerts);
    }

    /// Bucket starts `[from, to)` whose stored verdicts must be loaded before a pass over `topic`
    /// that reads rows from `from`; `None` when the core knows them already.
    pub fn verdicts_to_load(
        &self,
        topic: &str,
        from: EpochMillis,
        now: EpochMillis,
    ) -> Option<(EpochMillis, EpochMillis)> {
        match self.topics.get(topic).and_then(|t| t.loaded_from) {
            None => Some((from, now)),
            Some(loaded) if from < loaded => Some((from, loaded)),
            Some(_) => None,
        }
    }

    /// Take up verdicts stored for `topic` from bucket `from` on, as reached.
    pub fn load_verdicts(&mut self, topic: &str, from: EpochMillis, rows: Vec<VerdictRow>) {
        let state = self.topics.entry(topic.to_string()).or_default();
        state.loaded_from = Some(state.loaded_from.map_or(from, |l| l.min(from)));
        for row in rows {
            let bucket = row.bucket_start_ms;
            state.edge_mut(&row.tier).insert_if_absent(bucket, Recalled::stored(row));
        }
    }

    /// Decide a pass over `topic`'s `rows` (in any order) at `now`, with no progress reported:
    /// time alone decides. Changes nothing.
    pub fn plan(&self, topic: &str, pipeline: &Pipeline, rows: &[TallyRow], now: EpochMillis) -> TopicPass {
        self.plan_with(topic, pipeline, rows, Reports::default(), now)
    }

    /// Decide a pass over `topic`'s `rows` (in any order) and its agents' `reports` at `now`.
    /// Changes nothing.
    pub fn plan_with(
        &self,
        topic: &str,
        pipeline: &Pipeline,
        rows: &[TallyRow],
        reports: Reports<'_>,
        now: EpochMillis,
    ) -> TopicPass {
        let state = self.topics.get(topic);
        let progress = TopicProgress::new(reports.progress, reports.heartbeats, now, self.liveness);
        let widths = bucket_widths(rows);
        let width_ms = widths.last_key_value().map(|(_, w)| *w).or(state.and_then(|s| s.width_ms));
        let mut decisions = match (state, width_ms) {
            (Some(state), Some(width)) => self.unreached(state, pipeline, width, &progress, now),
            _ => Vec::new(),
        };
        for (bucket, tiers) in merge_rows(rows) {
            let width = widths[&bucket];
            if self.watermark.phase(bucket, width, now) != Phase::Due {
                continue;
            }
            for mut v in evaluate_bucket(topic, bucket, &tiers, pipeline, &self.config.thresholds) {
                let judged = state.is_some_and(|s| s.judged(bucket, &v.tier));
                v.hold = hold_for(&v, bucket + width, &progress, judged);
                decisions.extend(decide(state, v, now));
            }
        }
        TopicPass { topic: topic.to_string(), now, width_ms, decisions, progress }
    }

    /// Edges of buckets that leave the lateness window still pending: their final verdict,
    /// `unreached`. Found among what the state remembers, which keeps each bucket until the first
    /// commit after it closed.
    fn unreached(
        &self,
        state: &TopicState,
        pipeline: &Pipeline,
        width: i64,
        progress: &TopicProgress,
        now: EpochMillis,
    ) -> Vec<Decision> {
        let edge_index = |tier: &str| pipeline.edges().iter().position(|e| e.downstream == tier);
        let mut closing: Vec<&VerdictRow> = state
            .remembered()
            .filter_map(|(_, _, r)| r.pending_row())
            .filter(|r| self.watermark.phase(r.bucket_start_ms, width, now) == Phase::Closed)
            .collect();
        closing.sort_by_key(|r| (r.bucket_start_ms, edge_index(&r.tier)));
        let decide = |row: &VerdictRow| {
            let base = EdgeVerdict::from_row(row);
            let pending = base.hold.clone().unwrap_or(Hold::Pending { behind_tier: row.tier.clone(), lag_ms: 0 });
            let verdict = EdgeVerdict { hold: Some(pending.unreached(row.bucket_start_ms + width, progress)), ..base };
            Decision::First { row: verdict.to_row(now), verdict }
        };
        closing.into_iter().map(decide).collect()
    }

    /// Remember a pass whose writes are stored: history, reached verdicts, detectors; forget what
    /// fell past the horizon. Returns what the metrics should add.
    pub fn commit(&mut self, pass: TopicPass) -> MetricDeltas {
        let mut deltas = MetricDeltas::default();
        let state = self.topics.entry(pass.topic).or_default();
        state.width_ms = pass.width_ms;
        state.reopen_for_vanished(&pass.progress);
        state.progress = pass.progress;
        for decision in pass.decisions {
            let verdict = match decision {
                Decision::Known { verdict } => {
                    state.edge_mut(&verdict.tier).decided_known(verdict.bucket_start_ms);
                    continue;
                }
                Decision::Pending { verdict, row } => {
                    if state.edge(&verdict.tier).and_then(|e| e.get(verdict.bucket_start_ms)).is_none() {
                        *deltas.verdicts.entry(Outcome::Pending).or_default() += 1;
                    }
                    (verdict, row)
                }
                Decision::First { verdict, row } => {
                    count_first(&mut deltas, &verdict);
                    if verdict.hold.is_none() {
                        deltas.cusum.extend(feed_detectors(state, &self.config, &verdict));
                    }
                    (verdict, row)
                }
                Decision::Revised { verdict, row } => {
                    deltas.revisions += 1;
                    *deltas.verdicts.entry(verdict.outcome()).or_default() += 1;
                    (verdict, row)
                }
            };
            let (verdict, row) = verdict;
            state.edge_mut(&verdict.tier).insert(verdict.bucket_start_ms, Recalled::decided(row));
        }
        if let Some(width) = state.width_ms {
            state.forget_before(self.watermark.first_bucket(width, pass.now));
            state.settle(width, pass.now, self.watermark);
        }
        deltas
    }
}

impl TopicState {
    /// The edge into `tier`, if anything is remembered of it.
    fn edge(&self, tier: &str) -> Option<&EdgeRecall> {
        self.edges.iter().find(|(t, _)| t == tier).map(|(_, e)| e)
    }

    fn edge_mut(&mut self, tier: &str) -> &mut EdgeRecall {
        match self.edges.iter().position(|(t, _)| t == tier) {
            Some(i) => &mut self.edges[i].1,
            None => {
                self.edges.push((tier.to_string(), EdgeRecall::default()));
                &mut self.edges.last_mut().expect("just pushed").1
            }
        }
    }

    /// Every (tier, bucket, verdict) remembered.
    fn remembered(&self) -> impl Iterator<Item = (&str, EpochMillis, &Recalled)> {
        self.edges.iter().flat_map(|(t, e)| e.all().map(move |(b, r)| (t.as_str(), b, r)))
    }

    /// Whether the edge into `tier` has a final verdict for `bucket` (stored or loaded).
    fn judged(&self, bucket: EpochMillis, tier: &str) -> bool {
        self.edge(tier).and_then(|e| e.get(bucket)).is_some_and(Recalled::is_final)
    }

    /// An instance found vanished since the last progress may have held buckets open that are
    /// judged already: they are opened again, so the next pass re-reads them and the verdicts a
    /// full read would revise (to indeterminate) are revised.
    fn reopen_for_vanished(&mut self, next: &TopicProgress) {
        for (tier, progress) in &next.tiers {
            let before = self.progress.tiers.get(tier).map(|t| t.vanished.as_slice()).unwrap_or_default();
            for (_, from, until) in progress.vanished.iter().filter(|v| !before.contains(v)) {
                let held = self.remembered().map(|(_, b, _)| b).filter(|b| *from <= *b && *b <= *until);
                self.open.extend(held.collect::<Vec<_>>());
            }
        }
    }

    /// Close the open buckets that are due and whose every stored verdict is final: only a change
    /// of their tallies opens them again.
    fn settle(&mut self, width: i64, now: EpochMillis, watermark: Watermark) {
        let mut verdicts: BTreeMap<EpochMillis, bool> = BTreeMap::new();
        for (_, bucket, r) in self.remembered() {
            *verdicts.entry(bucket).or_insert(true) &= r.is_final();
        }
        self.open.retain(|b| watermark.phase(*b, width, now) != Phase::Due || verdicts.get(b) != Some(&true));
    }

    /// Drop everything about buckets starting before `first`: they are past the horizon for good.
    fn forget_before(&mut self, first: EpochMillis) {
        self.open.retain(|b| *b >= first);
        self.edges.iter_mut().for_each(|(_, e)| e.forget_before(first));
        self.cusum_hits.values_mut().for_each(|h| h.retain(|b, _| *b >= first));
    }
}

/// Each bucket's width per its rows; where rows disagree, the widest, so row order never matters.
fn bucket_widths(rows: &[TallyRow]) -> BTreeMap<EpochMillis, i64> {
    let mut widths: BTreeMap<EpochMillis, i64> = BTreeMap::new();
    for r in rows {
        let w = widths.entry(r.key.bucket_start_ms).or_insert(r.bucket_width_ms);
        *w = (*w).max(r.bucket_width_ms);
    }
    widths
}

/// What to do with one fresh verdict, given what the topic's state already holds.
fn decide(state: Option<&TopicState>, verdict: EdgeVerdict, now: EpochMillis) -> Option<Decision> {
    let remembered = state.and_then(|s| s.edge(&verdict.tier)?.get(verdict.bucket_start_ms));
    let row = verdict.to_row(now);
    Some(match remembered {
        // Decided in this run already, as it stands: nothing new.
        Some(stored) if stored.stores(&row) && stored.is_decided() => return None,
        Some(stored) if stored.stores(&row) => Decision::Known { verdict },
        _ if !verdict.is_final() => Decision::Pending { verdict, row },
        Some(stored) if stored.is_final() => Decision::Revised { verdict, row },
        _ => Decision::First { verdict, row },
    })
}

/// Count a first final verdict; its messages only when it is a comparison.
fn count_first(deltas: &mut MetricDeltas, v: &EdgeVerdict) {
    deltas.buckets_evaluated += 1;
    *deltas.verdicts.entry(v.outcome()).or_default() += 1;
    if v.hold.is_some() {
        return;
    }
    let (missing, extra) = deltas.messages.entry(v.tier.clone()).or_default();
    *missing += v.missing();
    *extra += v.extra();
    *deltas.upstream_messages.entry(v.tier.clone()).or_default() += v.upstream_count;
    if let Some(q) = v.latency {
        let latest = deltas.latency.entry(v.tier.clone()).or_insert((v.bucket_start_ms, q));
        if v.bucket_start_ms >= latest.0 {
            *latest = (v.bucket_start_ms, q);
        }
    }
}

/// Observe a first-evaluated bucket's signals; an upward alarm marks the bucket for its alert kind.
fn feed_detectors(state: &mut TopicState, c: &VerifierConfig, v: &EdgeVerdict) -> Vec<CusumReading> {
    let values = [Some(v.loss_ratio), Some(v.duplicate_ratio), v.p99_ms.map(|p| p as f64)];
    let mut readings = Vec::new();
    for ((signal, kind), value) in SIGNALS.into_iter().zip(values) {
        let Some(x) = value else { continue };
        let floor = cusum_state::sigma_floor(c, signal);
        let detector = state
            .detectors
            .entry((v.tier.clone(), signal))
            .or_insert_with(|| Detector::new(c.baseline_window, c.baseline_min_samples, floor));
        let step = detector.observe(x, c.cusum);
        state.cusum.observed(&v.tier, signal, v.bucket_start_ms);
        let alarm = step.alarm == Some(Shift::Up);
        if alarm {
            state.cusum_hits.entry((v.tier.clone(), kind)).or_default().insert(v.bucket_start_ms, c.cusum.h);
        }
        let (tier, bucket_start_ms) = (v.tier.clone(), v.bucket_start_ms);
        readings.push(CusumReading { tier, signal, bucket_start_ms, z: step.z, statistic: step.statistic, alarm });
    }
    readings
}

#[cfg(test)]
mod tests;
