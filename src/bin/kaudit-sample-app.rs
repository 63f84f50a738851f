//! `kaudit-sample-app`: an application audited with the agent library, as a separate process:
//! a producer writing orders at a rate, or a member of a consumer group. For end-to-end tests
//! (crash one, watch the audit) and for trying kaudit against a cluster.
//!
//! Both read a kaudit configuration file (`store`, `[agent]`, `[kafka]`) and run one agent that
//! flushes to the store. SIGTERM or Ctrl-C stops them cleanly: the producer waits for its
//! deliveries, then the agent's final flush marks the instance as stopped; SIGKILL does not.
//!
//! ```text
//! kaudit-sample-app produce --config app.toml --topic orders --rate 2000 --duration 30s
//! kaudit-sample-app consume --config app.toml --topic orders --group billing --tier consumer/billing
//! ```
//!
//! Messages carry key `order-<n>`, a small JSON payload and an `event-time` header (ms); point an
//! `[[agent.topics]]` rule at `header:event-time` to read it. `--log FILE` makes the consumer
//! append `<partition> <offset> <event-time>` for every message it processes (a ground truth for tests).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use kaudit::config::KauditConfig;
use kaudit::exit::{BoxError, Exit};
use kaudit::support::duration::parse_or_zero;
use kaudit_agent::kafka::{AuditedStreamConsumer, AuditedThreadedProducer, AuditingProducerContext};
use kaudit_agent::{AgentHandle, AgentMetrics, Spool, SystemClock};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};

#[derive(Parser)]
#[command(about = "an application audited with the kaudit agent library: a producer or a consumer")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Produce orders at `--rate` for `--duration`, tallied on delivery as `--tier`.
    Produce(ProduceArgs),
    /// Consume `--topic` in group `--group`, tallied on receive as `--tier`, until stopped.
    Consume(ConsumeArgs),
}

#[derive(Args)]
struct Common {
    /// Configuration file: `store`, `[agent]` (name, flush interval, rules), `[kafka]`.
    #[arg(long)]
    config: PathBuf,
    /// The topic to produce to or consume.
    #[arg(long)]
    topic: String,
    /// The tier the application's messages count as.
    #[arg(long)]
    tier: String,
}

#[derive(Args)]
struct ProduceArgs {
    #[command(flatten)]
    common: Common,
    /// Messages per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// How long to produce (then flush and stop).
    #[arg(long, default_value = "30s", value_parser = parse_or_zero)]
    duration: Duration,
    /// First order number (keys are `order-<n>`), so restarted producers write new orders.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Fault injection: the probability that a message is counted as delivered but never sent
    /// (a loss between the app and the broker, for soak tests). Default 0.
    #[arg(long, default_value_t = 0.0)]
    lose: f64,
    /// Append `<event_ms> <fingerprint hex>` for every message `--lose` dropped to this file.
    #[arg(long)]
    lost_log: Option<PathBuf>,
}

#[derive(Args)]
struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    /// The consumer group.
    #[arg(long)]
    group: String,
    /// Append `<partition> <offset> <event-time header>` per processed message to this file.
    #[arg(long)]
    log: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.role {
            Role::Produce(args) => produce(args).await,
            Role::Consume(args) => consume(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(exit) => {
            if let Some(message) = exit.message("sample-app") {
                eprintln!("{}", message.trim_end());
            }
            exit.code()
        }
    }
}

/// The configuration and an agent flushing to its store, named as configured.
async fn start_agent(common: &Common) -> Result<(KauditConfig, AgentHandle), Exit> {
    let config = kaudit::support::load::config(Some(&common.config))?;
    let url = config.store_url().map_err(Exit::config)?;
    let store = kaudit_schema::open_store(&url, &config.scylla).await?;
    let agent = &config.agent;
    let spool = Spool::open(&agent.spool_dir(&config.data_dir), agent.spool_max_bytes)?;
    let metrics = AgentMetrics::register(&prometheus::Registry::new())?;
    let auditor = agent.auditor(Arc::new(SystemClock));
    let handle = AgentHandle::start(auditor, store, Some(spool), agent.flusher_options(), metrics);
    Ok((config, handle))
}

/// Set once SIGTERM or Ctrl-C arrives.
fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let stop = kaudit::support::signal::shutdown_signal();
    tokio::spawn(async move {
        stop.await;
        set.store(true, Ordering::Relaxed);
    });
    flag
}

async fn produce(args: ProduceArgs) -> Result<(), Exit> {
    let stop = stop_flag();
    let (config, agent) = start_agent(&args.common).await?;
    let context = AuditingProducerContext::new(agent.auditor().clone(), &args.common.tier);
    let producer = AuditedThreadedProducer::create(&config.kafka_client(), context).map_err(Exit::failure)?;
    let lost_log = match &args.lost_log {
        Some(path) => Some(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        None => None,
    };
    let mut app = Producing {
        producer,
        topic: args.common.topic.clone(),
        lose: args.lose,
        lost_log,
        rng: rand::SeedableRng::from_os_rng(),
    };
    let (rate, duration, first) = (args.rate, args.duration, args.first);
    let sent = tokio::task::spawn_blocking(move || {
        app.run(rate, duration, first, &stop)?;
        app.producer.flush(Duration::from_secs(30))?;
        Ok::<_, BoxError>(())
    })
    .await
    .map_err(Exit::failure)?;
    sent?;
    let report = agent.shutdown().await;
    eprintln!("kaudit-sample-app: produced; {} flush batches pending", report.pending);
    Ok(())
}

/// The producing side: the audited producer and the loss fault.
struct Producing {
    producer: AuditedThreadedProducer,
    topic: String,
    lose: f64,
    lost_log: Option<std::fs::File>,
    rng: rand::rngs::StdRng,
}

impl Producing {
    /// Send `rate` messages a second for `duration` (or until `stop`), in 10-ms steps.
    fn run(&mut self, rate: u64, duration: Duration, first: u64, stop: &AtomicBool) -> Result<(), BoxError> {
        let started = Instant::now();
        let mut n = first;
        while started.elapsed() < duration && !stop.load(Ordering::Relaxed) {
            let due = first + (started.elapsed().as_millis() as u64 * rate / 1000);
            while n < due {
                if !self.send(n)? {
                    break; // the queue is full: try again in the next step
                }
                n += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Order `n`, sent or (with `--lose`) counted and dropped; false when the queue is full.
    fn send(&mut self, n: u64) -> Result<bool, BoxError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
        let stamp = now.to_string();
        let (key, payload) = (format!("order-{n}"), format!("{{\"order\":{n}}}"));
        if self.lose > 0.0 && rand::Rng::random::<f64>(&mut self.rng) < self.lose {
            let context = self.producer.context();
            context.auditor().record(&self.topic, context.tier(), key.as_bytes(), payload.as_bytes(), Some(now));
            if let Some(log) = &mut self.lost_log {
                let fp = kaudit_agent::fingerprint(key.as_bytes(), payload.as_bytes());
                log.write_all(format!("{now} {fp:016x}\n").as_bytes())?;
            }
            return Ok(true);
        }
        let headers = OwnedHeaders::new().insert(Header { key: "event-time", value: Some(stamp.as_bytes()) });
        let record = BaseRecord::to(&self.topic).key(&key).payload(&payload).headers(headers);
        match self.producer.send(record) {
            Ok(()) => Ok(true),
            Err((e, _)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => Ok(false),
            Err((e, _)) => Err(e.into()),
        }
    }
}

/// Commits the offsets of what was processed before partitions are taken away, as a well-behaved
/// group member does, so the next owner does not process them again. Runs on the thread that
/// polls the consumer.
struct CommitOnRevoke;

impl rdkafka::client::ClientContext for CommitOnRevoke {}

impl rdkafka::consumer::ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if matches!(rebalance, rdkafka::consumer::Rebalance::Revoke(_))
            && let Err(error) = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        {
            eprintln!("kaudit-sample-app: commit on revoke: {error}");
        }
    }
}

async fn consume(args: ConsumeArgs) -> Result<(), Exit> {
    let stop = kaudit::support::signal::shutdown_signal();
    let (config, agent) = start_agent(&args.common).await?;
    let consumer: StreamConsumer<CommitOnRevoke> = config
        .kafka_client()
        .set("group.id", &args.group)
        .set("auto.offset.reset", "earliest")
        .create_with_context(CommitOnRevoke)
        .map_err(Exit::failure)?;
    consumer.subscribe(&[&args.common.topic]).map_err(Exit::failure)?;
    let consumer = AuditedStreamConsumer::new(consumer, agent.auditor().clone(), &args.common.tier);
    let mut log = match &args.log {
        Some(path) => Some(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        None => None,
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            msg = consumer.recv() => match msg {
                Ok(msg) => {
                    if let Some(log) = &mut log {
                        let event = msg.headers().and_then(|h| h.iter().find(|h| h.key == "event-time")?.value);
                        let event = event.and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("-");
                        // One write per message: it reaches the kernel even if the process is killed.
                        log.write_all(format!("{} {} {event}\n", msg.partition(), msg.offset()).as_bytes())?;
                    }
                }
                Err(error) => eprintln!("kaudit-sample-app: consumer error: {error}"),
            },
        }
    }
    drop(consumer);
    let report = agent.shutdown().await;
    eprintln!("kaudit-sample-app: stopped; {} flush batches pending", report.pending);
    Ok(())
}
