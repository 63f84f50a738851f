//! `kaudit agent --config FILE`: the sidecar. Tap mode consumes topics as a tier and tallies them
//! exactly once; ingest mode takes records from apps in other languages over HTTP and UDP; both
//! can run in one process. `/metrics`, `/healthz`, `/readyz` (and `POST /v1/records` with ingest)
//! are served on `agent_listen`. SIGTERM or Ctrl-C stops it after writing everything.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Args;
use kaudit_agent::ingest_server::{self, IngestMetrics};
use kaudit_agent::tap::{TapOptions, TapRunner, TapShared, TapSource};
use kaudit_agent::{AgentMetrics, FlushReport, Flusher, Spool};
use kaudit_schema::{Store, SystemClock};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::EXIT_CONFIG;
use crate::config::KauditConfig;

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Configuration file: `store`, `[agent]`, and `[tap]` with `[kafka]`, and/or `[ingest]`.
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(Clone)]
struct Http {
    registry: prometheus::Registry,
    tap: Option<Arc<TapShared>>,
}

async fn metrics_text(State(h): State<Http>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let text = prometheus::TextEncoder::new().encode_to_string(&h.registry.gather()).unwrap_or_default();
    (StatusCode::OK, [("content-type", "text/plain; version=0.0.4")], text)
}

async fn readyz(State(h): State<Http>) -> (StatusCode, String) {
    match &h.tap {
        Some(tap) if tap.assigned().is_empty() => {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: no partition assigned yet\n".into())
        }
        Some(tap) => (StatusCode::OK, format!("ready: {} partitions\n", tap.assigned().len())),
        None => (StatusCode::OK, "ready\n".into()),
    }
}

pub(crate) type Stopped = watch::Receiver<bool>;

async fn stopped(mut rx: Stopped) {
    let _ = rx.wait_for(|s| *s).await;
}

pub fn main(args: AgentArgs) -> ExitCode {
    let config = match crate::cli::load_config(Some(&args.config)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if config.tap.is_none() && config.ingest.is_none() {
        eprintln!("kaudit agent: {}: neither [tap] nor [ingest]: nothing to run", args.config.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kaudit agent: {}", kaudit_agent::flusher::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(config: &KauditConfig) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = config.store_url()?;
    let store = kaudit_schema::open_store(&url, &config.scylla).await?;
    let registry = prometheus::Registry::new();
    let metrics = AgentMetrics::register(&registry)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut flushers: Vec<JoinHandle<FlushReport>> = Vec::new();
    let mut app = Router::new();

    let tap = match &config.tap {
        Some(tap_config) => {
            let (shared, runner, flusher) =
                start_tap(config, tap_config, store.clone(), metrics.clone(), stop_rx.clone()).await?;
            eprintln!("kaudit agent: tap {:?} as tier {:?}", tap_config.topics, tap_config.tier);
            flushers.push(flusher);
            Some((shared, runner))
        }
        None => None,
    };
    let mut udp_task = None;
    if let Some(ingest) = &config.ingest {
        let agent = &config.agent;
        let auditor = agent.auditor(Arc::new(SystemClock));
        let spool = Spool::open(&agent.spool_dir(&config.data_dir).join("ingest"), agent.spool_max_bytes)?;
        let flusher =
            Flusher::new(auditor.clone(), store.clone(), Some(spool), agent.flusher_options(), metrics.clone());
        flushers.push(tokio::spawn(flusher.run(stopped(stop_rx.clone()))));
        let ingest_metrics = IngestMetrics::register(&registry)?;
        app = app.merge(ingest_server::router(auditor.clone(), ingest_metrics.clone()));
        if let Some(addr) = &ingest.udp_listen {
            let socket = tokio::net::UdpSocket::bind(addr).await.map_err(|e| format!("cannot bind udp {addr}: {e}"))?;
            eprintln!("kaudit agent: udp ingest on {}", socket.local_addr()?);
            udp_task =
                Some(tokio::spawn(ingest_server::serve_udp(socket, auditor, ingest_metrics, stopped(stop_rx.clone()))));
        }
    }

    let listener = tokio::net::TcpListener::bind(&config.agent_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.agent_listen))?;
    eprintln!("kaudit agent: store {url}; http on http://{}", listener.local_addr()?);
    let base = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Http { registry, tap: tap.as_ref().map(|(s, _)| s.clone()) });
    let app = app.merge(base);
    let http = tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx)).into_future());

    crate::serve::shutdown_signal().await;
    tracing::info!("stopping: writing everything");
    if let Some((_, runner)) = tap {
        tokio::task::spawn_blocking(move || runner.stop()).await?;
    }
    let _ = stop_tx.send(true);
    let mut pending = 0;
    for f in flushers {
        pending += f.await?.pending;
    }
    if let Some(t) = udp_task {
        t.await?;
    }
    http.await??;
    if pending > 0 {
        return Err(format!("{pending} flush batches left in the spool").into());
    }
    Ok(())
}

/// Start a tap as `config` describes (agent settings, `data_dir`, `[kafka]`): replay its spool,
/// then consume; the flusher runs until `stop`.
pub(crate) async fn start_tap(
    config: &KauditConfig,
    tap: &kaudit_agent::tap::TapConfig,
    store: Arc<dyn Store>,
    metrics: AgentMetrics,
    stop: Stopped,
) -> Result<(Arc<TapShared>, TapRunner, JoinHandle<FlushReport>), Box<dyn std::error::Error + Send + Sync>> {
    let agent = &config.agent;
    let shared = TapShared::new(TapOptions::from_agent(agent, agent.name.clone(), tap.clone(), store.clone()));
    let spool = Spool::open(&agent.spool_dir(&config.data_dir).join("tap"), agent.spool_max_bytes)?;
    let mut flusher = Flusher::new(TapSource(shared.clone()), store, Some(spool), agent.flusher_options(), metrics);
    // Replay what a previous run left in the spool before the tap reads its state back.
    flusher.flush_once().await;
    let runner = TapRunner::start(shared.clone(), tap, config.kafka_client())?;
    Ok((shared, runner, tokio::spawn(flusher.run(stopped(stop)))))
}
