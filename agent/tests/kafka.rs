//! The audited rdkafka clients against librdkafka's mock cluster (the real Kafka protocol on
//! loopback ports): every tier's tallies must equal the ground truth of what was produced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaudit_agent::kafka::{
    AuditedBaseConsumer, AuditedFutureProducer, AuditedStreamConsumer, AuditedThreadedProducer, AuditingProducerContext,
};
use kaudit_agent::{AgentConfig, Auditor, SystemClock, TopicRuleConfig, fingerprint};
use kaudit_schema::Tally;
use kaudit_schema::progress::{ProgressRow, StreamId};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, FutureProducer, Producer, ThreadedProducer};

const W: i64 = 60_000;
const BASE_MS: i64 = 1_700_000_000_000;

/// Agents that read event time from the `event-time` header (the mock cluster's delivery reports
/// carry a fake LogAppendTime, so the Kafka timestamp is not usable on the producer side there).
fn auditor(name: &str) -> Auditor {
    let config = AgentConfig {
        name: name.into(),
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

/// Summed (count, xor, sum) per bucket of one tier.
fn by_bucket(auditor: &Auditor, tier: &str) -> BTreeMap<i64, (u64, u64, u64)> {
    let mut out = BTreeMap::new();
    for row in auditor.snapshot().rows.into_iter().filter(|r| r.key.tier == tier) {
        let e: &mut (u64, u64, u64) = out.entry(row.key.bucket_start_ms).or_default();
        e.0 += row.tally.count;
        e.1 ^= row.tally.fp_xor;
        e.2 = e.2.wrapping_add(row.tally.fp_sum);
    }
    out
}

struct Msg {
    key: String,
    payload: Vec<u8>,
    event_ms: i64,
}

fn messages(n: usize) -> Vec<Msg> {
    (0..n)
        .map(|i| Msg {
            key: format!("order-{i}"),
            payload: format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 50)).into_bytes(),
            event_ms: BASE_MS + (i as i64 * 97) % (3 * W),
        })
        .collect()
}

fn truth(msgs: &[Msg]) -> BTreeMap<i64, (u64, u64, u64)> {
    let mut t: BTreeMap<i64, Tally> = BTreeMap::new();
    for m in msgs {
        t.entry(m.event_ms.div_euclid(W) * W).or_default().add(fingerprint(m.key.as_bytes(), &m.payload), 0);
    }
    t.into_iter().map(|(b, t)| (b, (t.count, t.fp_xor, t.fp_sum))).collect()
}

fn headers(m: &Msg) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header { key: "event-time", value: Some(m.event_ms.to_string().as_bytes()) })
}

fn consumer_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("group.id", group).set("auto.offset.reset", "earliest");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_both_consumers_tally_exactly_what_was_sent() {
    let cluster = MockCluster::new(3).unwrap();
    let topic = "audited-roundtrip";
    cluster.create_topic(topic, 4, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let msgs = messages(3000);

    let producer_audit = auditor("producer");
    let producer: ThreadedProducer<AuditingProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "2")
        .create_with_context(AuditingProducerContext::new(producer_audit.clone(), "producer"))
        .unwrap();
    for m in &msgs {
        producer.send(BaseRecord::to(topic).key(&m.key).payload(&m.payload).headers(headers(m))).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let stream_audit = auditor("billing");
    let stream: StreamConsumer = consumer_config(&bootstrap, "billing").create().unwrap();
    stream.subscribe(&[topic]).unwrap();
    let stream = AuditedStreamConsumer::new(stream, stream_audit.clone(), "consumer/billing");
    let mut got = 0;
    while got < msgs.len() {
        tokio::time::timeout(Duration::from_secs(30), stream.recv()).await.expect("message in time").unwrap();
        got += 1;
    }

    let base_audit = auditor("fraud");
    let base: BaseConsumer = consumer_config(&bootstrap, "fraud").create().unwrap();
    base.subscribe(&[topic]).unwrap();
    let base = AuditedBaseConsumer::new(base, base_audit.clone(), "consumer/fraud");
    let (mut got, started) = (0, Instant::now());
    while got < msgs.len() && started.elapsed() < Duration::from_secs(30) {
        if let Some(r) = base.poll(Duration::from_millis(100)) {
            r.unwrap();
            got += 1;
        }
    }

    let expected = truth(&msgs);
    assert_eq!(expected.len(), 4, "messages span several buckets");
    assert_eq!(by_bucket(&producer_audit, "producer"), expected);
    assert_eq!(by_bucket(&stream_audit, "consumer/billing"), expected);
    assert_eq!(by_bucket(&base_audit, "consumer/fraud"), expected);
    let (_, failures) = producer_audit.take_counters();
    assert!(failures.is_empty(), "{failures:?}");
}

#[tokio::test]
async fn failed_deliveries_are_counted_apart_never_as_sent() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = "audited-failures";
    cluster.create_topic(topic, 1, 1).unwrap();
    let audit = auditor("producer");
    let producer: ThreadedProducer<AuditingProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("message.timeout.ms", "300")
        .create_with_context(AuditingProducerContext::new(audit.clone(), "producer"))
        .unwrap();
    cluster.broker_down(1).unwrap();
    let msgs = messages(20);
    for m in &msgs {
        producer.send(BaseRecord::to(topic).key(&m.key).payload(&m.payload).headers(headers(m))).unwrap();
    }
    let _ = producer.flush(Duration::from_secs(5));
    assert!(audit.snapshot().rows.is_empty(), "nothing was acknowledged");
    let (_, failures) = audit.take_counters();
    assert_eq!(failures, vec![(topic.to_string(), "producer".to_string(), 20)]);
}

#[tokio::test]
async fn future_producer_tallies_on_delivery() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = "audited-future";
    cluster.create_topic(topic, 2, 1).unwrap();
    let audit = auditor("producer");
    let inner: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", cluster.bootstrap_servers()).create().unwrap();
    let producer = AuditedFutureProducer::new(inner, audit.clone(), "producer");
    let msgs = messages(50);
    for m in &msgs {
        let record = rdkafka::producer::FutureRecord::to(topic).key(&m.key).payload(&m.payload).headers(headers(m));
        producer.send(record, Duration::from_secs(5)).await.map_err(|(e, _)| e).unwrap();
    }
    assert_eq!(by_bucket(&audit, "producer"), truth(&msgs));
}

/// The progress rows of one tier in a fresh snapshot.
fn progress(auditor: &Auditor, tier: &str) -> Vec<ProgressRow> {
    auditor.snapshot().progress.into_iter().filter(|p| p.tier == tier).collect()
}

#[tokio::test]
async fn a_consumer_reports_each_partition_until_it_has_read_everything() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = "audited-consumer-progress";
    cluster.create_topic(topic, 2, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let msgs = messages(200);
    let producer: ThreadedProducer<_> = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    let mut newest = [0i64; 2];
    for (i, m) in msgs.iter().enumerate() {
        let partition = (i % 2) as i32;
        newest[i % 2] = newest[i % 2].max(m.event_ms);
        let record = BaseRecord::to(topic).partition(partition).key(&m.key).payload(&m.payload).headers(headers(m));
        producer.send(record).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let audit = auditor("fraud");
    let base: BaseConsumer = consumer_config(&bootstrap, "progress").create().unwrap();
    base.subscribe(&[topic]).unwrap();
    let base = AuditedBaseConsumer::new(base, audit.clone(), "consumer/fraud");
    let poll_until = |n: usize| {
        let (mut got, started) = (0, Instant::now());
        while got < n && started.elapsed() < Duration::from_secs(30) {
            if let Some(r) = base.poll(Duration::from_millis(100)) {
                r.unwrap();
                got += 1;
            }
        }
        assert_eq!(got, n);
    };
    poll_until(50);
    let halfway = progress(&audit, "consumer/fraud");
    assert!(!halfway.is_empty(), "a partition read from is reported");
    assert!(halfway.iter().all(|p| !p.caught_up), "100 messages a partition, 50 read: {halfway:?}");

    poll_until(150);
    // The position is the consumer's own; the high watermark is librdkafka's cached one.
    let started = Instant::now();
    let mut rows = progress(&audit, "consumer/fraud");
    while !(rows.len() == 2 && rows.iter().all(|p| p.caught_up)) && started.elapsed() < Duration::from_secs(10) {
        base.poll(Duration::from_millis(100)).map(|r| r.unwrap_err());
        rows = progress(&audit, "consumer/fraud");
    }
    rows.sort_by(|a, b| a.stream.cmp(&b.stream));
    let got: Vec<_> = rows.iter().map(|p| (p.stream.clone(), p.watermark_ms, p.caught_up)).collect();
    assert_eq!(got, vec![(StreamId::Partition(0), newest[0], true), (StreamId::Partition(1), newest[1], true)]);
    assert!(rows.iter().all(|p| p.agent_id == audit.agent_id() && p.topic == topic));
}

#[tokio::test]
async fn a_threaded_producer_holds_its_progress_at_the_oldest_bucket_in_flight() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = "audited-threaded-progress";
    cluster.create_topic(topic, 2, 1).unwrap();
    let audit = auditor("producer");
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", cluster.bootstrap_servers()).set("linger.ms", "2");
    let producer =
        AuditedThreadedProducer::create(&config, AuditingProducerContext::new(audit.clone(), "producer")).unwrap();
    let msgs = messages(1000); // over two buckets
    producer.flush(Duration::from_secs(10)).unwrap(); // connected: metadata known
    cluster.broker_down(1).unwrap();
    for m in &msgs {
        producer.send(BaseRecord::to(topic).key(&m.key).payload(&m.payload).headers(headers(m))).unwrap();
    }
    let oldest = msgs.iter().map(|m| m.event_ms.div_euclid(W) * W).min().unwrap();
    assert!(truth(&msgs).len() > 1);
    let waiting = progress(&audit, "producer");
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].stream, StreamId::Agent(audit.agent_id().to_string()));
    assert_eq!((waiting[0].watermark_ms, waiting[0].caught_up), (oldest, false));
    assert_eq!(audit.in_flight(), msgs.len() as u64);

    cluster.broker_up(1).unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(audit.in_flight(), 0);
    assert_eq!(by_bucket(&audit, "producer"), truth(&msgs));
    let acknowledged = progress(&audit, "producer");
    assert!(acknowledged[0].caught_up, "{acknowledged:?}");
}

#[tokio::test]
async fn failed_sends_of_a_threaded_producer_are_no_longer_in_flight() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = "audited-threaded-failures";
    cluster.create_topic(topic, 1, 1).unwrap();
    let audit = auditor("producer");
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", cluster.bootstrap_servers()).set("message.timeout.ms", "300");
    let producer =
        AuditedThreadedProducer::create(&config, AuditingProducerContext::new(audit.clone(), "producer")).unwrap();
    cluster.broker_down(1).unwrap();
    for m in &messages(20) {
        producer.send(BaseRecord::to(topic).key(&m.key).payload(&m.payload).headers(headers(m))).unwrap();
    }
    let _ = producer.flush(Duration::from_secs(5));
    assert_eq!(audit.in_flight(), 0);
    assert!(progress(&audit, "producer")[0].caught_up);
    let (_, failures) = audit.take_counters();
    assert_eq!(failures, vec![(topic.to_string(), "producer".to_string(), 20)]);
}
