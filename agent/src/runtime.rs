//! Running an agent: an auditor with its flusher on a tokio task.

use std::sync::Arc;

use kaudit_schema::{Shutdown, Store};
use tokio::task::JoinHandle;

use crate::auditor::Auditor;
use crate::flusher::{FlushReport, Flusher, FlusherOptions};
use crate::metrics::AgentMetrics;
use crate::spool::Spool;

/// A running agent. Stop it with [`AgentHandle::shutdown`]: dropping it instead still ends the
/// flusher with a final flush, but in the background, with nothing waiting for it to finish.
pub struct AgentHandle {
    auditor: Auditor,
    shutdown: Shutdown,
    task: JoinHandle<FlushReport>,
}

impl AgentHandle {
    /// Start flushing `auditor`'s tallies to `store` on the current tokio runtime.
    pub fn start(
        auditor: Auditor,
        store: Arc<dyn Store>,
        spool: Option<Spool>,
        options: FlusherOptions,
        metrics: AgentMetrics,
    ) -> Self {
        let shutdown = Shutdown::new();
        let flusher = Flusher::new(auditor.clone(), store, spool, options, metrics);
        let task = tokio::spawn(flusher.run(shutdown.signal().wait()));
        Self { auditor, shutdown, task }
    }

    /// The auditor to count messages through.
    pub fn auditor(&self) -> &Auditor {
        &self.auditor
    }

    /// A handle that stops the flusher at once, without its final flush, as a crash would: what
    /// was counted since the last flush is lost and the heartbeats keep no stop marker, so the
    /// verifier sees the instance vanish. For fault injection (the demo's `--crash-producer`)
    /// and tests; [`AgentHandle::shutdown`] afterwards returns an empty report.
    pub fn crash_switch(&self) -> tokio::task::AbortHandle {
        self.task.abort_handle()
    }

    /// Flush everything and stop; the last flush marks this agent's heartbeats `stopped`, so the
    /// verifier knows nothing was left unwritten. Returns what the last flushes achieved.
    pub async fn shutdown(self) -> FlushReport {
        self.shutdown.trigger();
        match self.task.await {
            Ok(report) => report,
            Err(e) if e.is_cancelled() => FlushReport::default(),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}
