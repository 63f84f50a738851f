//! `kaudit agent --config FILE`: the sidecar. Tap mode consumes topics as a tier and tallies them
//! exactly once; ingest mode takes records from apps in other languages over HTTP and UDP; both
//! can run in one process. `/metrics`, `/healthz`, `/readyz` (and `POST /v1/records` with ingest)
//! are served on `agent_listen`, with the tokens, TLS and limits of `[http]` (`kaudit_net`).
//! SIGTERM or Ctrl-C stops it after writing everything.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Args;
use kaudit_agent::ingest_server::{self, IngestConfig, IngestMetrics};
use kaudit_agent::tap::{TapHandle, TapHandleOptions, TapShared};
use kaudit_agent::{AgentHandle, AgentMetrics, FlushReport, FlusherOptions, Spool};
use kaudit_schema::{Shutdown, Store, SystemClock};
use tokio::task::JoinHandle;

use crate::config::KauditConfig;
use crate::exit::{BoxError, Exit};
use crate::support::signal::shutdown_signal;

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Configuration file: `store`, `[agent]`, and `[tap]` with `[kafka]`, and/or `[ingest]`.
    #[arg(long)]
    pub config: PathBuf,
}

pub async fn run(args: AgentArgs) -> Result<(), Exit> {
    // Before anything starts: a SIGTERM from now on stops cleanly, writing everything.
    let stop = shutdown_signal();
    let config = crate::support::load::config(Some(&args.config))?;
    if config.tap.is_none() && config.ingest.is_none() {
        let file = args.config.display();
        return Err(Exit::config(format!("{file}: neither [tap] nor [ingest]: nothing to run")));
    }
    Ok(serve(&config, stop).await?)
}

/// What `kaudit agent` runs until it is stopped.
struct Agent {
    tap: Option<TapHandle>,
    ingest: Option<Ingest>,
    http: JoinHandle<std::io::Result<()>>,
    shutdown: Shutdown,
}

/// The ingest side: its agent (auditor and flusher) and the UDP listener, if any.
struct Ingest {
    agent: AgentHandle,
    udp: Option<JoinHandle<()>>,
}

async fn serve(config: &KauditConfig, stop: impl Future<Output = ()>) -> Result<(), BoxError> {
    let url = config.store_url()?;
    let store = kaudit_schema::open_store(&url, &config.scylla).await?;
    let registry = prometheus::Registry::new();
    crate::support::process_metrics::register(&registry)?;
    let metrics = AgentMetrics::register(&registry)?;
    let http_options = config.http.build()?.with_metrics(&registry)?;
    let shutdown = Shutdown::new();
    let agent = &config.agent;
    let tap = match &config.tap {
        Some(tap) => {
            let client = config.kafka_client();
            let options = TapHandleOptions::from_agent(
                agent,
                &config.data_dir,
                tap.clone(),
                store.clone(),
                metrics.clone(),
                client,
            );
            let handle = TapHandle::start(options).await?;
            eprintln!("kaudit agent: tap {:?} as tier {:?}", tap.topics, tap.tier);
            Some(handle)
        }
        None => None,
    };
    let mut app = Router::new();
    let ingest = match &config.ingest {
        Some(ingest) => Some(start_ingest(config, ingest, store, metrics, &registry, &shutdown, &mut app).await?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&config.agent_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.agent_listen))?;
    let scheme = if http_options.tls.is_some() { "https" } else { "http" };
    eprintln!("kaudit agent: store {url}; http on {scheme}://{}", listener.local_addr()?);
    let app = app.merge(probes(registry, tap.as_ref().map(|t| t.shared().clone())));
    let stopped = shutdown.signal();
    let http = tokio::spawn(kaudit_net::serve(listener, app, &http_options, stopped.wait()));
    let agent = Agent { tap, ingest, http, shutdown };
    stop.await;
    tracing::info!("stopping: writing everything");
    agent.stop().await
}

/// The ingest agent, its `POST /v1/records` route merged into `app`, and its UDP listener.
async fn start_ingest(
    config: &KauditConfig,
    ingest: &IngestConfig,
    store: Arc<dyn Store>,
    metrics: AgentMetrics,
    registry: &prometheus::Registry,
    shutdown: &Shutdown,
    app: &mut Router,
) -> Result<Ingest, BoxError> {
    let settings = &config.agent;
    let auditor = settings.auditor(Arc::new(SystemClock));
    let spool_dir = settings.spool_dir(&config.data_dir);
    let spool = Spool::open(&spool_dir.join("ingest"), settings.spool_max_bytes)?;
    // Durable acknowledgements (the default): the flusher and the handlers share one gate, and
    // Idempotency-Keys are journalled beside the spool (see kaudit_agent::ack, ::idempotency).
    let options = ingest.options(spool_dir.join("ingest.keys"), Arc::new(SystemClock))?;
    let flusher = FlusherOptions { ack_gate: options.ack_gate.clone(), ..settings.flusher_options() };
    let agent = AgentHandle::start(auditor.clone(), store, Some(spool), flusher, metrics);
    let ingest_metrics = IngestMetrics::register(registry)?;
    *app = std::mem::take(app).merge(ingest_server::router_with(auditor.clone(), ingest_metrics.clone(), options));
    let udp = match &ingest.udp_listen {
        Some(addr) => {
            let socket = tokio::net::UdpSocket::bind(addr).await.map_err(|e| format!("cannot bind udp {addr}: {e}"))?;
            eprintln!("kaudit agent: udp ingest on {}", socket.local_addr()?);
            let stopped = shutdown.signal().wait();
            Some(tokio::spawn(ingest_server::serve_udp(socket, auditor, ingest_metrics, stopped)))
        }
        None => None,
    };
    Ok(Ingest { agent, udp })
}

impl Agent {
    /// Stop reading (the tap writes its revoked partitions), stop listening, write everything.
    async fn stop(self) -> Result<(), BoxError> {
        let Agent { tap, ingest, http, shutdown } = self;
        let mut reports: Vec<FlushReport> = Vec::new();
        if let Some(tap) = tap {
            reports.push(tap.shutdown().await);
        }
        // Stop taking records (HTTP and UDP) before the ingest agent's final flush, so nothing
        // acknowledged is counted after it.
        shutdown.trigger();
        http.await??;
        if let Some(Ingest { agent, udp }) = ingest {
            if let Some(udp) = udp {
                udp.await?;
            }
            reports.push(agent.shutdown().await);
        }
        let pending: usize = reports.iter().map(|r| r.pending).sum();
        if pending > 0 {
            return Err(format!("{pending} flush batches left in the spool").into());
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Probes {
    registry: prometheus::Registry,
    tap: Option<Arc<TapShared>>,
}

/// `/metrics`, `/healthz` and `/readyz` (ready once the tap has partitions).
fn probes(registry: prometheus::Registry, tap: Option<Arc<TapShared>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Probes { registry, tap })
}

async fn metrics_text(State(p): State<Probes>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let text = prometheus::TextEncoder::new().encode_to_string(&p.registry.gather()).unwrap_or_default();
    (StatusCode::OK, [("content-type", "text/plain; version=0.0.4")], text)
}

async fn readyz(State(p): State<Probes>) -> (StatusCode, String) {
    match &p.tap {
        Some(tap) if tap.assigned().is_empty() => {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: no partition assigned yet\n".into())
        }
        Some(tap) => (StatusCode::OK, format!("ready: {} partitions\n", tap.assigned().len())),
        None => (StatusCode::OK, "ready\n".into()),
    }
}
