//! A consumer-side loss named by partition and offset, end to end: a mock Kafka cluster in its own
//! process, kcat producing, a `kaudit agent` tapping the topic as tier `broker`, and an audited
//! consumer (the library's `AuditedBaseConsumer`) as tier `consumer/app` that skips one message
//! (a seek past it, as a buggy commit would). `kaudit lost` names exactly that message, with its
//! partition and offset, and the `kcat` command it prints fetches that very message.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{kaudit, mock_cluster, wait_ok};
use kaudit_agent::kafka::AuditedBaseConsumer;
use kaudit_agent::{AgentConfig, Auditor, SystemClock, TopicRuleConfig, fingerprint};
use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{FlushBatch, SqliteStore, Store};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const W: i64 = 60_000;
const MESSAGES: usize = 90;
const PARTITIONS: i32 = 3;

fn payload(i: usize) -> String {
    format!("{{\"order\":{i}}}")
}

fn key(i: usize) -> String {
    format!("order-{i}")
}

/// The consumer app's auditor: the same extraction rule as the tap's.
fn auditor() -> Auditor {
    let config = AgentConfig {
        name: "app".into(),
        topics: vec![TopicRuleConfig {
            pattern: "*".into(),
            business_id: "key".parse().unwrap(),
            event_time: "header:event-time".parse().unwrap(),
        }],
        ..AgentConfig::default()
    };
    assert!(config.validate("agent").is_empty());
    config.auditor(Arc::new(SystemClock))
}

async fn broker_count(store: &SqliteStore, bucket: i64) -> u64 {
    let rows = store.read_range("orders", bucket, bucket + 1).await.unwrap();
    rows.iter().filter(|r| r.key.tier == "broker").map(|r| r.tally.count).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_consumer_skipped_is_named_with_a_fetch_command_that_returns_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, _stdin, bootstrap) = mock_cluster(&format!("orders:{PARTITIONS}"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let bucket = now / W * W - W;
    let db = dir.path().join("audit.db");
    let port = common::free_port();
    let config = dir.path().join("kaudit.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"sqlite://{db}\"\ndata_dir = \"{data}\"\nagent_listen = \"127.0.0.1:{port}\"\n\
             [agent]\nname = \"tap-broker\"\nflush_interval_ms = 100\n\
             [[agent.topics]]\npattern = \"*\"\nevent_time = \"header:event-time\"\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             [kafka.options]\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n\
             [tap]\ntier = \"broker\"\ntopics = [\"orders\"]\n\
             [[verifier.pipelines]]\ntopics = [\"orders\"]\ntiers = [\"broker\"]\nconsumers = [\"consumer/app\"]\n",
            db = db.display(),
            data = dir.path().display()
        ),
    )
    .unwrap();
    let _tap = kaudit("agent", &config, None);
    wait_ok(port, "/readyz", "tap", Duration::from_secs(60));

    // kcat produces every message into one bucket (by its event-time header).
    let mut kcat = Command::new("kcat")
        .args(["-P", "-b", &bootstrap, "-t", "orders", "-K", ":", "-H", &format!("event-time={}", bucket + 1_000)])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat must be installed (Debian package kcat; scripts/test.sh installs it)");
    let input: String = (0..MESSAGES).map(|i| format!("{}:{}\n", key(i), payload(i))).collect();
    kcat.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    assert!(kcat.wait().unwrap().success(), "kcat failed");

    // The audited consumer reads every partition from the start, but past offset 1 of partition 1
    // it seeks to 3: offset 2 is never consumed, so never counted.
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &bootstrap).set("group.id", "app").set("enable.auto.commit", "false");
    let app = auditor();
    let consumer = AuditedBaseConsumer::new(c.create::<BaseConsumer>().unwrap(), app.clone(), "consumer/app");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("orders", p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let (mut seen, mut skipped, started) = (0usize, false, Instant::now());
    while seen < MESSAGES - 1 {
        assert!(started.elapsed() < Duration::from_secs(60), "consumed only {seen} messages");
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
        let msg = msg.unwrap();
        seen += 1;
        if (msg.partition(), msg.offset()) == (1, 1) && !skipped {
            skipped = true;
            consumer.seek("orders", 1, Offset::Offset(3), Duration::from_secs(5)).unwrap();
        }
    }
    assert!(skipped, "partition 1 got at least three messages");
    let rows = app.snapshot().rows;
    assert!(rows.iter().all(|r| r.tally.sketch.is_some()), "the consumer's rows carry sketches");
    let store = SqliteStore::open(&db, &SqliteOptions::default()).unwrap();
    store.write(&FlushBatch { rows, ..FlushBatch::default() }).await.unwrap();

    let started = Instant::now();
    while broker_count(&store, bucket).await < MESSAGES as u64 {
        assert!(started.elapsed() < Duration::from_secs(60), "the tap stored {}", broker_count(&store, bucket).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let out = Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(["lost", "--config", config.to_str().unwrap(), "--topic", "orders", "--tier", "consumer/app"])
        .args(["--bucket", &(bucket + 30_000).to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("upstream {MESSAGES}, downstream {}", MESSAGES - 1)), "{text}");
    assert!(text.contains("lost 1, extra 0, altered 0 (every difference named)"), "{text}");
    let line = text.lines().find(|l| l.starts_with("lost ") && l.contains("kcat")).unwrap_or_else(|| panic!("{text}"));
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&columns[2..5], ["1", "1", "2"], "copies, partition and offset: {line}");
    let fetch = line.split_once("kcat ").map(|(_, rest)| rest).unwrap_or_else(|| panic!("{line}"));
    assert!(fetch.contains(&format!("-b {bootstrap} -t orders -p 1 -o 2 -c 1")), "{fetch}");

    // The printed command fetches the message, and it is the one named.
    let fetched = Command::new("kcat").args(fetch.split_whitespace()).output().unwrap();
    assert!(fetched.status.success(), "{}", String::from_utf8_lossy(&fetched.stderr));
    let body = String::from_utf8(fetched.stdout).unwrap();
    let by_payload: BTreeMap<String, usize> = (0..MESSAGES).map(|i| (payload(i), i)).collect();
    let i = by_payload[body.trim_end()];
    assert_eq!(columns[1], format!("{:016x}", fingerprint(key(i).as_bytes(), payload(i).as_bytes())), "{line}");
}
