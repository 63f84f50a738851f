//! Running an agent: an auditor with its flusher on a tokio task.

use std::sync::Arc;

use kaudit_schema::Store;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auditor::Auditor;
use crate::flusher::{FlushReport, Flusher, FlusherOptions};
use crate::metrics::AgentMetrics;
use crate::spool::Spool;

/// A running agent. Dropping it without [`AgentHandle::shutdown`] skips the final flush.
pub struct AgentHandle {
    auditor: Auditor,
    stop: oneshot::Sender<()>,
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
        let (stop, stopped) = oneshot::channel();
        let flusher = Flusher::new(auditor.clone(), store, spool, options, metrics);
        let task = tokio::spawn(flusher.run(async move {
            let _ = stopped.await;
        }));
        Self { auditor, stop, task }
    }

    /// The auditor to count messages through.
    pub fn auditor(&self) -> &Auditor {
        &self.auditor
    }

    /// Flush everything and stop; returns what the last flushes achieved.
    pub async fn shutdown(self) -> FlushReport {
        let _ = self.stop.send(());
        self.task.await.expect("flusher task panicked")
    }
}
