//! `kaudit agent --config FILE`: the sidecar. Tap mode consumes topics as a tier and tallies them
//! exactly once; `/metrics`, `/healthz` and `/readyz` are served on `agent_listen`; SIGTERM or
//! Ctrl-C stops it after writing everything.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Args;
use kaudit_agent::tap::{TapOptions, TapRunner, TapShared, TapSource};
use kaudit_agent::{AgentMetrics, Flusher, Spool};
use kaudit_schema::{BucketWidth, SystemClock};

use crate::cli::EXIT_CONFIG;

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Configuration file: `[kafka]`, `[tap]`, `[agent]`, `store`.
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(Clone)]
struct Http {
    registry: prometheus::Registry,
    tap: Arc<TapShared>,
}

async fn metrics_text(State(h): State<Http>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let text = prometheus::TextEncoder::new().encode_to_string(&h.registry.gather()).unwrap_or_default();
    (StatusCode::OK, [("content-type", "text/plain; version=0.0.4")], text)
}

async fn readyz(State(h): State<Http>) -> (StatusCode, String) {
    let assigned = h.tap.assigned();
    if assigned.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: no partition assigned yet\n".into())
    } else {
        (StatusCode::OK, format!("ready: {} partitions\n", assigned.len()))
    }
}

pub fn main(args: AgentArgs) -> ExitCode {
    let config = match crate::cli::load_config(Some(&args.config)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(tap) = config.tap.clone() else {
        eprintln!("kaudit agent: {}: no [tap] section: nothing to run", args.config.display());
        return ExitCode::from(EXIT_CONFIG);
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result: Result<(), Box<dyn std::error::Error + Send + Sync>> = runtime.block_on(async {
        let url = config.store_url()?;
        let store = kaudit_schema::open_store(&url, &config.scylla).await?;
        let registry = prometheus::Registry::new();
        let metrics = AgentMetrics::register(&registry)?;
        let agent = &config.agent;
        let shared = TapShared::new(TapOptions {
            name: agent.name.clone(),
            config: tap.clone(),
            rules: agent.topic_rules(),
            width: BucketWidth::from_millis(agent.bucket_width_ms).expect("validated"),
            close_after_ms: agent.close_after_ms as i64,
            clock: Arc::new(SystemClock),
            store: store.clone(),
            runtime: tokio::runtime::Handle::current(),
            revoke_timeout: Duration::from_millis(agent.shutdown_timeout_ms),
        });
        let spool = Spool::open(&agent.spool_dir(&config.data_dir), agent.spool_max_bytes)?;
        let mut flusher = Flusher::new(TapSource(shared.clone()), store, Some(spool), agent.flusher_options(), metrics);
        // Replay what a previous run left in the spool before reading state back.
        flusher.flush_once().await;
        let runner = TapRunner::start(shared.clone(), &tap, config.kafka_client())?;
        let listener = tokio::net::TcpListener::bind(&config.agent_listen).await?;
        eprintln!(
            "kaudit agent: tap {:?} as tier {:?}; store {url}; metrics on http://{}",
            tap.topics,
            tap.tier,
            listener.local_addr()?
        );
        let app = Router::new()
            .route("/metrics", get(metrics_text))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(Http { registry, tap: shared.clone() });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut http_stop = stop_rx.clone();
        let http = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = http_stop.wait_for(|s| *s).await;
                })
                .await
        });
        let mut flush_stop = stop_rx;
        let flushing = tokio::spawn(flusher.run(async move {
            let _ = flush_stop.wait_for(|s| *s).await;
        }));
        crate::serve::shutdown_signal().await;
        tracing::info!("stopping: writing every partition's state");
        tokio::task::spawn_blocking(move || runner.stop()).await?;
        let _ = stop_tx.send(true);
        let report = flushing.await?;
        http.await??;
        if report.pending > 0 {
            return Err(format!("{} flush batches left in the spool", report.pending).into());
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kaudit agent: {}", kaudit_agent::flusher::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
