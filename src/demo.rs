//! `kaudit demo`: a short audit, end to end, on embedded defaults.
//!
//! librdkafka's mock cluster runs in-process on loopback ports; a producer audited through
//! delivery reports writes `--messages` orders; a consumer group `billing` audited on receive reads
//! them back; both agents flush to SQLite under the data directory; the stored tallies are then
//! read back and printed per bucket and tier, each tier compared with its upstream.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use kaudit_agent::kafka::{AuditedStreamConsumer, AuditingProducerContext};
use kaudit_agent::{AgentHandle, AgentMetrics, Auditor, Clock, Spool, SystemClock, TopicRuleConfig};
use kaudit_schema::{Store, StoreUrl};
use kaudit_verifier::Verdict;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use crate::cli::EXIT_AUDIT_MISMATCH;
use crate::config::KauditConfig;

const TOPIC: &str = "orders";
const TIERS: [&str; 2] = ["producer", "consumer/billing"];

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How many messages to produce.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: u64,
    /// Where to keep the SQLite database and spools. Default: the config's `data_dir` when
    /// `--config` is given, else a temporary directory removed on exit.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A configuration file for the agents' settings (bucket width, extraction rules...).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Partitions of the demo topic.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub partitions: i32,
}

/// What the demo found.
#[derive(Debug)]
pub struct DemoOutcome {
    pub produced: u64,
    pub consumed: u64,
    pub verdicts: Vec<(i64, String, Verdict)>,
    pub table: String,
    /// Where the tallies are.
    pub store: String,
}

impl DemoOutcome {
    pub fn complete(&self) -> bool {
        !self.verdicts.is_empty() && self.verdicts.iter().all(|(_, _, v)| *v == Verdict::Complete)
    }
}

pub fn main(args: DemoArgs) -> ExitCode {
    let config = match crate::cli::load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let temp = tempfile::tempdir().expect("temporary directory");
    let data_dir = match (&args.data_dir, &args.config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(_)) => config.data_dir.clone(),
        (None, None) => temp.path().to_path_buf(),
    };
    let kept = if data_dir == temp.path() { " (temporary: pass --data-dir DIR to keep it)" } else { "" };
    match runtime.block_on(run(&args, &config, data_dir)) {
        Ok(outcome) => {
            println!("\n{}", outcome.table);
            println!(
                "produced {} messages, consumed {}; tallies in {}{kept}",
                outcome.produced, outcome.consumed, outcome.store
            );
            if outcome.complete() {
                println!("audit: every bucket complete at every tier");
                ExitCode::SUCCESS
            } else {
                println!("audit: NOT complete (see the table)");
                ExitCode::from(EXIT_AUDIT_MISMATCH)
            }
        }
        Err(e) => {
            eprintln!("kaudit demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start_agent(
    config: &KauditConfig,
    name: &str,
    store: Arc<dyn Store>,
    data_dir: &std::path::Path,
) -> anyhow::Result<AgentHandle> {
    let mut agent = config.agent.clone();
    agent.name = name.to_string();
    // librdkafka's mock cluster acknowledges every produce with a fake LogAppendTime, so the demo
    // carries event time and id in its payload, as many real pipelines do; this rule comes first
    // whatever the configuration says about other topics.
    let demo_rule = TopicRuleConfig {
        pattern: TOPIC.into(),
        business_id: "json:/order_id".parse().expect("valid"),
        event_time: "json:/created_at".parse().expect("valid"),
    };
    agent.topics.insert(0, demo_rule);
    // Two agents in one process: each needs its own spool.
    agent.spool_dir = config.agent.spool_dir.as_ref().map(|dir| dir.join(name));
    agent.flush_interval_ms = agent.flush_interval_ms.min(1_000);
    let auditor = agent.auditor(Arc::new(SystemClock));
    let spool = Spool::open(&agent.spool_dir(data_dir), agent.spool_max_bytes)?;
    let metrics = AgentMetrics::register(&prometheus::Registry::new())?;
    Ok(AgentHandle::start(auditor, store, Some(spool), agent.flusher_options(), metrics))
}

/// Run the demo with `data_dir` for its state.
pub async fn run(args: &DemoArgs, config: &KauditConfig, data_dir: PathBuf) -> anyhow::Result<DemoOutcome> {
    let url = match &config.store {
        Some(url) => url.parse::<StoreUrl>()?,
        None => StoreUrl::Sqlite(data_dir.join("audit.db")),
    };
    let store = kaudit_schema::open_store(&url, &config.scylla).await?;
    let cluster = MockCluster::new(3).context("starting librdkafka's mock cluster")?;
    cluster.create_topic(TOPIC, args.partitions, 1).context("creating the demo topic")?;
    let bootstrap = cluster.bootstrap_servers();
    eprintln!("mock Kafka cluster on {bootstrap}; topic {TOPIC:?} with {} partitions", args.partitions);

    let producer_agent = start_agent(config, "demo-producer", store.clone(), &data_dir)?;
    let consumer_agent = start_agent(config, "demo-billing", store.clone(), &data_dir)?;
    let consumer = billing_consumer(&bootstrap, consumer_agent.auditor().clone())?;

    let producer_id = producer_agent.auditor().agent_id().to_string();
    let consumer_id = consumer_agent.auditor().agent_id().to_string();
    let run_started_ms = SystemClock.now_ms();
    let started = Instant::now();
    let produced = produce(&bootstrap, producer_agent.auditor().clone(), args.messages)?;
    eprintln!("produced {produced} messages in {:.2?}", started.elapsed());
    let consumed = consume(&consumer, produced).await?;
    eprintln!("consumed {consumed} messages in {:.2?}", started.elapsed());
    drop(consumer);

    for (name, agent) in [("producer", producer_agent), ("consumer", consumer_agent)] {
        let report = agent.shutdown().await;
        anyhow::ensure!(report.pending == 0, "{name} agent could not write {} batches", report.pending);
    }
    // This run's rows only: a data directory reused across runs holds earlier runs too.
    let width = config.agent.bucket_width_ms as i64;
    let mut rows = store.read_range(TOPIC, run_started_ms - width, SystemClock.now_ms() + width).await?;
    rows.retain(|r| r.key.agent_id.starts_with(&producer_id) || r.key.agent_id.starts_with(&consumer_id));
    let merged = crate::report::merge_by_tier(&rows);
    let verdicts = crate::report::verdicts(&merged, &TIERS);
    let table = crate::report::render(&merged, &TIERS);
    drop(cluster);
    Ok(DemoOutcome { produced, consumed, verdicts, table, store: url.to_string() })
}

fn produce(bootstrap: &str, auditor: Auditor, n: u64) -> anyhow::Result<u64> {
    let producer: ThreadedProducer<AuditingProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create_with_context(AuditingProducerContext::new(auditor, TIERS[0]))
        .context("creating the producer")?;
    for i in 0..n {
        let key = format!("order-{i}");
        let created_at = SystemClock.now_ms();
        let payload = format!(r#"{{"order_id":"{key}","amount_cents":{},"created_at":{created_at}}}"#, 100 + i % 9_900);
        let mut record = BaseRecord::to(TOPIC).key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e).context("producing"),
            }
        }
    }
    producer.flush(Duration::from_secs(30)).context("flushing the producer")?;
    Ok(n)
}

fn billing_consumer(bootstrap: &str, auditor: Auditor) -> anyhow::Result<AuditedStreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "billing")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the consumer")?;
    consumer.subscribe(&[TOPIC]).context("subscribing")?;
    Ok(AuditedStreamConsumer::new(consumer, auditor, TIERS[1]))
}

async fn consume(consumer: &AuditedStreamConsumer, expected: u64) -> anyhow::Result<u64> {
    let mut consumed = 0;
    let deadline = Duration::from_secs(60);
    let started = Instant::now();
    while consumed < expected {
        let left = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(_)) => consumed += 1,
            Ok(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            Err(_) => break,
        }
    }
    Ok(consumed)
}
