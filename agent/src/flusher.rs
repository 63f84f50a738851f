//! The flusher: every `flush_interval` it snapshots the auditor's changed tallies and upserts
//! them, with the agent's heartbeats and progress; on shutdown it flushes once more.
//!
//! Every batch carries a heartbeat per (topic, tier) stream, so a flush always writes something.
//! From shutdown on, the batches are *final* ([`BatchSource::take_final_batch`]): their heartbeats
//! say `stopped`, and they come with or after the last tallies, so a store that has the stop
//! marker has everything; a crash leaves the last heartbeat without it.
//!
//! A batch the store refuses joins the *backlog*: in memory up to `max_queued_batches`, then in the
//! on-disk [`Spool`]. The backlog drains oldest first whenever the store answers again, and new
//! batches queue behind it, so rows normally reach the store in the order they were taken. Order is
//! not what correctness rests on, though: every row carries a version and the store keeps the
//! highest, so the spool's compaction and the shutdown spill (memory's batches go to the spool, for
//! the next start to replay) can reorder freely.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaudit_schema::{FlushBatch, Store, error_chain};

use crate::ack::AckGate;
use crate::auditor::Auditor;
use crate::metrics::{AgentMetrics, RefusedReason};
use crate::spool::{Spool, SpoolError, compact_batches};

/// Something that yields flush batches: the auditor, or a tap that adds its offsets.
pub trait BatchSource: Send + 'static {
    /// Cumulative rows (and offsets) changed since the previous call, with heartbeats and progress.
    fn take_batch(&mut self) -> FlushBatch;
    /// The same, taken once shutdown has begun: every heartbeat marks a clean stop.
    fn take_final_batch(&mut self) -> FlushBatch {
        let mut batch = self.take_batch();
        for heartbeat in &mut batch.heartbeats {
            heartbeat.stopped = true;
        }
        batch
    }
    /// Only the tally rows changed since the previous call (an early flush for durable
    /// acknowledgements); a source without that notion takes a whole batch.
    fn take_rows(&mut self) -> FlushBatch {
        self.take_batch()
    }
    /// Batches taken so far: the sequence of the latest (see [`crate::ack`]); 0 if not tracked.
    fn sequence(&self) -> u64 {
        0
    }
    /// Report per-stream counters into metrics.
    fn report(&mut self, metrics: &AgentMetrics);
}

impl BatchSource for Auditor {
    fn take_batch(&mut self) -> FlushBatch {
        self.snapshot()
    }

    fn take_rows(&mut self) -> FlushBatch {
        self.snapshot_rows_only()
    }

    fn sequence(&self) -> u64 {
        self.snapshots_taken()
    }

    fn report(&mut self, metrics: &AgentMetrics) {
        let (streams, failures) = self.take_counters();
        metrics.record_streams(&streams);
        for (topic, tier, n) in failures {
            metrics.delivery_failures.with_label_values(&[topic.as_str(), tier.as_str()]).inc_by(n);
        }
        metrics.open_buckets.set(self.open_buckets() as i64);
        metrics.refused_records.with_label_values(&[RefusedReason::StreamCap.as_str()]).inc_by(self.take_refused());
        let diverted = self.take_refused_for(RefusedReason::BucketCap);
        metrics.refused_records.with_label_values(&[RefusedReason::BucketCap.as_str()]).inc_by(diverted);
    }
}

/// How the flusher behaves.
#[derive(Debug, Clone)]
pub struct FlusherOptions {
    pub flush_interval: Duration,
    /// Batches held in memory while the store is down before they go to the spool.
    pub max_queued_batches: usize,
    /// How long shutdown keeps trying to drain the backlog into the store.
    pub shutdown_timeout: Duration,
    /// Durable acknowledgements ([`crate::ack`]): flush early (rows only, after the gate's linger)
    /// when a waiter needs it, spill a batch the store refuses straight to the spool (never to
    /// memory), and publish what is durable after every flush. `None`: interval flushes only.
    pub ack_gate: Option<AckGate>,
}

impl Default for FlusherOptions {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(5),
            max_queued_batches: 64,
            shutdown_timeout: Duration::from_secs(10),
            ack_gate: None,
        }
    }
}

/// What one flush achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    /// Batches written to the store (the new one and any backlog drained).
    pub written: usize,
    /// Batches still waiting (memory + spool).
    pub pending: usize,
}

/// A batch waiting in memory, with the sequence of the snapshot it was taken in.
struct Queued {
    seq: u64,
    batch: FlushBatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlushKind {
    /// The regular flush: a whole batch, counters reported, the backlog retried.
    Interval,
    /// Rows only, for waiting acknowledgements; the store is not retried while it is failing.
    Early,
}

/// Errors that can repeat per early flush are logged at most this often.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Writes an agent's tallies to a store.
pub struct Flusher<S: BatchSource> {
    source: S,
    store: Arc<dyn Store>,
    memory: VecDeque<Queued>,
    spool: Option<Spool>,
    options: FlusherOptions,
    metrics: AgentMetrics,
    /// Shutdown has begun: batches are final.
    stopping: bool,
    /// The latest store write failed: early flushes spill without retrying it, so an outage costs
    /// one failed attempt (and one WARN) per interval, not one per request.
    store_failing: bool,
    /// Sequence of the latest batch taken.
    taken: u64,
    /// When a refused spill was last logged.
    spill_logged: Option<Instant>,
}

impl<S: BatchSource> Flusher<S> {
    /// A flusher; with `spool`, a long outage spills to disk instead of dropping the oldest batches.
    pub fn new(
        source: S,
        store: Arc<dyn Store>,
        spool: Option<Spool>,
        options: FlusherOptions,
        metrics: AgentMetrics,
    ) -> Self {
        Self {
            source,
            store,
            memory: VecDeque::new(),
            spool,
            options,
            metrics,
            stopping: false,
            store_failing: false,
            taken: 0,
            spill_logged: None,
        }
    }

    /// Batches waiting for the store.
    pub fn pending(&self) -> usize {
        self.memory.len() + self.spool.as_ref().map_or(0, Spool::len)
    }

    /// Snapshot, queue, and drain as much of the backlog as the store takes.
    pub async fn flush_once(&mut self) -> FlushReport {
        self.flush(FlushKind::Interval).await
    }

    /// A rows-only flush for waiting acknowledgements: to the store, or (if it fails, or failed
    /// last time) to the spool.
    pub async fn flush_early(&mut self) -> FlushReport {
        self.flush(FlushKind::Early).await
    }

    async fn flush(&mut self, kind: FlushKind) -> FlushReport {
        let batch = match kind {
            FlushKind::Interval if self.stopping => self.source.take_final_batch(),
            FlushKind::Interval => self.source.take_batch(),
            FlushKind::Early => self.source.take_rows(),
        };
        self.taken = self.source.sequence();
        if kind == FlushKind::Interval {
            self.source.report(&self.metrics);
        }
        if !batch.is_empty() {
            self.enqueue(Queued { seq: self.taken, batch });
        }
        let written = if kind == FlushKind::Early && self.store_failing { 0 } else { self.drain().await };
        self.settle();
        self.update_gauges();
        FlushReport { written, pending: self.pending() }
    }

    fn spool_has_backlog(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| !s.is_empty())
    }

    fn enqueue(&mut self, queued: Queued) {
        if self.memory.len() < self.options.max_queued_batches && !self.spool_has_backlog() {
            self.memory.push_back(queued);
        } else if self.spool.is_some() {
            // Memory keeps the oldest batches; newer ones queue on disk behind them.
            self.spill(queued);
        } else {
            // No spool: fold the backlog into one batch of newest versions, which loses nothing.
            self.memory.push_back(queued);
            let seq = self.memory.iter().map(|q| q.seq).min().unwrap_or_default();
            let batch = compact_batches(self.memory.drain(..).map(|q| q.batch));
            tracing::warn!(rows = batch.rows.len(), "store backlog full and no spool configured; compacted in memory");
            self.memory.push_back(Queued { seq, batch });
        }
    }

    fn spill(&mut self, queued: Queued) {
        if self.options.ack_gate.is_some() {
            if let Err(queued) = self.spill_durable(queued) {
                self.memory.push_back(queued);
            }
            return;
        }
        let spool = self.spool.as_mut().expect("caller checked");
        match spool.append(&queued.batch) {
            Ok(outcome) => {
                if outcome.dropped_rows > 0 {
                    self.metrics.spool_dropped_rows.inc_by(outcome.dropped_rows as u64);
                    tracing::error!(
                        dropped_rows = outcome.dropped_rows,
                        spool_bytes = spool.bytes(),
                        "spool full: dropped the oldest audit rows"
                    );
                }
            }
            Err(error) => {
                // The disk failed too, or the batch is larger than the whole spool: keep it in
                // memory rather than lose it.
                self.metrics.spool_refused_batches.inc();
                tracing::error!(error = %error_chain(&error), "cannot spill to the spool; keeping the batch in memory");
                self.memory.push_back(queued);
            }
        }
    }

    /// Append to the spool without dropping anything; the batch back if the spool cannot take it.
    fn spill_durable(&mut self, queued: Queued) -> Result<(), Queued> {
        let spool = self.spool.as_mut().expect("caller checked");
        match spool.append_durable(&queued.batch) {
            Ok(_) => Ok(()),
            Err(error) => {
                self.metrics.spool_refused_batches.inc();
                if self.spill_logged.is_none_or(|t| t.elapsed() >= LOG_INTERVAL) {
                    self.spill_logged = Some(Instant::now());
                    tracing::error!(
                        error = %error_chain(&error),
                        "store down and the spool cannot take the batch: ingest answers 503 (records counted, \
                         kept in memory until the store returns); logged at most every 10 s"
                    );
                }
                Err(queued)
            }
        }
    }

    /// Durable acknowledgements: move what the store did not take from memory to the spool, then
    /// publish the durable watermark (every snapshot before the oldest still in memory).
    fn settle(&mut self) {
        let Some(gate) = self.options.ack_gate.clone() else { return };
        if self.spool.is_some() {
            while let Some(queued) = self.memory.pop_front() {
                if let Err(queued) = self.spill_durable(queued) {
                    self.memory.push_front(queued);
                    break;
                }
            }
        }
        let durable = self.memory.iter().map(|q| q.seq).min().map_or(self.taken, |s| s.saturating_sub(1));
        gate.publish(durable);
    }

    /// The oldest pending batch: memory holds batches older than the spool's only when the spool
    /// is empty, so memory first, then spool.
    fn front(&mut self) -> Result<Option<FlushBatch>, SpoolError> {
        if let Some(q) = self.memory.front() {
            return Ok(Some(q.batch.clone()));
        }
        self.spool.as_mut().map_or(Ok(None), Spool::front)
    }

    async fn drain(&mut self) -> usize {
        let mut written = 0;
        loop {
            let batch = match self.front() {
                Ok(Some(b)) => b,
                Ok(None) => return written,
                Err(error) => {
                    tracing::error!(error = %error_chain(&error), "spool unreadable; retrying at the next flush");
                    return written;
                }
            };
            let started = Instant::now();
            match self.store.write(&batch).await {
                Ok(()) => {
                    self.store_failing = false;
                    self.metrics.flush_duration.observe(started.elapsed().as_secs_f64());
                    self.metrics.flushes.inc();
                    self.metrics.rows_written.inc_by(batch.rows.len() as u64);
                    if self.memory.pop_front().is_none()
                        && let Some(Err(error)) = self.spool.as_mut().map(Spool::pop_front)
                    {
                        tracing::error!(%error, "cannot remove a replayed spool segment; it will be replayed again");
                        return written + 1;
                    }
                    written += 1;
                }
                Err(error) => {
                    self.store_failing = true;
                    self.metrics.flush_failures.inc();
                    tracing::warn!(error = %error_chain(&error), pending = self.pending(), "store write failed; will retry");
                    return written;
                }
            }
        }
    }

    fn update_gauges(&mut self) {
        self.metrics.queued_batches.set(self.memory.len() as i64);
        let (n, bytes, quarantined) =
            self.spool.as_mut().map_or((0, 0, 0), |s| (s.len(), s.bytes(), s.take_quarantined()));
        self.metrics.spool_batches.set(n as i64);
        self.metrics.spool_bytes.set(bytes as i64);
        self.metrics.spool_quarantined.inc_by(quarantined);
    }

    /// Flush every `flush_interval` until `shutdown` resolves, then flush a last time and try to
    /// drain for up to `shutdown_timeout`; what remains in memory is spooled to disk. With an ack
    /// gate, also flush early (rows only) whenever a waiter needs it, after the gate's linger.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> FlushReport {
        let mut ticker = tokio::time::interval(self.options.flush_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate
        let gate = self.options.ack_gate.clone();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = ticker.tick() => { self.flush_once().await; }
                _ = requested(gate.as_ref()) => {
                    if let Some(gate) = gate.as_ref().filter(|g| g.behind()) {
                        tokio::time::sleep(gate.linger()).await;
                        self.flush_early().await;
                    }
                }
                _ = &mut shutdown => break,
            }
        }
        self.shutdown().await
    }

    /// Final flush (its heartbeats mark a clean stop); retries until the backlog drains or
    /// `shutdown_timeout` passes.
    pub async fn shutdown(mut self) -> FlushReport {
        let deadline = tokio::time::Instant::now() + self.options.shutdown_timeout;
        self.stopping = true;
        let mut report = self.flush_once().await;
        let mut written = report.written;
        while report.pending > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            report = self.flush_once().await;
            written += report.written;
        }
        if self.spool.is_some() {
            while let Some(queued) = self.memory.pop_front() {
                let before = self.memory.len();
                self.spill(queued);
                if self.memory.len() > before {
                    break; // the spool refused it: it stays in memory, and so do the rest
                }
            }
            self.update_gauges();
        }
        if self.pending() > 0 {
            tracing::error!(
                pending = self.pending(),
                spooled = self.spool.is_some(),
                "shut down with audit batches not yet in the store"
            );
        }
        FlushReport { written, pending: self.pending() }
    }
}

/// Resolves when `gate` asks for an early flush; never without a gate.
async fn requested(gate: Option<&AckGate>) {
    match gate {
        Some(gate) => gate.requested().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
