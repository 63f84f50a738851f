//! A tap started through [`TapHandle`] against librdkafka's mock cluster, writing to SQLite: it
//! counts every message once, its shutdown stores every tally with nothing left pending, and a
//! second start (under the same name or another, in the same group) resumes at the stored offsets.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kaudit_agent::tap::{StartFrom, TapConfig, TapHandle, TapHandleOptions, TapStartError, partition_agent_id};
use kaudit_agent::{AgentConfig, AgentMetrics};
use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{SqliteStore, Store};
use kaudit_testkit::QuickMockCluster;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

const PARTITIONS: i32 = 3;

fn produce(bootstrap: &str, topic: &str, keys: std::ops::Range<u64>) {
    let producer: ThreadedProducer<_> = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    for i in keys {
        let key = format!("order-{i}");
        producer.send(BaseRecord::to(topic).key(&key).payload(b"{}")).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// A tap named `name` in consumer group `group`, whose flusher never ticks on its own within a
/// test, so what is stored was written by the shutdown path. The mock cluster keeps even a cleanly
/// closed member until its session times out before it rebalances the group, so sessions are short.
fn options(
    name: &str,
    group: &str,
    topic: &str,
    dir: &Path,
    store: Arc<dyn Store>,
    bootstrap: &str,
) -> TapHandleOptions {
    let agent = AgentConfig { name: name.into(), flush_interval_ms: 600_000, ..AgentConfig::default() };
    let config = TapConfig {
        tier: "broker".into(),
        topics: vec![topic.into()],
        group_id: Some(group.into()),
        start_from: StartFrom::Earliest,
    };
    let metrics = AgentMetrics::register(&prometheus::Registry::new()).unwrap();
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", bootstrap).set("session.timeout.ms", "6000");
    TapHandleOptions::from_agent(&agent, dir, config, store, metrics, client)
}

async fn wait_for_seen(tap: &TapHandle, n: u64) {
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while tap.seen() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(waited.await.is_ok(), "the tap saw {} of {n} messages", tap.seen());
}

/// (Summed stored count of the broker tier, summed stored next offsets) over the partitions of the
/// taps of `group`.
async fn stored(store: &dyn Store, group: &str, topic: &str) -> (u64, i64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let rows = store.read_range(topic, now - 3_600_000, now + 3_600_000).await.unwrap();
    let (mut count, mut offsets) = (0, 0);
    for partition in 0..PARTITIONS {
        let agent_id = partition_agent_id(group, topic, partition);
        let of_partition = rows.iter().filter(|r| r.key.agent_id == agent_id && r.key.tier == "broker");
        count += of_partition.map(|r| r.tally.count).sum::<u64>();
        offsets += store.load_offsets(&agent_id).await.unwrap().iter().map(|o| o.next_offset).sum::<i64>();
    }
    (count, offsets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_handle_stores_exactly_what_it_saw_and_resumes_at_its_offsets() {
    let cluster = QuickMockCluster::new(1).unwrap();
    let topic = "tap-handle";
    cluster.create_topic(topic, PARTITIONS).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("tap.db"), &SqliteOptions::default()).unwrap());
    produce(bootstrap, topic, 0..600);

    let tap = TapHandle::start(options("tap-test", "taps", topic, dir.path(), store.clone(), bootstrap)).await.unwrap();
    wait_for_seen(&tap, 600).await;
    assert_eq!(tap.assigned().len(), PARTITIONS as usize);
    let report = tap.shutdown().await;
    assert_eq!(report.pending, 0, "{report:?}");
    assert_eq!(stored(store.as_ref(), "taps", topic).await, (600, 600));

    // A second run reads the stored state back: it sees only the new messages, and the stored
    // tallies count every message once (Kafka has no offsets for the tap: it never commits).
    produce(bootstrap, topic, 600..1000);
    let tap = TapHandle::start(options("tap-test", "taps", topic, dir.path(), store.clone(), bootstrap)).await.unwrap();
    wait_for_seen(&tap, 400).await;
    assert_eq!(tap.seen(), 400);
    let report = tap.shutdown().await;
    assert_eq!(report.pending, 0, "{report:?}");
    assert_eq!(stored(store.as_ref(), "taps", topic).await, (1000, 1000));
}

/// Taps are named per host; a partition's state belongs to their group, so a tap of another name
/// takes a partition over where the previous holder stopped, and nothing is counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taps_of_different_names_in_one_group_hand_partitions_over_without_recounting() {
    let cluster = QuickMockCluster::new(1).unwrap();
    let topic = "tap-handover";
    cluster.create_topic(topic, PARTITIONS).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("tap.db"), &SqliteOptions::default()).unwrap());
    produce(bootstrap, topic, 0..700);

    let tap_a =
        TapHandle::start(options("tap-a", "orders-taps", topic, dir.path(), store.clone(), bootstrap)).await.unwrap();
    wait_for_seen(&tap_a, 700).await;
    let a_id = tap_a.shared().agent_id().to_string();
    assert!(a_id.starts_with("tap-a-"), "{a_id}");
    wait_for_caught_up(&tap_a).await;
    assert_eq!(tap_a.shutdown().await.pending, 0);
    let heartbeats = store.read_heartbeats(topic).await.unwrap();
    assert_eq!(heartbeats.len(), 1);
    let a = &heartbeats[0];
    assert_eq!((a.agent_id.as_str(), a.tier.as_str(), a.stopped, a.resumes), (a_id.as_str(), "broker", true, true));

    produce(bootstrap, topic, 700..1000);
    let tap_b =
        TapHandle::start(options("tap-b", "orders-taps", topic, dir.path(), store.clone(), bootstrap)).await.unwrap();
    wait_for_seen(&tap_b, 300).await;
    wait_for_caught_up(&tap_b).await;
    assert_eq!(tap_b.seen(), 300, "tap-b read on where tap-a stopped");
    assert_eq!(tap_b.shutdown().await.pending, 0);
    assert_eq!(stored(store.as_ref(), "orders-taps", topic).await, (1000, 1000), "exactly what was produced");
    let progress = store.read_progress(topic).await.unwrap();
    assert_eq!(progress.len(), PARTITIONS as usize);
    assert!(progress.iter().all(|p| p.caught_up && p.agent_id.starts_with("tap-b-")), "{progress:?}");
}

/// Wait until `tap` has seen the end of every partition (partition EOF since its last message).
async fn wait_for_caught_up(tap: &TapHandle) {
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while tap.shared().caught_up().len() < PARTITIONS as usize {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(waited.await.is_ok(), "caught up: {:?} of {:?}", tap.shared().caught_up(), tap.assigned());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_errors_name_the_part_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("tap.db"), &SqliteOptions::default()).unwrap());

    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"").unwrap();
    let mut spool_in_a_file = options("tap-errors", "errors", "t", dir.path(), store.clone(), "127.0.0.1:1");
    spool_in_a_file.spool_dir = Some(not_a_dir.join("tap"));
    let error = TapHandle::start(spool_in_a_file).await.err().expect("a spool under a file cannot open");
    assert!(matches!(error, TapStartError::Spool(_)), "{error:?}");

    let mut bad_client = options("tap-errors", "errors", "t", dir.path(), store, "127.0.0.1:1");
    bad_client.client.set("no.such.setting", "1");
    let error = TapHandle::start(bad_client).await.err().expect("librdkafka refuses unknown settings");
    assert!(matches!(error, TapStartError::Kafka(_)), "{error:?}");
    assert!(kaudit_schema::error_chain(&error).starts_with("cannot start the tap's consumer: "), "{error}");
}
