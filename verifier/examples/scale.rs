//! What one verifier pass costs, as topics grow: fills a store with `--topics` topics' tallies the
//! way the agents' flushers write them, builds an [`Engine`] over it as `kaudit verifier` does, and
//! times `Engine::tick` for the first pass, for steady passes with no new data and, with
//! `--changed-fraction`, for passes after a fraction of the topics got one late tally row.
//!
//! ```text
//! cargo run --release -p kaudit-verifier --example scale -- --topics 1000 [--tiers 3] [--agents 1]
//!     [--buckets 60] [--width 60s] [--store sqlite:PATH|scylla://host:port] [--changed-fraction 0.0]
//!     [--passes 10] [--messages 1000] [--shards 64 --own I/N] [--no-fill --wall-ms MS]
//!     [--cql-test-server]
//! ```
//!
//! * **Instances.** `--shards S --own I/N` evaluates only the topics of the shards numbered I mod
//!   N, as one of N verifier instances would (with a fence that always holds: no Kafka). To
//!   measure N instances over one store, fill it once (`--fill-only --store sqlite:PATH --wall-ms
//!   MS`) and start N runs with `--no-fill --store sqlite:PATH --wall-ms MS --own I/N` side by
//!   side; each prints its first pass's `buckets_per_s`.
//!
//! * **Shape.** One pipeline over every topic: `producer → broker`, then `consumer/app-1`, … each
//!   reading the broker (`--tiers` in all, so `--tiers − 1` edges). Each tier has `--agents`
//!   instances, each counting its share of `--messages` per bucket; every tier counts the same
//!   messages, so every edge is complete. `--buckets` buckets of `--width`, the newest holding
//!   the wall clock.
//! * **Fill.** Each (tier, instance) writes its rows through [`Store::write`] in flush batches that
//!   carry, per topic, the heartbeat and progress row an agent writes with every flush
//!   (`agent/src/table.rs`): live, caught up at `now`; the producer per instance, the Kafka tiers
//!   per partition. So the verifier sees live tiers past every bucket and judges them.
//! * **Clock.** A [`ManualClock`] set so that every bucket but the newest is past the watermark
//!   (`end + grace < now`), and held still: no bucket crosses the watermark during the run, so a
//!   steady pass is the cost of re-reading what did not change. The lateness window is widened
//!   when the buckets span more than the default hour, and `max_new_topics_per_pass` is raised
//!   to `--topics` so the first pass admits every topic (the default admits 100 a pass).
//! * **Changes.** Before each changed pass, the first producer instance flushes, for each changed
//!   topic, its row of the newest closed bucket again: cumulative, with one more late message and
//!   a higher version, with heartbeat and progress. That revises the producer → broker edge (a
//!   loss), which each changed pass must report, once per changed topic.
//! * **Honesty.** Only the wall time of `Engine::tick` is timed; nothing sleeps. The first pass
//!   must have judged every closed bucket of every edge, and a steady pass nothing, or the run
//!   fails. The fill runs in a child process (this binary with `--fill-only`), so the measured
//!   process holds only what the engine does, as a separate `kaudit verifier` process would: its
//!   peak (VmHWM) and current (VmRSS) resident memory are the engine's, its store connection and
//!   runtime.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use clap::Parser;
use kaudit_alerting::dispatch::Backoff;
use kaudit_alerting::{AlertMetrics, Dispatcher, Ownership};
use kaudit_schema::scylladb::{connect_session, migrate};
use kaudit_schema::{
    EpochMillis, FlushBatch, HeartbeatRow, ManualClock, ProgressRow, ScyllaOptions, Store, StoreUrl, StreamId, Tally,
    TallyKey, TallyRow, open_store,
};
use kaudit_verifier::{Engine, PipelineConfig, TickReport, VerifierConfig, VerifierMetrics};

/// The agents' default flush interval, ms; the verifier's grace and agent timeout follow from it.
const FLUSH_INTERVAL_MS: u64 = 5_000;
/// Topics per fill batch: one flush of one instance over this many topics.
const TOPICS_PER_BATCH: usize = 50;

#[derive(Debug, Parser)]
#[command(about = "Time the verifier's evaluation passes over a filled store")]
struct Args {
    /// Topics to fill and evaluate.
    #[arg(long)]
    topics: usize,
    /// Tiers per topic: producer, broker, then consumer groups (at least 2).
    #[arg(long, default_value_t = 3)]
    tiers: usize,
    /// Agent instances per tier, each counting its share of the messages.
    #[arg(long, default_value_t = 1)]
    agents: usize,
    /// Buckets per topic, the newest still open.
    #[arg(long, default_value_t = 60)]
    buckets: i64,
    /// Bucket width.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    width: Duration,
    /// `sqlite:PATH` or `scylla://host:port[,host:port]`. Default: a fresh SQLite file in a temp dir.
    #[arg(long)]
    store: Option<String>,
    /// Keyspace to create and fill when the store is ScyllaDB.
    #[arg(long, default_value = "kaudit_scale")]
    keyspace: String,
    /// Fill and evaluate a CQL store served in this process by the tests' CQL server
    /// (`kaudit-testkit`, single-threaded: its pace, not ScyllaDB's; the process's memory
    /// includes the server's data).
    #[arg(long, conflicts_with = "store")]
    cql_test_server: bool,
    /// The CQL server does not report schema agreement (the tests' server): do not wait for it.
    #[arg(long, hide = true)]
    no_schema_agreement: bool,
    /// Fraction of topics that get one late tally row before each changed pass (0: no changed passes).
    #[arg(long, default_value_t = 0.0)]
    changed_fraction: f64,
    /// Steady passes, and changed passes.
    #[arg(long, default_value_t = 10)]
    passes: usize,
    /// Messages per topic and bucket.
    #[arg(long, default_value_t = 1_000)]
    messages: u64,
    /// Wait this long after the first pass before the steady passes, so that the fill's writes
    /// are older than the verifier's change-index overlap (60 s), as in a deployment where
    /// nothing was written for a minute. The wait is not measured. Default 0.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Then this many passes with live idle agents: before each, every agent instance writes a
    /// flush with no tallies, only its heartbeat and progress for every topic (as agents do every
    /// flush interval). The writes are not measured. Default 0.
    #[arg(long, default_value_t = 0)]
    live_passes: usize,
    /// Evaluate as one of several instances sharing `--shards` shards: `I/N` owns the shards whose
    /// number is I modulo N (what a consumer group might assign). Needs `--shards`.
    #[arg(long, requires = "shards")]
    own: Option<String>,
    /// Shards the topics hash into, with `--own`.
    #[arg(long)]
    shards: Option<u32>,
    /// Evaluate what `--store` holds, filled before by a `--fill-only` run at the same `--wall-ms`
    /// (several instances measured side by side over one fill).
    #[arg(long, requires_all = ["store", "wall_ms"])]
    no_fill: bool,
    /// Only fill `--store` for buckets ending at `--wall-ms`, then exit (the measuring run's child).
    #[arg(long, hide = true, requires_all = ["store", "wall_ms"])]
    fill_only: bool,
    /// The wall clock the buckets end at, ms since the epoch (the fill's child gets it; runs that
    /// share one fill give the fill's). Default: now.
    #[arg(long)]
    wall_ms: Option<EpochMillis>,
}

/// What is filled, and when the engine looks at it.
#[derive(Debug, Clone)]
struct Shape {
    topics: usize,
    tiers: Vec<String>,
    agents: usize,
    buckets: i64,
    width_ms: i64,
    messages: u64,
    /// `(shards, owned shards)` when evaluating as one of several instances.
    owned: Option<(u32, Vec<u32>)>,
    /// Start of the newest bucket, still open at `now`.
    last_start: EpochMillis,
    /// The engine's clock.
    now: EpochMillis,
    /// Version of the fill's rows: the agents' clock in µs, as their flushers write it.
    version: u64,
}

impl Shape {
    fn new(args: &Args, wall_ms: EpochMillis) -> anyhow::Result<Self> {
        let width_ms = i64::try_from(args.width.as_millis())?;
        ensure!(args.topics > 0 && args.agents > 0 && width_ms > 0, "--topics, --agents and --width must be positive");
        ensure!(args.tiers >= 2, "--tiers must be at least 2 (one edge)");
        ensure!(args.buckets >= 2, "--buckets must be at least 2 (one closed bucket)");
        ensure!(args.passes > 0, "--passes must be positive");
        ensure!((0.0..=1.0).contains(&args.changed_fraction), "--changed-fraction must be within 0..=1");
        let mut tiers = vec!["producer".to_string(), "broker".to_string()];
        tiers.extend((1..args.tiers - 1).map(|i| format!("consumer/app-{i}")));
        let last_start = wall_ms / width_ms * width_ms;
        // Every bucket but the newest is past `end + grace`; the newest holds `now` when grace allows.
        let grace = VerifierConfig::default().grace_ms(FLUSH_INTERVAL_MS) as i64;
        let now = last_start + (width_ms - 1).max(grace + 1);
        let (topics, agents, buckets, messages) = (args.topics, args.agents, args.buckets, args.messages);
        let owned = match (&args.own, args.shards) {
            (Some(own), Some(shards)) => {
                let (i, n) = own.split_once('/').context("--own I/N")?;
                let (i, n): (u32, u32) = (i.parse()?, n.parse()?);
                ensure!(n > 0 && i < n && shards > 0, "--own I/N needs I < N, and --shards positive");
                Some((shards, (0..shards).filter(|s| s % n == i).collect()))
            }
            _ => None,
        };
        let version = now as u64 * 1000;
        Ok(Self { topics, tiers, agents, buckets, width_ms, messages, owned, last_start, now, version })
    }

    fn start(&self, bucket: i64) -> EpochMillis {
        self.last_start - (self.buckets - 1 - bucket) * self.width_ms
    }

    fn rows(&self) -> usize {
        self.topics * self.tiers.len() * self.agents * self.buckets as usize
    }

    /// Topics this run evaluates: all, or those of its shards.
    fn evaluated_topics(&self) -> usize {
        match &self.owned {
            None => self.topics,
            Some((shards, owned)) => (0..self.topics)
                .filter(|t| owned.contains(&kaudit_alerting::shard_of(&topic_name(*t), *shards)))
                .count(),
        }
    }

    /// Edge verdicts the first pass must reach: every closed bucket of every edge of every topic
    /// it evaluates.
    fn expected_first(&self) -> usize {
        self.evaluated_topics() * (self.buckets as usize - 1) * (self.tiers.len() - 1)
    }

    /// The verifier as `kaudit verifier` would run it over this store, but admitting every topic
    /// in the first pass and keeping every closed bucket within the lateness window.
    fn config(&self) -> VerifierConfig {
        let defaults = VerifierConfig::default();
        let grace = defaults.grace_ms(FLUSH_INTERVAL_MS) as i64;
        let oldest_end = self.start(0) + self.width_ms;
        let lateness_ms = defaults.lateness_ms.max((self.now - grace - oldest_end) as u64);
        VerifierConfig {
            pipelines: vec![PipelineConfig {
                topics: vec!["*".into()],
                tiers: self.tiers[..2].to_vec(),
                consumers: self.tiers[2..].to_vec(),
            }],
            lateness_ms,
            max_new_topics_per_pass: self.topics.max(defaults.max_new_topics_per_pass),
            max_topics: self.topics.max(defaults.max_topics),
            // Sharded passes read cold topics for one interval at most: the measured first pass
            // reads them all.
            evaluate_interval_ms: if self.owned.is_some() { 3_600_000 } else { defaults.evaluate_interval_ms },
            ..defaults
        }
    }
}

fn topic_name(topic: usize) -> String {
    format!("scale.{topic:06}")
}

fn agent_id(tier: &str, agent: usize) -> String {
    format!("{tier}-{agent}")
}

/// A well-mixed fingerprint of message `i` of a topic's bucket (splitmix64).
fn fingerprint(topic: usize, bucket: i64, i: u64) -> u64 {
    let mut z = (topic as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (bucket as u64).rotate_left(29) ^ i;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What instance `agent` of any tier counted of `topic`'s bucket `bucket` (every tier counts the
/// same messages, split round robin between instances), plus `late` messages that instance 0
/// counted late.
fn tally(shape: &Shape, topic: usize, bucket: i64, agent: usize, late: u64) -> Tally {
    let mut t = Tally::default();
    let own = (agent as u64..shape.messages).step_by(shape.agents);
    let late = if agent == 0 { shape.messages..shape.messages + late } else { 0..0 };
    for i in own.chain(late) {
        let fp = fingerprint(topic, bucket, i);
        t.add(fp, 200 + fp % 800);
        t.latency.record(2 + (fp % 200) as i64);
    }
    t
}

/// The progress row and heartbeat instance `agent` of tier `tier` writes for `topic` with each
/// flush: live and caught up at `now`; the producer per instance, a Kafka tier per partition.
fn reports(shape: &Shape, topic: &str, tier: usize, agent: usize, version: u64) -> (ProgressRow, HeartbeatRow) {
    let (tier_name, id) = (shape.tiers[tier].clone(), agent_id(&shape.tiers[tier], agent));
    let stream = if tier == 0 { StreamId::Agent(id.clone()) } else { StreamId::Partition(agent as i32) };
    let progress = ProgressRow {
        topic: topic.to_string(),
        tier: tier_name.clone(),
        stream,
        agent_id: id.clone(),
        watermark_ms: shape.now,
        caught_up: true,
        reported_at_ms: shape.now,
        version,
    };
    let heartbeat = HeartbeatRow {
        topic: topic.to_string(),
        tier: tier_name,
        agent_id: id,
        started_at_ms: shape.start(0),
        heartbeat_ms: shape.now,
        open_from_ms: Some(shape.last_start),
        stopped: false,
        resumes: false,
        version,
    };
    (progress, heartbeat)
}

/// Add one instance's row of one bucket to `batch`.
fn push_row(batch: &mut FlushBatch, shape: &Shape, topic: &str, tier: usize, agent: usize, row: (i64, Tally, u64)) {
    let (bucket, tally, version) = row;
    let tier_name = &shape.tiers[tier];
    let key = TallyKey {
        topic: topic.to_string(),
        bucket_start_ms: shape.start(bucket),
        tier: tier_name.clone(),
        agent_id: agent_id(tier_name, agent),
    };
    batch.rows.push(TallyRow { key, bucket_width_ms: shape.width_ms, version, tally });
}

/// Write every row, heartbeat and progress row, one instance's flush over a few topics at a time.
async fn fill(store: &dyn Store, shape: &Shape) -> anyhow::Result<()> {
    let all: Vec<usize> = (0..shape.topics).collect();
    for chunk in all.chunks(TOPICS_PER_BATCH) {
        // [topic][agent][bucket]: each tier counts the same, so it is computed once.
        let tallies: Vec<Vec<Vec<Tally>>> = chunk
            .iter()
            .map(|&t| {
                (0..shape.agents).map(|a| (0..shape.buckets).map(|b| tally(shape, t, b, a, 0)).collect()).collect()
            })
            .collect();
        for tier in 0..shape.tiers.len() {
            for agent in 0..shape.agents {
                let mut batch = FlushBatch::default();
                for (&t, per_agent) in chunk.iter().zip(&tallies) {
                    let topic = topic_name(t);
                    for (b, tally) in per_agent[agent].iter().enumerate() {
                        push_row(&mut batch, shape, &topic, tier, agent, (b as i64, tally.clone(), shape.version));
                    }
                    let (progress, heartbeat) = reports(shape, &topic, tier, agent, shape.version);
                    batch.progress.push(progress);
                    batch.heartbeats.push(heartbeat);
                }
                store.write(&batch).await.context("fill")?;
            }
        }
    }
    Ok(())
}

/// Every instance's idle flush: heartbeats and progress for every topic, no tallies, at `version`.
async fn idle_flush(store: &dyn Store, shape: &Shape, version: u64) -> anyhow::Result<()> {
    let all: Vec<usize> = (0..shape.topics).collect();
    for chunk in all.chunks(TOPICS_PER_BATCH) {
        for tier in 0..shape.tiers.len() {
            for agent in 0..shape.agents {
                let mut batch = FlushBatch::default();
                for &t in chunk {
                    let (progress, heartbeat) = reports(shape, &topic_name(t), tier, agent, version);
                    batch.progress.push(progress);
                    batch.heartbeats.push(heartbeat);
                }
                store.write(&batch).await.context("idle flush")?;
            }
        }
    }
    Ok(())
}

/// Passes after every agent's idle flush: nothing to judge, but every topic's reports changed.
async fn live(engine: &mut Engine, store: &dyn Store, shape: &Shape, passes: usize) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(passes);
    for pass in 1..=passes {
        idle_flush(store, shape, shape.version + 1_000 + pass as u64).await?;
        let (ms, report) = timed(engine).await?;
        ensure!(report == TickReport::default(), "live pass {pass} judged something: {report:?}");
        times.push(ms);
    }
    Ok(times)
}

/// The changed topics: `fraction` of all (at least one), spread evenly.
fn changed_topics(shape: &Shape, fraction: f64) -> Vec<usize> {
    let n = ((fraction * shape.topics as f64).round() as usize).clamp(1, shape.topics);
    (0..n).map(|j| j * shape.topics / n).collect()
}

/// The first producer instance's flush before changed pass `k` (from 1): its row of the newest
/// closed bucket of each changed topic, cumulative with `k` late messages, at a higher version.
fn late_flush(shape: &Shape, topics: &[usize], k: u64) -> FlushBatch {
    let (bucket, version) = (shape.buckets - 2, shape.version + k);
    let mut batch = FlushBatch::default();
    for &t in topics {
        let topic = topic_name(t);
        push_row(&mut batch, shape, &topic, 0, 0, (bucket, tally(shape, t, bucket, 0, k), version));
        let (progress, heartbeat) = reports(shape, &topic, 0, 0, version);
        batch.progress.push(progress);
        batch.heartbeats.push(heartbeat);
    }
    batch
}

/// `sqlite:PATH` (or `sqlite://PATH`), `scylla://…`, or a fresh SQLite file in a temp dir (kept
/// until the returned guard drops).
fn store_url(arg: Option<&str>) -> anyhow::Result<(StoreUrl, Option<tempfile::TempDir>)> {
    let Some(arg) = arg else {
        let dir = tempfile::tempdir()?;
        return Ok((StoreUrl::Sqlite(dir.path().join("scale.db")), Some(dir)));
    };
    let arg = match arg.strip_prefix("sqlite:") {
        Some(path) if !path.starts_with("//") => format!("sqlite://{path}"),
        _ => arg.to_string(),
    };
    Ok((arg.parse()?, None))
}

/// Open the store; `migrate` creates and migrates a ScyllaDB keyspace first (SQLite migrates on
/// open).
async fn open(url: &StoreUrl, args: &Args, migrate: bool) -> anyhow::Result<Arc<dyn Store>> {
    let options = ScyllaOptions {
        keyspace: args.keyspace.clone(),
        await_schema_agreement: !args.no_schema_agreement,
        ..ScyllaOptions::default()
    };
    if let (StoreUrl::Scylla(hosts), true) = (url, migrate) {
        let session = connect_session(hosts, &options).await?;
        migrate::migrate(&session, &options).await?;
    }
    Ok(open_store(url, &options).await?)
}

/// An engine over `store` as `kaudit verifier` builds one (a dispatcher with no sinks), on `clock`;
/// with `--own`, owning those shards as the group would have assigned them (its fence always
/// holds: no Kafka here).
async fn engine(store: Arc<dyn Store>, shape: &Shape, clock: &ManualClock) -> anyhow::Result<Engine> {
    let registry = prometheus::Registry::new();
    let dispatcher = Dispatcher::new(store.clone(), Vec::new(), AlertMetrics::register(&registry)?, Backoff::default());
    let metrics = VerifierMetrics::register(&registry)?;
    let clock = Arc::new(clock.clone());
    let ownership = match &shape.owned {
        None => Ownership::sole("scale"),
        Some((shards, owned)) => {
            let fence: kaudit_alerting::ownership::Fence = Arc::new(|| Box::pin(async { Ok(()) }));
            let ownership = Ownership::sharded(*shards, "scale", Duration::from_secs(3_600), fence);
            let (o, owned) = (ownership.clone(), owned.clone());
            tokio::task::spawn_blocking(move || o.blocking_update(|e| e.extend(owned.iter().map(|s| (*s, 1))))).await?;
            ownership
        }
    };
    let engine = Engine::new(store, Some(dispatcher), shape.config(), FLUSH_INTERVAL_MS, clock, metrics);
    Ok(engine.with_ownership(ownership))
}

/// One pass, and its wall time in ms.
async fn timed(engine: &mut Engine) -> anyhow::Result<(f64, TickReport)> {
    let started = Instant::now();
    let report = engine.tick().await?;
    Ok((started.elapsed().as_secs_f64() * 1000.0, report))
}

/// Peak (VmHWM) and current (VmRSS) resident memory, MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> f64 {
        let line = status.lines().find(|l| l.starts_with(name));
        let kb = line.and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok());
        kb.map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn median(ms: &[f64]) -> f64 {
    let mut sorted = ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    (sorted[(n - 1) / 2] + sorted[n / 2]) / 2.0
}

fn max(ms: &[f64]) -> f64 {
    ms.iter().copied().fold(f64::NAN, f64::max)
}

/// ` hwm_mib=… rss_mib=…` for a phase line.
fn memory_fields() -> String {
    let (hwm, rss) = memory();
    format!("hwm_mib={hwm:.1} rss_mib={rss:.1}")
}

/// Steady passes: nothing new, so each must judge and revise nothing. Returns their times.
async fn steady(engine: &mut Engine, passes: usize) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(passes);
    for pass in 1..=passes {
        let (ms, report) = timed(engine).await?;
        ensure!(report == TickReport::default(), "steady pass {pass} was not idle: {report:?}");
        times.push(ms);
    }
    Ok(times)
}

/// Changed passes: before each, one late row per changed topic; each must revise exactly those
/// topics' producer → broker edge. Returns their times.
async fn changed(
    engine: &mut Engine,
    store: &dyn Store,
    shape: &Shape,
    topics: &[usize],
    passes: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(passes);
    for k in 1..=passes {
        store.write(&late_flush(shape, topics, k as u64)).await.context("late flush")?;
        let (ms, report) = timed(engine).await?;
        ensure!(
            report.revisions == topics.len() && report.first_evaluations == 0,
            "changed pass {k} revised {} edges (expected {}): {report:?}",
            report.revisions,
            topics.len()
        );
        times.push(ms);
    }
    Ok(times)
}

/// The child's work: fill the store and say what it wrote.
async fn fill_only(args: &Args) -> anyhow::Result<()> {
    let shape = Shape::new(args, args.wall_ms.context("--wall-ms")?)?;
    let (url, _) = store_url(args.store.as_deref())?;
    let started = Instant::now();
    fill(&*open(&url, args, true).await?, &shape).await?;
    println!(
        "fill    topics={} tiers={} agents={} buckets={} width_ms={} messages={} rows={} store={url} fill_ms={} {}",
        shape.topics,
        shape.tiers.len(),
        shape.agents,
        shape.buckets,
        shape.width_ms,
        shape.messages,
        shape.rows(),
        started.elapsed().as_millis(),
        memory_fields(),
    );
    Ok(())
}

/// Fill `url` in a child process (this binary with `--fill-only`), so none of the fill's memory is
/// the measuring process's.
fn fill_in_child(args: &Args, url: &StoreUrl, wall_ms: EpochMillis) -> anyhow::Result<()> {
    let width = format!("{}ms", args.width.as_millis());
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["--fill-only", "--wall-ms", &wall_ms.to_string(), "--store", &url.to_string()])
        .args(["--topics", &args.topics.to_string(), "--tiers", &args.tiers.to_string()])
        .args(["--agents", &args.agents.to_string(), "--buckets", &args.buckets.to_string()])
        .args(["--width", &width, "--keyspace", &args.keyspace, "--messages", &args.messages.to_string()])
        .args(args.no_schema_agreement.then_some("--no-schema-agreement"))
        .status()
        .context("start the fill")?;
    ensure!(status.success(), "the fill failed: {status}");
    Ok(())
}

/// The first pass, which must judge every closed bucket of every edge; its time in ms.
async fn first(engine: &mut Engine, shape: &Shape) -> anyhow::Result<f64> {
    let (ms, report) = timed(engine).await?;
    let expected = shape.expected_first();
    println!(
        "first   topics={} evaluated_topics={} rows={} first_ms={ms:.1} first_evaluations={} expected={expected} \
         buckets_per_s={:.0} {}",
        shape.topics,
        shape.evaluated_topics(),
        shape.rows(),
        report.first_evaluations,
        report.first_evaluations as f64 / (ms / 1000.0),
        memory_fields()
    );
    ensure!(
        report.first_evaluations == expected,
        "the first pass judged {} edge buckets, not {expected}: {report:?}",
        report.first_evaluations
    );
    Ok(ms)
}

fn main() -> anyhow::Result<()> {
    // As `kaudit` does, before any thread starts: the measured process allocates as the binary's.
    kaudit_verifier::memory::limit_malloc_arenas();
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let _cql = args.cql_test_server.then(|| {
        let server = kaudit_testkit::CqlServer::start();
        args.store = Some(format!("scylla://{}", server.addr()));
        args.no_schema_agreement = true;
        server
    });
    if args.fill_only {
        return fill_only(&args).await;
    }
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as EpochMillis;
    let wall_ms = args.wall_ms.unwrap_or(now_ms);
    let shape = Shape::new(&args, wall_ms)?;
    let (url, _dir) = store_url(args.store.as_deref())?;
    let (topics, rows) = (shape.topics, shape.rows());
    if !args.no_fill {
        fill_in_child(&args, &url, wall_ms)?;
    }

    let store = open(&url, &args, false).await?;
    let clock = ManualClock::new(shape.now);
    let mut engine = engine(store.clone(), &shape, &clock).await?;
    let first_ms = first(&mut engine, &shape).await?;
    tokio::time::sleep(args.settle).await;

    let times = steady(&mut engine, args.passes).await?;
    let (steady_ms, steady_max) = (median(&times), max(&times));
    println!(
        "steady  topics={topics} rows={rows} passes={} median_ms={steady_ms:.1} max_ms={steady_max:.1} {}",
        args.passes,
        memory_fields()
    );

    let mut live_ms = "na".to_string();
    if args.live_passes > 0 {
        let times = live(&mut engine, &*store, &shape, args.live_passes).await?;
        live_ms = format!("{:.1}", median(&times));
        println!(
            "live    topics={topics} rows={rows} passes={} median_ms={live_ms} max_ms={:.1} {}",
            args.live_passes,
            max(&times),
            memory_fields()
        );
    }

    let mut changed_ms = "na".to_string();
    if args.changed_fraction > 0.0 {
        let picked = changed_topics(&shape, args.changed_fraction);
        let times = changed(&mut engine, &*store, &shape, &picked, args.passes).await?;
        changed_ms = format!("{:.1}", median(&times));
        println!(
            "changed topics={topics} rows={rows} passes={} changed_topics={} median_ms={changed_ms} max_ms={:.1} {}",
            args.passes,
            picked.len(),
            max(&times),
            memory_fields()
        );
    }

    let (hwm, rss) = memory();
    println!(
        "topics={topics} rows={rows} first_ms={first_ms:.1} steady_ms={steady_ms:.1} steady_max_ms={steady_max:.1} \
         live_ms={live_ms} changed_ms={changed_ms} hwm_mib={hwm:.1} rss_mib={rss:.1}"
    );
    Ok(())
}
