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

use crate::auditor::Auditor;
use crate::metrics::AgentMetrics;
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
    /// Report per-stream counters into metrics.
    fn report(&mut self, metrics: &AgentMetrics);
}

impl BatchSource for Auditor {
    fn take_batch(&mut self) -> FlushBatch {
        self.snapshot()
    }

    fn report(&mut self, metrics: &AgentMetrics) {
        let (streams, failures) = self.take_counters();
        metrics.record_streams(&streams);
        for (topic, tier, n) in failures {
            metrics.delivery_failures.with_label_values(&[topic.as_str(), tier.as_str()]).inc_by(n);
        }
        metrics.open_buckets.set(self.open_buckets() as i64);
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
}

impl Default for FlusherOptions {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(5),
            max_queued_batches: 64,
            shutdown_timeout: Duration::from_secs(10),
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

/// Writes an agent's tallies to a store.
pub struct Flusher<S: BatchSource> {
    source: S,
    store: Arc<dyn Store>,
    memory: VecDeque<FlushBatch>,
    spool: Option<Spool>,
    options: FlusherOptions,
    metrics: AgentMetrics,
    /// Shutdown has begun: batches are final.
    stopping: bool,
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
        Self { source, store, memory: VecDeque::new(), spool, options, metrics, stopping: false }
    }

    /// Batches waiting for the store.
    pub fn pending(&self) -> usize {
        self.memory.len() + self.spool.as_ref().map_or(0, Spool::len)
    }

    /// Snapshot, queue, and drain as much of the backlog as the store takes.
    pub async fn flush_once(&mut self) -> FlushReport {
        let batch = if self.stopping { self.source.take_final_batch() } else { self.source.take_batch() };
        self.source.report(&self.metrics);
        if !batch.is_empty() {
            self.enqueue(batch);
        }
        let written = self.drain().await;
        self.update_gauges();
        FlushReport { written, pending: self.pending() }
    }

    fn spool_has_backlog(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| !s.is_empty())
    }

    fn enqueue(&mut self, batch: FlushBatch) {
        if self.memory.len() < self.options.max_queued_batches && !self.spool_has_backlog() {
            self.memory.push_back(batch);
        } else if self.spool.is_some() {
            // Memory keeps the oldest batches; newer ones queue on disk behind them.
            self.spill(batch);
        } else {
            // No spool: fold the backlog into one batch of newest versions, which loses nothing.
            self.memory.push_back(batch);
            let merged = compact_batches(self.memory.drain(..));
            tracing::warn!(rows = merged.rows.len(), "store backlog full and no spool configured; compacted in memory");
            self.memory.push_back(merged);
        }
    }

    fn spill(&mut self, batch: FlushBatch) {
        let spool = self.spool.as_mut().expect("caller checked");
        match spool.append(&batch) {
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
                // The disk failed too: keep the batch in memory rather than lose it.
                tracing::error!(%error, "cannot spill to the spool; keeping the batch in memory");
                self.memory.push_back(batch);
            }
        }
    }

    /// The oldest pending batch: memory holds batches older than the spool's only when the spool
    /// is empty, so memory first, then spool.
    fn front(&mut self) -> Result<Option<FlushBatch>, SpoolError> {
        if let Some(b) = self.memory.front() {
            return Ok(Some(b.clone()));
        }
        self.spool.as_ref().map_or(Ok(None), Spool::front)
    }

    async fn drain(&mut self) -> usize {
        let mut written = 0;
        loop {
            let batch = match self.front() {
                Ok(Some(b)) => b,
                Ok(None) => return written,
                Err(error) => {
                    tracing::error!(%error, "spool unreadable; dropping its oldest segment");
                    let _ = self.spool.as_mut().map(Spool::pop_front);
                    continue;
                }
            };
            let started = Instant::now();
            match self.store.write(&batch).await {
                Ok(()) => {
                    self.metrics.flush_duration.observe(started.elapsed().as_secs_f64());
                    self.metrics.flushes.inc();
                    self.metrics.rows_written.inc_by(batch.rows.len() as u64);
                    if self.memory.pop_front().is_none()
                        && let Some(Err(error)) = self.spool.as_mut().map(Spool::pop_front)
                    {
                        tracing::error!(%error, "cannot remove a replayed spool segment; it will be replayed again");
                    }
                    written += 1;
                }
                Err(error) => {
                    self.metrics.flush_failures.inc();
                    tracing::warn!(error = %error_chain(&error), pending = self.pending(), "store write failed; will retry");
                    return written;
                }
            }
        }
    }

    fn update_gauges(&self) {
        self.metrics.queued_batches.set(self.memory.len() as i64);
        let (n, bytes) = self.spool.as_ref().map_or((0, 0), |s| (s.len(), s.bytes()));
        self.metrics.spool_batches.set(n as i64);
        self.metrics.spool_bytes.set(bytes as i64);
    }

    /// Flush every `flush_interval` until `shutdown` resolves, then flush a last time and try to
    /// drain for up to `shutdown_timeout`; what remains in memory is spooled to disk.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> FlushReport {
        let mut ticker = tokio::time::interval(self.options.flush_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = ticker.tick() => { self.flush_once().await; }
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
            while let Some(batch) = self.memory.pop_front() {
                self.spill(batch);
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

#[cfg(test)]
mod tests;
