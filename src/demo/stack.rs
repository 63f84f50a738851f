//! The system the demo runs in one process: librdkafka's mock cluster, the store, one agent per
//! audited application, the broker-tier tap and the verifier service; started and stopped in the
//! order that loses nothing (agents write everything before the verifier's last pass).
//!
//! One Prometheus registry holds the process's metrics and the verifier serves it on `/metrics`:
//! the verifier's own, `kaudit_build_info` and `process_*`, and every agent's `kaudit_agent_*`
//! with an `agent` label ([`AGENT_LABELS`]) that keeps their series apart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kaudit_agent::tap::{TapHandle, TapHandleOptions};
use kaudit_agent::{AgentConfig, AgentHandle, AgentMetrics, Clock, Spool, SystemClock};
use kaudit_schema::{BucketWidth, EpochMillis, Shutdown, Store, StoreUrl};
use kaudit_verifier::service::{ServiceParts, serve};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio::task::JoinHandle;

use super::args::DemoArgs;
use super::faults::{ANALYTICS, BILLING, Ledger, PRODUCER, TOPIC};
use super::settings;
use crate::config::KauditConfig;
use crate::report::utc;

/// Everything the demo started, until it is stopped.
pub struct Stack {
    pub url: StoreUrl,
    pub store: Arc<dyn Store>,
    pub bootstrap: String,
    pub width: BucketWidth,
    pub agents: Agents,
    pub verifier: Verifier,
    pub cluster: MockCluster<'static, DefaultProducerContext>,
}

/// One agent per audited application, and the broker-tier tap.
pub struct Agents {
    pub producer: AgentHandle,
    /// With `--crash-producer`: the instance that takes over when the first one crashes (it
    /// writes nothing until it has counted something).
    pub successor: Option<AgentHandle>,
    pub billing: AgentHandle,
    pub analytics: AgentHandle,
    pub tap: TapHandle,
}

/// The verifier service, its API and what the demo needs to judge its timing.
pub struct Verifier {
    pub api: String,
    pub registry: prometheus::Registry,
    pub sink_names: Vec<String>,
    pub grace_ms: i64,
    /// Bucket width + grace + evaluation interval: the most an alert should take, ms.
    pub alert_bound_ms: i64,
    pub delay_threshold_ms: u64,
    /// How long an agent may be silent before the verifier takes it for crashed, ms.
    pub agent_timeout_ms: i64,
    /// The agents' flush interval, ms.
    pub flush_interval_ms: i64,
    service: JoinHandle<Result<(), Box<dyn std::error::Error + Send + Sync>>>,
    shutdown: Shutdown,
}

impl Stack {
    /// Start the store, the mock cluster with the demo topic, the agents, the tap and the
    /// verifier, with `data_dir` for their state.
    pub async fn start(args: &DemoArgs, config: &KauditConfig, data_dir: &Path) -> anyhow::Result<Self> {
        let width = BucketWidth::from_millis(args.bucket.as_millis() as u64).context("bucket width")?;
        let run_id = format!("{}-{}", SystemClock.now_ms(), std::process::id());
        let url = store_url(config, data_dir, &run_id)?;
        let store = kaudit_schema::open_store(&url, &config.scylla).await?;
        let cluster = MockCluster::new(3).context("starting librdkafka's mock cluster")?;
        cluster.create_topic(TOPIC, args.partitions, 1).context("creating the demo topic")?;
        let bootstrap = cluster.bootstrap_servers();
        eprintln!("mock Kafka cluster on {bootstrap}; topic {TOPIC:?} with {} partitions", args.partitions);
        let agent = settings::agent(config, width);
        let registry = prometheus::Registry::new();
        crate::support::process_metrics::register(&registry)?;
        let [producer_label, successor_label, billing_label, analytics_label, tap_label] = AGENT_LABELS;
        let start_agent = |name: &str, spool: &str, label: &str| {
            let metrics = agent_metrics(&registry, label)?;
            start_agent(&agent, name, spool, store.clone(), data_dir, metrics)
        };
        let producer = start_agent("demo-producer", "demo-producer", producer_label)?;
        let successor = if args.crash_producer {
            Some(start_agent("demo-producer", "demo-producer-successor", successor_label)?)
        } else {
            None
        };
        let billing = start_agent("demo-billing", "demo-billing", billing_label)?;
        let analytics = start_agent("demo-analytics", "demo-analytics", analytics_label)?;
        let (tap_config, tap) = settings::tap(config, &agent, &format!("demo-tap-{run_id}"), &bootstrap, data_dir);
        let client = tap_config.kafka_client();
        let metrics = agent_metrics(&registry, tap_label)?;
        let options = TapHandleOptions::from_agent(&tap_config.agent, data_dir, tap, store.clone(), metrics, client);
        let tap = TapHandle::start(options)
            .await
            .map_err(|e| anyhow::anyhow!("starting the broker tap: {}", kaudit_schema::error_chain(&e)))?;
        let verifier = Verifier::start(args, config, &agent, store.clone(), width, registry).await?;
        let agents = Agents { producer, successor, billing, analytics, tap };
        Ok(Self { url, store, bootstrap, width, agents, verifier, cluster })
    }
}

impl Agents {
    /// Stop the tap (it writes its partitions) and every agent after its final flush.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let Agents { producer, successor, billing, analytics, tap } = self;
        let mut pending = tap.shutdown().await.pending;
        for agent in [Some(producer), successor, Some(billing), Some(analytics)].into_iter().flatten() {
            pending += agent.shutdown().await.pending;
        }
        anyhow::ensure!(pending == 0, "the agents could not write {pending} batches");
        Ok(())
    }
}

/// A database per run, so alerts still firing from an earlier run in the same directory cannot
/// mask this run's; or the configured store.
fn store_url(config: &KauditConfig, data_dir: &Path, run_id: &str) -> anyhow::Result<StoreUrl> {
    Ok(match &config.store {
        Some(url) => url.parse::<StoreUrl>()?,
        None => StoreUrl::Sqlite(data_dir.join(format!("demo-{run_id}.db"))),
    })
}

/// The `agent` label of each agent's metrics: the producer, its successor (`--crash-producer`),
/// the two consumers and the broker-tier tap.
pub const AGENT_LABELS: [&str; 5] = [PRODUCER, "producer/successor", BILLING, ANALYTICS, "tap"];

/// An agent's metrics, in the demo's one registry under `agent="<label>"`.
fn agent_metrics(registry: &prometheus::Registry, label: &str) -> anyhow::Result<AgentMetrics> {
    Ok(AgentMetrics::register_labelled(registry, &[("agent", label)])?)
}

fn start_agent(
    agent: &AgentConfig,
    name: &str,
    spool: &str,
    store: Arc<dyn Store>,
    data_dir: &Path,
    metrics: AgentMetrics,
) -> anyhow::Result<AgentHandle> {
    let mut agent = agent.clone();
    agent.name = name.to_string();
    // Several agents in one process: each needs its own spool.
    agent.spool_dir = Some(agent.spool_dir(data_dir).join(spool));
    let auditor = agent.auditor(Arc::new(SystemClock));
    let spool = Spool::open(&agent.spool_dir(data_dir), agent.spool_max_bytes)?;
    Ok(AgentHandle::start(auditor, store, Some(spool), agent.flusher_options(), metrics))
}

impl Verifier {
    /// The verifier service on `--listen` (another port if taken), delivering to the configured
    /// sinks and `--webhook` (each notification linking to its alert in this API, or under
    /// `alerting.public_url`), and serving `registry` on `/metrics` with its own metrics added.
    async fn start(
        args: &DemoArgs,
        config: &KauditConfig,
        agent: &AgentConfig,
        store: Arc<dyn Store>,
        width: BucketWidth,
        registry: prometheus::Registry,
    ) -> anyhow::Result<Self> {
        let listener = bind(&args.listen).await?;
        let api = format!("http://{}", listener.local_addr()?);
        let sinks = settings::sinks(config, args.webhook.as_deref(), listener.local_addr()?)?;
        let sink_names: Vec<String> = sinks.iter().map(|s| s.name.clone()).collect();
        let verifier = settings::verifier(config, agent, args);
        let grace_ms = verifier.grace_ms(agent.flush_interval_ms) as i64;
        let agent_timeout_ms = verifier.agent_timeout_ms(agent.flush_interval_ms) as i64;
        let alert_bound_ms = width.as_millis() + grace_ms + verifier.evaluate_interval_ms as i64;
        let delay_threshold_ms = verifier.thresholds.p99_delay_ms;
        let parts = ServiceParts {
            store,
            config: verifier,
            sinks,
            backoff: settings::backoff(config),
            limits: config.alerting.limits(),
            flush_interval_ms: agent.flush_interval_ms,
            registry: registry.clone(),
            clock: Arc::new(SystemClock),
            // Plain HTTP without tokens: the demo listens on loopback.
            http: kaudit_net::HttpOptions::default(),
            ownership: kaudit_alerting::Ownership::sole("demo"),
        };
        let shutdown = Shutdown::new();
        let service = tokio::spawn(serve(listener, parts, shutdown.signal().wait()));
        let flush_interval_ms = agent.flush_interval_ms as i64;
        Ok(Self {
            api,
            registry,
            sink_names,
            grace_ms,
            alert_bound_ms,
            delay_threshold_ms,
            agent_timeout_ms,
            flush_interval_ms,
            service,
            shutdown,
        })
    }

    /// Wait, while the agents still run and report, until the verifier has judged every bucket of
    /// `ledger` on all three edges (no verdict pending) and has seen the agents' flushes after
    /// `drained_at`, when every message had arrived everywhere.
    pub async fn wait_judged(
        &self,
        store: &dyn Store,
        ledger: &Ledger,
        width: BucketWidth,
        drained_at: EpochMillis,
    ) -> anyhow::Result<()> {
        let buckets = ledger.buckets();
        let (Some(&first), Some(&last)) = (buckets.keys().next(), buckets.keys().last()) else {
            anyhow::bail!("nothing was produced");
        };
        let eval_ms = settings::EVALUATE_INTERVAL_MS as i64;
        let due = (width.end_of(last) + self.grace_ms).max(drained_at + 2 * self.flush_interval_ms) + 2 * eval_ms;
        eprintln!(
            "all messages arrived; waiting for the verifier to close the last bucket ({} + grace)",
            utc(width.end_of(last))
        );
        let expected = 3 * buckets.len();
        let deadline =
            Duration::from_millis((due - SystemClock.now_ms()).max(0) as u64 + 15_000 + self.agent_timeout_ms as u64);
        let judged = super::wait::until_async(deadline, || async move {
            let verdicts = store.read_verdicts(TOPIC, first, last + 1).await.unwrap_or_default();
            let done = verdicts.iter().filter(|v| !v.kind.outcome.is_pending()).count();
            SystemClock.now_ms() >= due && done >= expected
        })
        .await;
        if judged.is_err() {
            eprintln!("kaudit demo: the verifier did not evaluate every bucket in time");
        }
        Ok(())
    }

    /// After the agents' final flush: one more pass (an alert is recorded just after the pass
    /// that writes its verdicts), let the dispatcher deliver what was raised, then stop. Returns
    /// the notifications the sinks did not accept.
    pub async fn finish(self, store: &dyn Store) -> anyhow::Result<usize> {
        let eval_ms = settings::EVALUATE_INTERVAL_MS;
        tokio::time::sleep(Duration::from_millis(2 * eval_ms)).await;
        let sinks = &self.sink_names;
        let delivered = || async move { pending_notifications(sinks, store).await == 0 };
        let _ = super::wait::until_async(Duration::from_secs(15), delivered).await;
        let Verifier { service, shutdown, registry, sink_names, .. } = self;
        shutdown.trigger();
        service.await?.map_err(|e| anyhow::anyhow!(kaudit_schema::error_chain(e.as_ref())))?;
        // Still waiting in the outbox, plus refused by a receiver (4xx: dropped, never retried).
        Ok(pending_notifications(&sink_names, store).await + rejected_notifications(&registry) as usize)
    }
}

/// Notifications still waiting in the outbox of any of `sinks`.
async fn pending_notifications(sinks: &[String], store: &dyn Store) -> usize {
    let mut n: usize = 0;
    for name in sinks {
        n = n.saturating_add(store.outbox(name, 1_000).await.map_or(1, |o| o.len()));
    }
    n
}

async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => Ok(l),
        Err(e) => {
            eprintln!("kaudit demo: cannot listen on {listen} ({e}); using another port");
            let host = listen.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
            Ok(tokio::net::TcpListener::bind((host.trim_matches(['[', ']']), 0)).await?)
        }
    }
}

/// `kaudit_verifier_notifications_failed_total{outcome="rejected"}`, over every sink.
fn rejected_notifications(registry: &prometheus::Registry) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "kaudit_verifier_notifications_failed_total")
        .flat_map(|f| f.get_metric())
        .filter(|m| m.get_label().iter().any(|l| l.name() == "outcome" && l.value() == "rejected"))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}
