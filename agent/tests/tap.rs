//! A tap started through [`TapHandle`] against librdkafka's mock cluster, writing to SQLite: it
//! counts every message once, its shutdown stores every tally with nothing left pending, and a
//! second start resumes at the stored offsets.

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
/// test, so what is stored was written by the shutdown path.
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
    client.set("bootstrap.servers", bootstrap);
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

/// (Summed stored count of the broker tier, summed stored next offsets) over the tap's partitions.
async fn stored(store: &dyn Store, name: &str, topic: &str) -> (u64, i64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let rows = store.read_range(topic, now - 3_600_000, now + 3_600_000).await.unwrap();
    let (mut count, mut offsets) = (0, 0);
    for partition in 0..PARTITIONS {
        let agent_id = partition_agent_id(name, topic, partition);
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

    let tap =
        TapHandle::start(options("tap-test", "run-1", topic, dir.path(), store.clone(), bootstrap)).await.unwrap();
    wait_for_seen(&tap, 600).await;
    assert_eq!(tap.assigned().len(), PARTITIONS as usize);
    let report = tap.shutdown().await;
    assert_eq!(report.pending, 0, "{report:?}");
    assert_eq!(stored(store.as_ref(), "tap-test", topic).await, (600, 600));

    // A second run reads the stored state back: it sees only the new messages, and the stored
    // tallies count every message once. It joins a new group (Kafka has no offsets for the tap
    // either way, as it never commits), because the mock cluster keeps even a cleanly closed member
    // until its session times out (45 s) before it rebalances the old group.
    produce(bootstrap, topic, 600..1000);
    let tap =
        TapHandle::start(options("tap-test", "run-2", topic, dir.path(), store.clone(), bootstrap)).await.unwrap();
    wait_for_seen(&tap, 400).await;
    assert_eq!(tap.seen(), 400);
    let report = tap.shutdown().await;
    assert_eq!(report.pending, 0, "{report:?}");
    assert_eq!(stored(store.as_ref(), "tap-test", topic).await, (1000, 1000));
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
