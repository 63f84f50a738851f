//! The verifier as a service: the engine, the alert dispatcher and the HTTP API together.

use std::future::Future;
use std::sync::Arc;

use kaudit_alerting::dispatch::{Backoff, Limits};
use kaudit_alerting::{AlertMetrics, Dispatcher, Ownership, Sink};
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
    /// Notifications per pass and per sink's outbox (`[alerting]`).
    pub limits: Limits,
    /// The agents' flush interval, for the default grace period.
    pub flush_interval_ms: u64,
    pub registry: prometheus::Registry,
    pub clock: Arc<dyn Clock>,
    /// Tokens, TLS and connection limits of the API listener (`[http]`).
    pub http: kaudit_net::HttpOptions,
    /// The topics this instance evaluates and notifies about: all ([`Ownership::sole`]), or its
    /// shards (`crate::coordination::Coordinator`).
    pub ownership: Ownership,
}

/// Run until `shutdown` resolves: evaluate, deliver notifications, and serve the API on `listener`.
pub async fn serve(
    listener: TcpListener,
    parts: ServiceParts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let ServiceParts { store, config, sinks, backoff, limits, flush_interval_ms, registry, clock, http, ownership } =
        parts;
    let metrics = VerifierMetrics::register(&registry)?;
    let alert_metrics = AlertMetrics::register(&registry)?;
    let http = http.with_metrics(&registry)?;
    let dispatcher = Dispatcher::new(store.clone(), sinks, alert_metrics, backoff)
        .with_limits(limits)
        .with_ownership(ownership.clone());
    let pipelines = Arc::new(config.pipelines.iter().map(|p| p.build()).collect::<Vec<_>>());
    let engine = Engine::new(store.clone(), Some(dispatcher.clone()), config, flush_interval_ms, clock, metrics)
        .with_ownership(ownership.clone());
    let state = ApiState { store, registry, pipelines, ready: engine.ready_flag(), ownership };

    let stop = Shutdown::new();
    let engine_task = tokio::spawn(engine.run(stop.signal().wait()));
    let dispatch_task = tokio::spawn(dispatcher.run(stop.signal().wait()));
    let api_task = tokio::spawn(kaudit_net::serve(listener, router(state), &http, stop.signal().wait()));
    shutdown.await;
    stop.trigger();
    engine_task.await?;
    dispatch_task.await?;
    api_task.await??;
    Ok(())
}
