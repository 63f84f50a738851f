//! `kaudit verifier`: evaluate, alert and serve the API until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use kaudit_alerting::dispatch::Backoff;
use kaudit_alerting::{Ownership, PublicUrl, Sink};
use kaudit_schema::SystemClock;
use kaudit_verifier::coordination::{Coordinator, ensure_topic};
use kaudit_verifier::service::{ServiceParts, serve};

use crate::config::KauditConfig;
use crate::exit::Exit;
use crate::support::signal::shutdown_signal;

#[derive(Debug, Clone, Args)]
pub struct VerifierArgs {
    /// Configuration file (`store`, `[verifier]` pipelines, `[alerting]` sinks).
    #[arg(long)]
    pub config: PathBuf,
    /// Override `verifier.listen`.
    #[arg(long)]
    pub listen: Option<String>,
}

pub async fn run(args: VerifierArgs) -> Result<(), Exit> {
    // Before anything is served: a SIGTERM from now on stops cleanly.
    let stop = shutdown_signal();
    let config = crate::support::load::config(Some(&args.config))?;
    let sinks = config
        .alerting
        .sinks
        .iter()
        .map(|s| s.build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Exit::config(format!("alerting: {e}")))?;
    if config.verifier.pipelines.is_empty() {
        let file = args.config.display();
        return Err(Exit::config(format!("{file}: no [[verifier.pipelines]]: nothing to verify")));
    }
    let http = config.http.build().map_err(Exit::config)?;
    let listen = args.listen.clone().unwrap_or_else(|| config.verifier.listen.clone());
    let url = config.store_url()?;
    let store = kaudit_schema::open_store(&url, &config.scylla).await?;
    let listener =
        tokio::net::TcpListener::bind(&listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, store = %url, "verifier started");
    let scheme = if http.tls.is_some() { "https" } else { "http" };
    eprintln!("kaudit verifier: store {url}; API and /metrics on {scheme}://{}", listener.local_addr()?);
    let sinks = linked(sinks, config.alerting.public_url.as_deref(), listener.local_addr()?, http.tls.is_some())?;
    let registry = prometheus::Registry::new();
    crate::support::process_metrics::register(&registry)?;
    let (ownership, coordinator) = match &config.verifier.coordination {
        None => (Ownership::sole(""), None),
        Some(coordination) => {
            let client = config.kafka_client();
            ensure_topic(&client, coordination).await.map_err(|e| format!("verifier.coordination: {}", chain(&e)))?;
            let (ownership, coordinator) = Coordinator::start(&client, coordination, &registry)
                .map_err(|e| format!("verifier.coordination: {}", chain(&e)))?;
            (ownership, Some(coordinator))
        }
    };
    let parts = ServiceParts {
        store,
        config: config.verifier.clone(),
        sinks,
        backoff: backoff(&config),
        limits: config.alerting.limits(),
        flush_interval_ms: config.agent.flush_interval_ms,
        registry,
        clock: Arc::new(SystemClock),
        http,
        ownership,
    };
    let result = serve(listener, parts, stop).await;
    if let Some(coordinator) = coordinator {
        // Leaving hands this instance's shards to the others at once, not after a session timeout.
        tokio::task::spawn_blocking(move || coordinator.leave()).await.map_err(|e| e.to_string())?;
    }
    tracing::info!("verifier stopped");
    Ok(result?)
}

/// `sinks` linking each notification to its alert under `alerting.public_url` (`configured`), or
/// else the API's own address `listen`; with a warning when that address is no host's (0.0.0.0).
fn linked(sinks: Vec<Sink>, configured: Option<&str>, listen: SocketAddr, tls: bool) -> Result<Vec<Sink>, Exit> {
    let url = PublicUrl::configured_or_listen(configured, listen, tls)
        .map_err(|e| Exit::config(format!("alerting.public_url: {e}")))?;
    if configured.is_none() && listen.ip().is_unspecified() && !sinks.is_empty() {
        tracing::warn!(%url, "alert links name the unspecified listen address; set alerting.public_url");
    }
    Ok(sinks.into_iter().map(|s| s.with_public_url(url.clone())).collect())
}

/// An error with its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The alert dispatcher's retry schedule from `[alerting]`.
fn backoff(config: &KauditConfig) -> Backoff {
    Backoff {
        base: Duration::from_millis(config.alerting.retry_base_ms),
        max: Duration::from_millis(config.alerting.retry_max_ms),
        poll: Duration::from_secs(1),
    }
}
