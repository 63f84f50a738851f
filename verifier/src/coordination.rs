//! Several verifier instances sharing the topics, coordinated by Kafka.
//!
//! Topics hash into `shards` shards ([`shard_of`]); the shards are the partitions of a small
//! coordination topic. Every instance joins one consumer group on it with the cooperative-sticky
//! assignor and owns the partitions the group assigns it: Kafka decides membership, liveness
//! (`session_timeout_ms`) and failover, and a rebalance moves only the shards it must. Nothing is
//! ever produced to the topic.
//!
//! Hand-over: a revoked shard is released from the [`Ownership`] under its write lock, which waits
//! for the evaluation pass or delivery round in progress. An assigned shard is taken up with a new
//! epoch: the shard's committed offset, plus one, committed by the new owner. The commit carries
//! the group generation, so the group coordinator accepts it only from a current member; the same
//! commit, repeated, is the fence every write and delivery waits for ([`Ownership::hold`]).
//!
//! Lease: an instance acts for `session_timeout / 2` after a successful fence. The coordinator
//! gives a member's shards to another only after it missed heartbeats for a whole session timeout
//! (heartbeats every `session_timeout / 5`), and the new owner must fence before it acts, so a
//! replaced instance has stopped by then.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use kaudit_alerting::ownership::{Fence, Ownership};
use prometheus::{IntCounter, IntGauge, Registry};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

pub use kaudit_alerting::ownership::shard_of;

/// `[verifier.coordination]`: present, the verifier shares the topics with the other instances in
/// its group; absent, one instance evaluates every topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinationConfig {
    /// The coordination topic, one partition per shard; created by `kaudit migrate` or at start.
    /// Default `kaudit-verifier-shards`.
    pub topic: String,
    /// Shards, fixed for the life of a deployment (changing it moves every topic). Default 64.
    pub shards: u32,
    /// The consumer group of the verifier instances. Default `kaudit-verifier`.
    pub group_id: String,
    /// How long the group waits for a silent instance before its shards move, ms. Default 10000.
    pub session_timeout_ms: u64,
    /// Replication factor of the coordination topic when kaudit creates it. Default 3 (use 1 on a
    /// single-broker cluster).
    pub replication_factor: i32,
    /// This instance's name, in its verdicts' owner rows and logs. Default `<host>:<pid>`.
    pub instance: Option<String>,
}

impl Default for CoordinationConfig {
    fn default() -> Self {
        Self {
            topic: "kaudit-verifier-shards".into(),
            shards: 64,
            group_id: "kaudit-verifier".into(),
            session_timeout_ms: 10_000,
            replication_factor: 3,
            instance: None,
        }
    }
}

impl CoordinationConfig {
    /// Every problem, each at its key under `prefix` (`verifier.coordination`).
    pub fn validate(&self, prefix: &str) -> Vec<kaudit_schema::ConfigIssue> {
        let mut issues = Vec::new();
        let mut bad = |k: &str, m: &str| issues.push(kaudit_schema::ConfigIssue::at(prefix, k, m));
        if self.topic.is_empty() {
            bad("topic", "must name the coordination topic");
        }
        if !(1..=10_000).contains(&self.shards) {
            bad("shards", "must be 1 to 10000 (default 64)");
        }
        if self.group_id.is_empty() {
            bad("group_id", "must name the verifiers' consumer group");
        }
        if !(6_000..=300_000).contains(&self.session_timeout_ms) {
            bad("session_timeout_ms", "must be 6 s to 5 min (the brokers' usual bounds; default 10 s)");
        }
        if self.replication_factor < 1 {
            bad("replication_factor", "must be at least 1 (default 3)");
        }
        issues
    }

    /// This instance's name: configured, or `<host>:<pid>`.
    pub fn instance_name(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "verifier".into());
            format!("{host}:{}", std::process::id())
        })
    }

    /// How long an action may run after a successful fence.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.session_timeout_ms / 2)
    }
}

/// Coordination could not start.
#[derive(Debug, thiserror::Error)]
pub enum CoordinationError {
    /// The consumer (or the admin client) could not be created from the settings.
    #[error("cannot create the Kafka client for coordination")]
    Client(#[source] KafkaError),
    /// The shard metrics could not be registered (registered twice in one registry).
    #[error("cannot register the shard metrics")]
    Metrics(#[source] prometheus::Error),
    /// The coordination topic could not be created.
    #[error("cannot create coordination topic {topic}")]
    CreateTopic {
        topic: String,
        #[source]
        source: KafkaError,
    },
    /// The coordination topic exists with another partition count than `shards`.
    #[error(
        "coordination topic {topic} has {found} partitions but verifier.coordination.shards is {shards}: \
         the shard count is fixed for a deployment; set shards = {found} or use a new topic"
    )]
    Partitions { topic: String, found: usize, shards: u32 },
    /// The cluster's metadata for the coordination topic could not be read.
    #[error("cannot read the metadata of coordination topic {topic}")]
    Metadata {
        topic: String,
        #[source]
        source: KafkaError,
    },
    /// Subscribing to the coordination topic failed.
    #[error("cannot join the verifier group on {topic}")]
    Subscribe {
        topic: String,
        #[source]
        source: KafkaError,
    },
}

/// Create the coordination topic with `shards` partitions unless it exists, then check its
/// partition count. For `kaudit migrate` and the verifier's start.
pub async fn ensure_topic(client: &ClientConfig, config: &CoordinationConfig) -> Result<(), CoordinationError> {
    let admin: AdminClient<_> = client.create().map_err(CoordinationError::Client)?;
    let topic = NewTopic::new(&config.topic, config.shards as i32, TopicReplication::Fixed(config.replication_factor));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let exists = partitions(client, &config.topic).await?.is_some();
    if !exists {
        let created = admin.create_topics([&topic], &options).await;
        match created.map(|mut r| r.pop()) {
            Ok(Some(Ok(_))) | Ok(Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists)))) | Ok(None) => {}
            Ok(Some(Err((_, code)))) => {
                return Err(CoordinationError::CreateTopic {
                    topic: config.topic.clone(),
                    source: KafkaError::AdminOp(code),
                });
            }
            Err(source) => return Err(CoordinationError::CreateTopic { topic: config.topic.clone(), source }),
        }
    }
    let found = partitions(client, &config.topic).await?.unwrap_or(0);
    if found != config.shards as usize {
        return Err(CoordinationError::Partitions { topic: config.topic.clone(), found, shards: config.shards });
    }
    Ok(())
}

/// The partition count of `topic`, `None` if it does not exist.
async fn partitions(client: &ClientConfig, topic: &str) -> Result<Option<usize>, CoordinationError> {
    let client = client.clone();
    let name = topic.to_string();
    let err = |source| CoordinationError::Metadata { topic: topic.to_string(), source };
    let read = tokio::task::spawn_blocking(move || {
        let probe: BaseConsumer = client.clone().set("allow.auto.create.topics", "false").create()?;
        let metadata = probe.fetch_metadata(Some(&name), Duration::from_secs(10))?;
        Ok::<_, KafkaError>(metadata.topics().first().and_then(|t| {
            let missing = t.error().is_some() || t.partitions().is_empty();
            (!missing).then(|| t.partitions().len())
        }))
    });
    read.await.expect("metadata read does not panic").map_err(err)
}

/// Shard ownership metrics.
#[derive(Clone)]
pub struct CoordinationMetrics {
    pub shards_owned: IntGauge,
    pub rebalances: IntCounter,
}

impl CoordinationMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            shards_owned: IntGauge::new(
                "kaudit_verifier_shards_owned",
                "Shards (partitions of the coordination topic) this verifier instance owns.",
            )?,
            rebalances: IntCounter::new(
                "kaudit_verifier_rebalances_total",
                "Changes to this instance's shards by the verifier group (assignments and revocations).",
            )?,
        };
        r.register(Box::new(m.shards_owned.clone()))?;
        r.register(Box::new(m.rebalances.clone()))?;
        Ok(m)
    }
}

/// The group's callbacks: revocations release shards at once (waiting for the pass or delivery
/// holding them); assignments are taken up by the poll loop, which fences them with a new epoch.
struct GroupContext {
    ownership: Ownership,
    /// Assigned shards not yet taken up.
    assigned: Mutex<Vec<i32>>,
    metrics: CoordinationMetrics,
    /// The epochs committed for the owned shards: what the fence commits again.
    epochs: Arc<Mutex<BTreeMap<u32, i64>>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked: Vec<u32> = tpl.elements().iter().map(|e| e.partition() as u32).collect();
            if revoked.is_empty() {
                // A cooperative rebalance that takes nothing from this instance: no need to wait
                // for the pass in progress.
                return;
            }
            self.assigned.lock().expect("assigned lock").retain(|p| !revoked.contains(&(*p as u32)));
            // No fence commits a revoked shard's epoch again, even before the holds end.
            let owned = {
                let mut epochs = self.epochs.lock().expect("epochs lock");
                for p in &revoked {
                    epochs.remove(p);
                }
                epochs.len()
            };
            self.ownership.blocking_update(|owned| {
                for p in &revoked {
                    owned.remove(p);
                }
            });
            self.metrics.shards_owned.set(owned as i64);
            self.metrics.rebalances.inc();
            tracing::info!(shards = ?revoked, owned, "shards released");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let added: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            if !added.is_empty() {
                self.metrics.rebalances.inc();
                tracing::info!(shards = ?added, "shards assigned");
                self.assigned.lock().expect("assigned lock").extend(added);
            }
        }
    }
}

/// The group membership of this instance, on its own thread; dropping it leaves the group (its
/// shards move to the others at once).
pub struct Coordinator {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Coordinator {
    /// Join the group (`client` holds the cluster settings) and return the [`Ownership`] it keeps
    /// up to date.
    pub fn start(
        client: &ClientConfig,
        config: &CoordinationConfig,
        registry: &Registry,
    ) -> Result<(Ownership, Self), CoordinationError> {
        let metrics = CoordinationMetrics::register(registry).map_err(CoordinationError::Metrics)?;
        let epochs: Arc<Mutex<BTreeMap<u32, i64>>> = Arc::default();
        let slot: Arc<Mutex<Weak<BaseConsumer<GroupContext>>>> = Arc::new(Mutex::new(Weak::new()));
        let wait = (config.lease() / 5).min(Duration::from_secs(2));
        let fence = fence(slot.clone(), epochs.clone(), config.topic.clone(), wait);
        let name = config.instance_name();
        let ownership = Ownership::sharded(config.shards, name.clone(), config.lease(), fence);
        let context =
            GroupContext { ownership: ownership.clone(), assigned: Mutex::default(), metrics, epochs: epochs.clone() };
        let mut group = client.clone();
        group
            .set("group.id", &config.group_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (config.session_timeout_ms / 5).max(500).to_string())
            .set("client.id", format!("kaudit-verifier-{name}"));
        let consumer: BaseConsumer<GroupContext> =
            group.create_with_context(context).map_err(CoordinationError::Client)?;
        consumer
            .subscribe(&[&config.topic])
            .map_err(|source| CoordinationError::Subscribe { topic: config.topic.clone(), source })?;
        let consumer = Arc::new(consumer);
        *slot.lock().expect("consumer slot") = Arc::downgrade(&consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let topic = config.topic.clone();
        let thread = std::thread::Builder::new()
            .name("kaudit-shards".into())
            .spawn({
                let stop = stop.clone();
                move || poll_loop(consumer, &topic, &stop, wait)
            })
            .expect("spawn the coordination thread");
        tracing::info!(instance = %name, topic = %config.topic, shards = config.shards, group = %config.group_id, "joined the verifier group");
        Ok((ownership, Self { stop, thread: Some(thread) }))
    }

    /// Leave the group: the shards are released (after the pass holding them) and move to the
    /// other instances. Blocks; call once evaluation and delivery have stopped.
    pub fn leave(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Serve the group's callbacks until `stop`, taking up assigned shards; then leave the group.
fn poll_loop(consumer: Arc<BaseConsumer<GroupContext>>, topic: &str, stop: &AtomicBool, wait: Duration) {
    while !stop.load(Ordering::SeqCst) {
        if let Some(Err(error)) = consumer.poll(Duration::from_millis(100)) {
            tracing::warn!(%error, "verifier group");
        }
        let pending: Vec<i32> = consumer.context().assigned.lock().expect("assigned lock").clone();
        if !pending.is_empty() {
            take_up(&consumer, topic, &pending, wait);
        }
    }
    consumer.unsubscribe();
    // The revocation runs in a poll; give it a few.
    for _ in 0..20 {
        if consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0
            && consumer.context().epochs.lock().expect("epochs lock").is_empty()
        {
            break;
        }
        consumer.poll(Duration::from_millis(100));
    }
    consumer.context().ownership.blocking_update(|owned| owned.clear());
    tracing::info!("left the verifier group");
}

/// Take up newly assigned shards: each gets the epoch after its committed one, committed under the
/// current generation; a refused commit (a rebalance under way) leaves them for the next round.
fn take_up(consumer: &Arc<BaseConsumer<GroupContext>>, topic: &str, pending: &[i32], wait: Duration) {
    let mut tpl = TopicPartitionList::new();
    for p in pending {
        tpl.add_partition(topic, *p);
    }
    let committed = match consumer.committed_offsets(tpl, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(error) => {
            tracing::warn!(%error, "cannot read the shards' epochs; retrying");
            return;
        }
    };
    let mut next = TopicPartitionList::new();
    let mut epochs = BTreeMap::new();
    for e in committed.elements() {
        let epoch = match e.offset() {
            Offset::Offset(n) if n >= 0 => n + 1,
            _ => 1,
        };
        epochs.insert(e.partition() as u32, epoch);
        next.add_partition_offset(topic, e.partition(), Offset::Offset(epoch)).expect("valid offset");
    }
    // On its own thread, waited for at most `wait`: this thread must get back to serving the
    // group's callbacks (a revocation) even when librdkafka defers the commit.
    let (done, result) = std::sync::mpsc::channel();
    let committer = consumer.clone();
    std::thread::spawn(move || drop(done.send(committer.commit(&next, CommitMode::Sync))));
    match result.recv_timeout(wait) {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::info!(%error, "shards not taken up yet (group changing); retrying");
            std::thread::sleep(Duration::from_millis(200));
            return;
        }
        Err(_) => {
            tracing::info!(?wait, "shards not taken up yet (no answer to the commit); retrying");
            return;
        }
    }
    let context = consumer.context();
    let mut assigned = context.assigned.lock().expect("assigned lock");
    // A revocation in between removed them from `assigned`: only the ones still there are taken.
    epochs.retain(|p, _| assigned.contains(&(*p as i32)));
    assigned.retain(|p| !epochs.contains_key(&(*p as u32)));
    drop(assigned);
    context.epochs.lock().expect("epochs lock").extend(epochs.iter().map(|(p, e)| (*p, *e)));
    context.ownership.blocking_update(|owned| owned.extend(epochs.iter().map(|(p, e)| (*p, *e))));
    let owned = context.epochs.lock().expect("epochs lock").len();
    context.metrics.shards_owned.set(owned as i64);
    tracing::info!(shards = ?epochs, owned, "shards taken up");
}

/// The fence: commit the owned shards' epochs again, under this member's generation, waiting at
/// most `wait`: a commit librdkafka defers (no group coordinator known) must not keep a pass
/// holding its shards, which a revocation may be waiting for. The late commit's answer is ignored.
fn fence(
    slot: Arc<Mutex<Weak<BaseConsumer<GroupContext>>>>,
    epochs: Arc<Mutex<BTreeMap<u32, i64>>>,
    topic: String,
    wait: Duration,
) -> Fence {
    Arc::new(move || {
        let consumer = slot.lock().expect("consumer slot").upgrade();
        let mut tpl = TopicPartitionList::new();
        for (p, e) in epochs.lock().expect("epochs lock").iter() {
            tpl.add_partition_offset(&topic, *p as i32, Offset::Offset(*e)).expect("valid offset");
        }
        Box::pin(async move {
            let Some(consumer) = consumer else { return Err("left the group".to_string()) };
            if tpl.count() == 0 {
                return Err("no shards owned".to_string());
            }
            let commit = tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync));
            match tokio::time::timeout(wait, commit).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(e.to_string()),
                Ok(Err(e)) => Err(format!("fence task: {e}")),
                Err(_) => Err(format!("no answer to the fence's commit within {wait:?} (a rebalance under way)")),
            }
        })
    })
}
