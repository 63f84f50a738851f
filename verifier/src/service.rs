//! The verifier as a service: the engine, the alert dispatcher and the HTTP API together.

use std::future::Future;
use std::sync::Arc;

use kaudit_alerting::dispatch::Backoff;
use kaudit_alerting::{AlertMetrics, Dispatcher, Sink};
use kaudit_schema::{Clock, Shutdown, Store};
use tokio::net::TcpListener;

use crate::api::{ApiState, router};
use crate::config::VerifierConfig;
use crate::engine::Engine;
use crate::metrics::VerifierMetrics;

/// Everything the service needs.
pub struct ServiceParts {
    pub store: Arc<dyn Store>,
    pub config: VerifierConfig,
    pub sinks: Vec<Sink>,
    pub backoff: Backoff,
    /// The agents' flush interval, for the default grace period.
    pub flush_interval_ms: u64,
    pub registry: prometheus::Registry,
    pub clock: Arc<dyn Clock>,
}

/// Run until `shutdown` resolves: evaluate, deliver notifications, and serve the API on `listener`.
pub async fn serve(
    listener: TcpListener,
    parts: ServiceParts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let ServiceParts { store, config, sinks, backoff, flush_interval_ms, registry, clock } = parts;
    let metrics = VerifierMetrics::register(&registry)?;
    let alert_metrics = AlertMetrics::register(&registry)?;
    let dispatcher = Dispatcher::new(store.clone(), sinks, alert_metrics, backoff);
    let pipelines = Arc::new(config.pipelines.iter().map(|p| p.build()).collect::<Vec<_>>());
    let engine = Engine::new(store.clone(), Some(dispatcher.clone()), config, flush_interval_ms, clock, metrics);
    let state = ApiState { store, registry, pipelines, ready: engine.ready_flag() };

    let stop = Shutdown::new();
    let engine_task = tokio::spawn(engine.run(stop.signal().wait()));
    let dispatch_task = tokio::spawn(dispatcher.run(stop.signal().wait()));
    let api = axum::serve(listener, router(state)).with_graceful_shutdown(stop.signal().wait());
    let api_task = tokio::spawn(async move { api.await });
    shutdown.await;
    stop.trigger();
    engine_task.await?;
    dispatch_task.await?;
    api_task.await??;
    Ok(())
}
