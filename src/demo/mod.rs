//! `kaudit demo`: the whole system in one process, with faults injected, on embedded defaults.
//!
//! librdkafka's mock cluster runs in-process on loopback ports. An audited producer writes orders
//! at `--rate` for `--duration`; a broker-tier tap and two consumer groups (billing, analytics) read
//! them, each with its agent; every agent flushes to SQLite (or the configured store); the verifier
//! evaluates buckets as they close, raises alerts (to `--webhook`, else printed) and serves its API.
//! Faults (see [`faults`]) start at a bucket boundary after `--faults-after`. At the end the demo
//! prints, per bucket and edge, what was injected beside what was detected, and how long each
//! alert took from the first faulty message; it exits 0 when detection matches injection.

pub mod faults;
mod workload;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use kaudit_agent::kafka::AuditedStreamConsumer;
use kaudit_agent::tap::{StartFrom, TapConfig, TapRunner, TapShared};
use kaudit_agent::{AgentConfig, AgentHandle, AgentMetrics, Clock, Spool, SystemClock, TopicRuleConfig};
use kaudit_alerting::dispatch::Backoff;
use kaudit_alerting::sinks::WebhookConfig;
use kaudit_alerting::{Alert, AlertState, SinkConfig};
use kaudit_schema::{BucketWidth, EpochMillis, Store, StoreUrl};
use kaudit_verifier::service::{ServiceParts, serve};
use kaudit_verifier::{PipelineConfig, VerifierConfig};
use rdkafka::consumer::Consumer;
use rdkafka::mocking::MockCluster;
use tokio::sync::watch;

use self::faults::{ANALYTICS, BILLING, BROKER, EdgeCheck, FaultPlan, Ledger, PRODUCER, TOPIC};
use self::workload::Shared;
use crate::cli::{EXIT_ALERTS_UNDELIVERED, EXIT_AUDIT_MISMATCH};
use crate::config::{KafkaConfig, KafkaOptionValue, KauditConfig};
use crate::report::utc;

/// How often the demo's verifier evaluates, ms.
const EVALUATE_INTERVAL_MS: u64 = 1_000;

/// `--delay-ms` must be at least this far from the delay threshold: the delayed messages' p99 is
/// the delay plus a few ms of pipeline latency and the sketch's 1 % rounding, so a delay right at
/// the threshold would be flagged or not by chance.
const DELAY_MARGIN_MS: u64 = 200;

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How long to produce: 90s, 5m...
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Messages produced per second.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=500_000))]
    pub rate: u64,
    /// Probability that a message is lost between producer and broker.
    #[arg(long, default_value_t = 0.0001, value_parser = parse_probability, allow_negative_numbers = true)]
    pub loss: f64,
    /// Probability that consumer/billing processes a message twice.
    #[arg(long, default_value_t = 0.0015, value_parser = parse_probability, allow_negative_numbers = true)]
    pub duplicates: f64,
    /// How long after its creation consumer/analytics processes each message, ms (0: on time).
    #[arg(long, default_value_t = 2_000, value_parser = parse_delay, allow_negative_numbers = true)]
    pub delay_ms: u64,
    /// Event-time bucket width: 10s, 1m...
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub bucket: Duration,
    /// Faults start at the first bucket boundary at least this long after the start.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub faults_after: Duration,
    /// Deliver alerts to this URL as JSON webhooks (as `[[alerting.sinks]] type = "webhook"`), as
    /// well as printing them.
    #[arg(long)]
    pub webhook: Option<String>,
    /// Address of the verifier's API and /metrics while the demo runs (another port if taken).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: String,
    /// Seed of the random fault choices (the same seed picks the same messages).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to keep the SQLite database and spools. Default: the config's `data_dir` when
    /// `--config` is given, else a temporary directory removed on exit.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A configuration file for agent settings (extraction rules, spool...), the store, verifier
    /// thresholds and alert sinks.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Partitions of the demo topic.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub partitions: i32,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.trim_end_matches(['s', 'm']) == "0" {
        return Ok(Duration::ZERO);
    }
    crate::report_cmd::parse_duration_ms(s).map(|ms| Duration::from_millis(ms as u64))
}

fn parse_delay(s: &str) -> Result<u64, String> {
    match s.parse::<i64>() {
        Ok(ms) if (0..=600_000).contains(&ms) => Ok(ms as u64),
        _ => Err(format!("{s:?} must be a whole number of milliseconds from 0 to 600000")),
    }
}

fn parse_probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=0.5).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} must be a probability from 0 to 0.5")),
    }
}

/// How long an alert took, from the first faulty message to its firing.
#[derive(Debug, Clone)]
pub struct AlertTiming {
    pub alert: Alert,
    pub after_fault_ms: i64,
}

/// What the demo found.
#[derive(Debug)]
pub struct DemoOutcome {
    pub ledger: Ledger,
    pub checks: Vec<EdgeCheck>,
    pub table: String,
    pub expected_alerts: BTreeSet<String>,
    pub alerts: Vec<AlertTiming>,
    /// Bucket width + grace + evaluation interval: the most an alert should take, ms.
    pub alert_bound_ms: i64,
    /// Notifications the sinks had not accepted by the end.
    pub undelivered: usize,
    pub store: String,
}

impl DemoOutcome {
    fn fired(&self) -> BTreeSet<String> {
        self.alerts.iter().map(|a| a.alert.dedup_key.clone()).collect()
    }

    /// Every bucket's verdicts match the injected faults and exactly the expected alerts fired.
    pub fn matches(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.matches) && self.fired() == self.expected_alerts
    }
}

pub fn main(args: DemoArgs) -> ExitCode {
    let config = match crate::cli::load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let threshold = config.verifier.thresholds.p99_delay_ms;
    if args.delay_ms > 0 && args.delay_ms.abs_diff(threshold) < DELAY_MARGIN_MS {
        eprintln!(
            "kaudit demo: --delay-ms {} is too close to the delay threshold ({threshold} ms) to say whether it should \
             alert; keep it {DELAY_MARGIN_MS} ms away",
            args.delay_ms
        );
        return ExitCode::from(2);
    }
    if let Err(e) = validate(&args) {
        eprintln!("kaudit demo: {e}");
        return ExitCode::from(2);
    }
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
            print_outcome(&outcome, kept);
            let (lost, duplicated, delayed) = outcome.ledger.totals();
            if !outcome.matches() {
                println!("detection does NOT match injection (see ✗ above)");
                return ExitCode::from(EXIT_AUDIT_MISMATCH);
            }
            if lost + duplicated + delayed == 0 {
                println!(
                    "detection matches injection: nothing injected, every bucket complete on every edge, no alert"
                );
            } else {
                println!("detection matches injection: every faulty bucket found with its exact count, no false alarm");
            }
            if outcome.undelivered > 0 {
                println!(
                    "but {} alert notifications were not accepted by the alert sinks (see the warnings above)",
                    outcome.undelivered
                );
                return ExitCode::from(EXIT_ALERTS_UNDELIVERED);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kaudit demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(args: &DemoArgs) -> Result<(), String> {
    let bucket = args.bucket.as_millis();
    if !(1_000..=3_600_000).contains(&bucket) {
        return Err("--bucket must be from 1s to 1h".into());
    }
    if args.duration < Duration::from_secs(1) || args.duration.as_secs() > 24 * 3600 {
        return Err("--duration must be from 1s to 24h".into());
    }
    if let Err(e) = args.listen.parse::<std::net::SocketAddr>() {
        return Err(format!("--listen {:?}: {e} (an address such as 127.0.0.1:9464)", args.listen));
    }
    Ok(())
}

fn print_outcome(o: &DemoOutcome, kept: &str) {
    println!("\n{}", o.table);
    let (lost, duplicated, delayed) = o.ledger.totals();
    let produced: u64 = o.ledger.buckets().values().map(|b| b.produced).sum();
    println!("produced {produced}; injected: {lost} lost, {duplicated} duplicated, {delayed} delayed");
    if o.alerts.is_empty() && o.expected_alerts.is_empty() {
        println!("\nalerts: none (none expected)");
    } else {
        println!("\nalerts (time from the first faulty message; bound = bucket + grace + evaluation interval):");
    }
    for a in &o.alerts {
        let mark = if !o.expected_alerts.contains(&a.alert.dedup_key) {
            "  ✗ not expected"
        } else if a.after_fault_ms > o.alert_bound_ms {
            "  (later than the bound: the verifier fell behind)"
        } else {
            ""
        };
        println!(
            "  {:<36} fired after {:>5.1} s (bound {:.1} s){mark}",
            a.alert.dedup_key,
            a.after_fault_ms as f64 / 1000.0,
            o.alert_bound_ms as f64 / 1000.0
        );
    }
    for missing in o.expected_alerts.iter().filter(|k| !o.alerts.iter().any(|a| &a.alert.dedup_key == *k)) {
        println!("  {missing:<36} ✗ expected but never fired");
    }
    if o.undelivered > 0 {
        println!("  {} notifications not accepted by the alert sinks", o.undelivered);
    }
    println!("\ntallies and verdicts in {}{kept}", o.store);
    if kept.is_empty() {
        println!("read them back with: kaudit report --store {} --topic {TOPIC} --since 1h", o.store);
    }
}

/// The agent settings every demo agent shares: the demo's bucket width, short flushes, and the
/// rule that reads id and event time from the JSON payload first (librdkafka's mock cluster
/// acknowledges every produce with a fake LogAppendTime, so the demo carries event time in the
/// payload, as many real pipelines do).
fn agent_settings(config: &KauditConfig, width: BucketWidth) -> AgentConfig {
    let mut agent = config.agent.clone();
    agent.bucket_width_ms = width.as_millis() as u64;
    agent.flush_interval_ms = agent.flush_interval_ms.min(1_000);
    let demo_rule = TopicRuleConfig {
        pattern: TOPIC.into(),
        business_id: "json:/order_id".parse().expect("valid"),
        event_time: "json:/created_at".parse().expect("valid"),
    };
    agent.topics.insert(0, demo_rule);
    agent
}

fn start_agent(agent: &AgentConfig, name: &str, store: Arc<dyn Store>, data_dir: &Path) -> anyhow::Result<AgentHandle> {
    let mut agent = agent.clone();
    agent.name = name.to_string();
    // Several agents in one process: each needs its own spool.
    agent.spool_dir = Some(agent.spool_dir(data_dir).join(name));
    let auditor = agent.auditor(Arc::new(SystemClock));
    let spool = Spool::open(&agent.spool_dir(data_dir), agent.spool_max_bytes)?;
    let metrics = AgentMetrics::register(&prometheus::Registry::new())?;
    Ok(AgentHandle::start(auditor, store, Some(spool), agent.flusher_options(), metrics))
}

struct Tap {
    shared: Arc<TapShared>,
    runner: TapRunner,
    flusher: tokio::task::JoinHandle<kaudit_agent::FlushReport>,
    stop: watch::Sender<bool>,
}

/// The broker-tier tap, started as `kaudit agent` starts one, against the mock cluster (only
/// the demo's settings: a user's `[kafka]` section is for a real cluster).
async fn start_tap(
    config: &KauditConfig,
    agent: &AgentConfig,
    name: &str,
    bootstrap: &str,
    store: Arc<dyn Store>,
    data_dir: &Path,
) -> anyhow::Result<Tap> {
    let mut tap_config = config.clone();
    tap_config.agent = AgentConfig { name: name.into(), ..agent.clone() };
    tap_config.data_dir = data_dir.to_path_buf();
    tap_config.kafka = KafkaConfig {
        bootstrap_servers: Some(bootstrap.into()),
        options: [("fetch.wait.max.ms".to_string(), KafkaOptionValue::Integer(50))].into(),
    };
    let tap =
        TapConfig { tier: BROKER.into(), topics: vec![TOPIC.into()], group_id: None, start_from: StartFrom::Earliest };
    let metrics = AgentMetrics::register(&prometheus::Registry::new())?;
    let (stop, stopped) = watch::channel(false);
    let (shared, runner, flusher) = crate::agent_cmd::start_tap(&tap_config, &tap, store, metrics, stopped)
        .await
        .map_err(|e| anyhow::anyhow!("starting the broker tap: {}", kaudit_agent::flusher::error_chain(e.as_ref())))?;
    Ok(Tap { shared, runner, flusher, stop })
}

/// The verifier's settings for the demo: its pipeline, zero-tolerance loss and duplicate
/// thresholds (the default 0.01 % would sit right at the demo's loss rate), evaluation every
/// second, and a grace that covers analytics' delay plus two flushes.
fn verifier_settings(config: &KauditConfig, agent: &AgentConfig, delay_ms: u64, listen: &str) -> VerifierConfig {
    let mut v = config.verifier.clone();
    v.pipelines = vec![PipelineConfig {
        topics: vec![TOPIC.into()],
        tiers: vec![PRODUCER.into(), BROKER.into()],
        consumers: vec![BILLING.into(), ANALYTICS.into()],
    }];
    v.grace_ms = Some(delay_ms + 2 * agent.flush_interval_ms + 2_000);
    v.evaluate_interval_ms = EVALUATE_INTERVAL_MS;
    // Thresholds only: the CUSUM needs 64 buckets of history, and over a long demo latency jitter
    // alone could move it; the demo checks exact counts, which the thresholds carry.
    v.baseline_min_samples = usize::MAX;
    v.thresholds.loss_ratio = 0.0;
    v.thresholds.duplicate_ratio = 0.0;
    v.listen = listen.into();
    v
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

/// Run the demo with `data_dir` for its state.
pub async fn run(args: &DemoArgs, config: &KauditConfig, data_dir: PathBuf) -> anyhow::Result<DemoOutcome> {
    let width = BucketWidth::from_millis(args.bucket.as_millis() as u64).context("bucket width")?;
    let run_id = format!("{}-{}", SystemClock.now_ms(), std::process::id());
    // A database per run, so alerts still firing from an earlier run in the same directory
    // cannot mask this run's.
    let url = match &config.store {
        Some(url) => url.parse::<StoreUrl>()?,
        None => StoreUrl::Sqlite(data_dir.join(format!("demo-{run_id}.db"))),
    };
    let store = kaudit_schema::open_store(&url, &config.scylla).await?;
    let cluster = MockCluster::new(3).context("starting librdkafka's mock cluster")?;
    cluster.create_topic(TOPIC, args.partitions, 1).context("creating the demo topic")?;
    let bootstrap = cluster.bootstrap_servers();
    eprintln!("mock Kafka cluster on {bootstrap}; topic {TOPIC:?} with {} partitions", args.partitions);

    let agent = agent_settings(config, width);
    let producer_agent = start_agent(&agent, "demo-producer", store.clone(), &data_dir)?;
    let billing_agent = start_agent(&agent, "demo-billing", store.clone(), &data_dir)?;
    let analytics_agent = start_agent(&agent, "demo-analytics", store.clone(), &data_dir)?;
    let tap = start_tap(config, &agent, &format!("demo-tap-{run_id}"), &bootstrap, store.clone(), &data_dir).await?;

    let mut sink_configs = config.alerting.sinks.clone();
    if let Some(url) = &args.webhook {
        sink_configs.push(SinkConfig::Webhook(WebhookConfig {
            name: Some("demo-webhook".into()),
            url: url.clone(),
            secret: None,
            secret_env: None,
        }));
    }
    let sinks = sink_configs.iter().map(|s| s.build()).collect::<Result<Vec<_>, _>>().map_err(anyhow::Error::msg)?;
    let sink_names: Vec<String> = sinks.iter().map(|s| s.name.clone()).collect();
    let verifier = verifier_settings(config, &agent, args.delay_ms, &args.listen);
    let grace_ms = verifier.grace_ms(agent.flush_interval_ms) as i64;
    let alert_bound_ms = width.as_millis() + grace_ms + verifier.evaluate_interval_ms as i64;
    let delay_threshold_ms = verifier.thresholds.p99_delay_ms;
    let listener = bind(&args.listen).await?;
    let api = format!("http://{}", listener.local_addr()?);
    let (stop_verifier, verifier_stopped) = watch::channel(false);
    let registry = prometheus::Registry::new();
    let parts = ServiceParts {
        store: store.clone(),
        config: verifier,
        sinks,
        backoff: Backoff {
            base: Duration::from_millis(config.alerting.retry_base_ms.min(500)),
            max: Duration::from_millis(config.alerting.retry_max_ms.min(5_000)),
            poll: Duration::from_millis(250),
        },
        flush_interval_ms: agent.flush_interval_ms,
        registry: registry.clone(),
        clock: Arc::new(SystemClock),
    };
    let service = tokio::spawn(serve(listener, parts, async move {
        let mut rx = verifier_stopped;
        let _ = rx.wait_for(|s| *s).await;
    }));

    // Consumers first: they and the tap must have joined before the clock of the run starts,
    // or the seconds a group join takes would show up as delay.
    let billing_consumer = Arc::new(AuditedStreamConsumer::new(
        workload::consumer(&bootstrap, "billing")?,
        billing_agent.auditor().clone(),
        BILLING,
    ));
    let analytics_consumer = Arc::new(workload::consumer(&bootstrap, "analytics")?);
    let (stop_consumers, consumers_stopped) = watch::channel(false);
    let shared = Shared::new(width);
    let billing_task = tokio::spawn(workload::billing(
        billing_consumer.clone(),
        billing_agent.auditor().clone(),
        shared.clone(),
        args.seed,
        consumers_stopped.clone(),
    ));
    let analytics_task = tokio::spawn(workload::analytics(
        analytics_consumer.clone(),
        analytics_agent.auditor().clone(),
        shared.clone(),
        consumers_stopped,
    ));
    wait_for_assignments(&tap.shared, &billing_consumer, &analytics_consumer).await?;

    let run_start = SystemClock.now_ms();
    let faults_from = {
        let t = run_start + args.faults_after.as_millis() as i64;
        let b = width.start_of(t);
        if b == t { b } else { width.end_of(b) }
    };
    let plan =
        FaultPlan { loss: args.loss, duplicates: args.duplicates, delay_ms: args.delay_ms, from_ms: faults_from };
    shared.set_plan(plan);
    let any_fault = args.loss > 0.0 || args.duplicates > 0.0 || args.delay_ms > 0;
    let fault_text = if !any_fault {
        "no faults injected".to_string()
    } else if faults_from >= run_start + args.duration.as_millis() as i64 {
        format!("no faults will be injected: they would start at {}, after the run ends", utc(faults_from))
    } else {
        format!(
            "faults from {} (loss {} before the broker, duplicates {} at billing, delay {} ms at analytics)",
            utc(faults_from),
            args.loss,
            args.duplicates,
            args.delay_ms
        )
    };
    let alerts_to =
        if sink_names.is_empty() { "printed here".to_string() } else { format!("sent to {}", sink_names.join(", ")) };
    eprintln!(
        "producing {} msg/s for {:?}; {}-s buckets; {fault_text}\nverifier API and /metrics on {api} (e.g. \
         {api}/api/v1/alerts); alerts {alerts_to}",
        args.rate,
        args.duration,
        width.as_millis() / 1000,
    );

    let interrupt = {
        let shared = shared.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: stopping the producer and finishing the audit (Ctrl-C again to quit)");
                shared.stop_producing.store(true, Relaxed);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        })
    };
    let watcher = AlertWatcher::spawn(store.clone(), run_start, faults_from);
    let progress = spawn_progress(shared.clone(), tap.shared.clone(), args.duration);

    let producer = {
        let (bootstrap, auditor, shared) = (bootstrap.clone(), producer_agent.auditor().clone(), shared.clone());
        let (rate, duration, seed) = (args.rate, args.duration, args.seed);
        tokio::task::spawn_blocking(move || workload::produce(&bootstrap, auditor, &shared, rate, duration, seed))
    };
    producer.await??;
    let sent = shared.counters.sent();
    let (mut received, mut last_change) = (0, Instant::now());
    wait_until(Duration::from_secs(24 * 3600), || {
        let c = &shared.counters;
        let (t, b, a) = (tap.shared.seen(), c.billing.load(Relaxed), c.analytics.load(Relaxed));
        if t + b + a != received {
            (received, last_change) = (t + b + a, Instant::now());
        }
        (t >= sent && b >= sent && a >= sent) || last_change.elapsed() > Duration::from_secs(30)
    })
    .await?;
    let c = &shared.counters;
    anyhow::ensure!(
        tap.shared.seen() >= sent && c.billing.load(Relaxed) >= sent && c.analytics.load(Relaxed) >= sent,
        "the consumers stopped receiving before every message arrived (30 s without progress): sent {sent}, broker {}, \
         billing {}, analytics {}",
        tap.shared.seen(),
        c.billing.load(Relaxed),
        c.analytics.load(Relaxed)
    );
    let _ = stop_consumers.send(true);
    billing_task.await?;
    analytics_task.await?;
    progress.abort();
    eprintln!();
    drop(billing_consumer);
    drop(analytics_consumer);
    tokio::task::spawn_blocking(move || tap.runner.stop()).await?;
    let _ = tap.stop.send(true);
    let mut pending = tap.flusher.await?.pending;
    for agent in [producer_agent, billing_agent, analytics_agent] {
        pending += agent.shutdown().await.pending;
    }
    anyhow::ensure!(pending == 0, "the agents could not write {pending} batches");

    let ledger = shared.ledger.lock().expect("ledger poisoned").clone();
    let (first, last) = match (ledger.buckets().keys().next(), ledger.buckets().keys().last()) {
        (Some(f), Some(l)) => (*f, *l),
        _ => anyhow::bail!("nothing was produced"),
    };
    // The verifier must have judged the last bucket, and have seen the agents' final flush (if the
    // consumers fell behind, a verdict reached before it is revised by the next pass).
    let flushed_at = SystemClock.now_ms();
    let eval_ms = EVALUATE_INTERVAL_MS as i64;
    let due = (width.end_of(last) + grace_ms).max(flushed_at) + 2 * eval_ms;
    eprintln!(
        "all agents flushed; waiting for the verifier to close the last bucket ({} + grace)",
        utc(width.end_of(last))
    );
    let expected = 3 * ledger.buckets().len();
    let deadline = Duration::from_millis((due - SystemClock.now_ms()).max(0) as u64 + 15_000);
    let verdicts_done = wait_until_async(deadline, || {
        let store = store.clone();
        async move {
            SystemClock.now_ms() >= due
                && store.read_verdicts(TOPIC, first, last + 1).await.map_or(0, |v| v.len()) >= expected
        }
    })
    .await;
    if verdicts_done.is_err() {
        eprintln!("kaudit demo: the verifier did not evaluate every bucket in time");
    }
    // An alert is recorded just after its pass writes the verdicts: give the engine one more pass,
    // then let the dispatcher deliver what it raised.
    tokio::time::sleep(Duration::from_millis(2 * eval_ms as u64)).await;
    let undelivered_now = || {
        let (store, names) = (store.clone(), sink_names.clone());
        async move {
            let mut n: usize = 0;
            for name in &names {
                n = n.saturating_add(store.outbox(name, 1_000).await.map_or(1, |o| o.len()));
            }
            n
        }
    };
    let _ = wait_until_async(Duration::from_secs(15), || {
        let f = undelivered_now();
        async move { f.await == 0 }
    })
    .await;
    let _ = stop_verifier.send(true);
    service.await?.map_err(|e| anyhow::anyhow!(kaudit_agent::flusher::error_chain(e.as_ref())))?;
    // Still waiting in the outbox, plus refused by a receiver (4xx: dropped, never retried).
    let undelivered = undelivered_now().await + rejected_notifications(&registry) as usize;
    let alerts = watcher.finish().await;
    interrupt.abort();
    drop(cluster);

    let verdicts = store.read_verdicts(TOPIC, first, last + 1).await?;
    let checks = faults::check(&ledger, &verdicts, &plan, delay_threshold_ms);
    let table = faults::render(&ledger, &checks, utc);
    let expected_alerts = ledger.expected_alerts(delay_threshold_ms, args.delay_ms);
    Ok(DemoOutcome {
        ledger,
        checks,
        table,
        expected_alerts,
        alerts,
        alert_bound_ms,
        undelivered,
        store: url.to_string(),
    })
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

async fn wait_for_assignments(
    tap: &TapShared,
    billing: &AuditedStreamConsumer,
    analytics: &rdkafka::consumer::StreamConsumer,
) -> anyhow::Result<()> {
    let assigned = |c: &rdkafka::consumer::StreamConsumer| c.assignment().map(|a| a.count() > 0).unwrap_or(false);
    let started = Instant::now();
    wait_until(Duration::from_secs(60), || !tap.assigned().is_empty() && assigned(billing) && assigned(analytics))
        .await
        .context("the tap and consumer groups did not join within 60 s")?;
    eprintln!("tap and consumer groups joined in {:.1?}", started.elapsed());
    Ok(())
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    wait_until_async(limit, || std::future::ready(done())).await
}

async fn wait_until_async<F: Future<Output = bool>>(
    limit: Duration,
    mut done: impl FnMut() -> F,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while !done().await {
        anyhow::ensure!(started.elapsed() < limit, "timed out after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A progress line every second: on a terminal rewritten in place, else every 5 s.
fn spawn_progress(shared: Arc<Shared>, tap: Arc<TapShared>, duration: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let tty = std::io::stderr().is_terminal();
        let started = Instant::now();
        let mut last_produced = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let c = &shared.counters;
            let produced = c.produced.load(Relaxed);
            let line = format!(
                "{:>4}s/{}s  produced {produced} ({}/s)  broker {}  billing {}  analytics {}  | lost {}  duplicated {}  delayed {}",
                started.elapsed().as_secs(),
                duration.as_secs(),
                produced - last_produced,
                tap.seen(),
                c.billing.load(Relaxed),
                c.analytics.load(Relaxed),
                c.lost.load(Relaxed),
                c.duplicated.load(Relaxed),
                c.delayed.load(Relaxed),
            );
            last_produced = produced;
            if tty {
                eprint!("\r{line}\x1b[K");
            } else if started.elapsed().as_secs().is_multiple_of(5) {
                eprintln!("{line}");
            }
        }
    })
}

/// Prints alerts of this run as their state changes, and keeps them.
struct AlertWatcher {
    faults_from: EpochMillis,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<BTreeMap<String, Alert>>,
}

impl AlertWatcher {
    fn spawn(store: Arc<dyn Store>, run_start: EpochMillis, faults_from: EpochMillis) -> Self {
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut seen: HashMap<String, AlertState> = HashMap::new();
            let mut firsts: BTreeMap<String, Alert> = BTreeMap::new();
            loop {
                let stopping = *rx.borrow();
                for record in store.list_alerts().await.unwrap_or_default() {
                    let Ok(alert) = serde_json::from_str::<Alert>(&record.body) else { continue };
                    if alert.starts_at_ms < run_start || seen.get(&alert.dedup_key) == Some(&alert.state) {
                        continue;
                    }
                    let after = (alert.starts_at_ms - faults_from) as f64 / 1000.0;
                    let when = match alert.state {
                        AlertState::Firing => format!("{after:+.1} s after faults began"),
                        AlertState::Resolved => "resolved".into(),
                    };
                    eprintln!("\nALERT ({when}) {}", alert.summary());
                    seen.insert(alert.dedup_key.clone(), alert.state);
                    firsts.entry(alert.dedup_key.clone()).or_insert(alert);
                }
                if stopping {
                    return firsts;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = rx.changed() => {}
                }
            }
        });
        Self { faults_from, stop, task }
    }

    async fn finish(self) -> Vec<AlertTiming> {
        let _ = self.stop.send(true);
        let alerts = self.task.await.unwrap_or_default();
        alerts
            .into_values()
            .map(|alert| AlertTiming { after_fault_ms: alert.starts_at_ms - self.faults_from, alert })
            .collect()
    }
}
