//! `kaudit verifier`: evaluate, alert and serve the API until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use kaudit_alerting::dispatch::Backoff;
use kaudit_schema::SystemClock;
use kaudit_verifier::service::{ServiceParts, serve};

use crate::cli::EXIT_CONFIG;
use crate::config::KauditConfig;

#[derive(Debug, Clone, Args)]
pub struct VerifierArgs {
    /// Configuration file (`store`, `[verifier]` pipelines, `[alerting]` sinks).
    #[arg(long)]
    pub config: PathBuf,
    /// Override `verifier.listen`.
    #[arg(long)]
    pub listen: Option<String>,
}

pub fn main(args: VerifierArgs) -> ExitCode {
    let config = match KauditConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let sinks = match config.alerting.sinks.iter().map(|s| s.build()).collect::<Result<Vec<_>, _>>() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kaudit verifier: alerting: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if config.verifier.pipelines.is_empty() {
        eprintln!("kaudit verifier: {}: no [[verifier.pipelines]]: nothing to verify", args.config.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    let listen = args.listen.clone().unwrap_or_else(|| config.verifier.listen.clone());
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        let url = config.store_url()?;
        let store = kaudit_schema::open_store(&url, &config.scylla).await?;
        let listener =
            tokio::net::TcpListener::bind(&listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        tracing::info!(%listen, store = %url, "verifier started");
        eprintln!("kaudit verifier: store {url}; API and /metrics on http://{}", listener.local_addr()?);
        let parts = ServiceParts {
            store,
            config: config.verifier.clone(),
            sinks,
            backoff: Backoff {
                base: Duration::from_millis(config.alerting.retry_base_ms),
                max: Duration::from_millis(config.alerting.retry_max_ms),
                poll: Duration::from_secs(1),
            },
            flush_interval_ms: config.agent.flush_interval_ms,
            registry: prometheus::Registry::new(),
            clock: Arc::new(SystemClock),
        };
        let result = serve(listener, parts, shutdown_signal()).await;
        tracing::info!("verifier stopped");
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kaudit verifier: {}", kaudit_agent::flusher::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
