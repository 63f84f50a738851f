//! [`TapHandle`]: a running tap (poll thread and flusher) started and stopped as one, in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kaudit_schema::{Shutdown, Store};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use tokio::task::JoinHandle;

use super::config::TapConfig;
use super::runner::TapRunner;
use super::state::{TapOptions, TapShared, TapSource};
use crate::config::AgentConfig;
use crate::flusher::{FlushReport, Flusher, FlusherOptions};
use crate::metrics::AgentMetrics;
use crate::spool::{Spool, SpoolError};

/// Everything [`TapHandle::start`] needs.
pub struct TapHandleOptions {
    /// What to consume, as which tier, and the store the state lives in (the flusher writes there too).
    pub tap: TapOptions,
    /// The flusher's on-disk spool for batches the store refuses; `None` keeps them in memory only.
    pub spool_dir: Option<PathBuf>,
    /// Bound on the spool's size, bytes.
    pub spool_max_bytes: u64,
    pub flusher: FlusherOptions,
    pub metrics: AgentMetrics,
    /// librdkafka settings (`bootstrap.servers`, security); the tap sets its own
    /// [`super::TAP_OWNED_OPTIONS`] over them.
    pub client: ClientConfig,
}

impl TapHandleOptions {
    /// Options from the `[agent]` settings, as `kaudit agent` runs a tap: named after the agent,
    /// spooling to `<spool_dir>/tap` under `data_dir`, on the wall clock and the current runtime.
    pub fn from_agent(
        agent: &AgentConfig,
        data_dir: &Path,
        config: TapConfig,
        store: Arc<dyn Store>,
        metrics: AgentMetrics,
        client: ClientConfig,
    ) -> Self {
        Self {
            tap: TapOptions::from_agent(agent, agent.name.clone(), config, store),
            spool_dir: Some(agent.spool_dir(data_dir).join("tap")),
            spool_max_bytes: agent.spool_max_bytes,
            flusher: agent.flusher_options(),
            metrics,
            client,
        }
    }
}

/// A tap could not start.
#[derive(Debug, thiserror::Error)]
pub enum TapStartError {
    /// The spool directory could not be created or read.
    #[error("cannot open the tap's spool")]
    Spool(#[source] SpoolError),
    /// librdkafka refused the consumer's settings or the subscription.
    #[error("cannot start the tap's consumer")]
    Kafka(#[source] KafkaError),
}

/// A running tap: its poll thread and its flusher. Stop it with [`TapHandle::shutdown`]; dropping
/// it instead stops the poll thread (blocking) and leaves the flusher to finish on its own.
pub struct TapHandle {
    shared: Arc<TapShared>,
    runner: TapRunner,
    shutdown: Shutdown,
    flusher: JoinHandle<FlushReport>,
}

impl TapHandle {
    /// Open the spool and replay it, then subscribe and start counting; the flusher runs on the
    /// current tokio runtime, which must be multi-threaded (the poll thread blocks on it).
    pub async fn start(options: TapHandleOptions) -> Result<Self, TapStartError> {
        let TapHandleOptions { tap, spool_dir, spool_max_bytes, flusher, metrics, client } = options;
        let spool = match spool_dir {
            Some(dir) => Some(Spool::open(&dir, spool_max_bytes).map_err(TapStartError::Spool)?),
            None => None,
        };
        let (config, store) = (tap.config.clone(), tap.store.clone());
        let shared = TapShared::new(tap);
        let mut flusher = Flusher::new(TapSource(shared.clone()), store, spool, flusher, metrics);
        // Replay what a previous run left in the spool before a partition reads its state back.
        flusher.flush_once().await;
        let runner = TapRunner::start(shared.clone(), &config, client).map_err(TapStartError::Kafka)?;
        let shutdown = Shutdown::new();
        let flusher = tokio::spawn(flusher.run(shutdown.signal().wait()));
        Ok(Self { shared, runner, shutdown, flusher })
    }

    /// The state shared with the poll thread, for readiness and progress that outlive a borrow.
    pub fn shared(&self) -> &Arc<TapShared> {
        &self.shared
    }

    /// Messages counted since start.
    pub fn seen(&self) -> u64 {
        self.shared.seen()
    }

    /// Partitions assigned now; empty until the group has formed.
    pub fn assigned(&self) -> Vec<(String, i32)> {
        self.shared.assigned()
    }

    /// Stop the consumer, then the flusher; what the final flushes achieved.
    ///
    /// The order is the point: leaving the group writes every partition's tallies with its next
    /// offset, and only then does the flusher make its last write (spooling what the store refuses),
    /// so nothing counted is left behind in memory.
    pub async fn shutdown(self) -> FlushReport {
        let Self { shared: _, runner, shutdown, flusher } = self;
        if let Err(error) = tokio::task::spawn_blocking(move || runner.stop()).await {
            tracing::error!(%error, "the tap's poll thread did not stop cleanly");
        }
        shutdown.trigger();
        flusher.await.expect("tap flusher task panicked")
    }
}
