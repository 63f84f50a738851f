//! An audited producer and consumer with a flushing agent, as the README shows.
//!
//! Runs against librdkafka's mock cluster so it needs no broker:
//! `cargo run -p kaudit-agent --example audited_producer`

use std::sync::Arc;
use std::time::Duration;

use kaudit_agent::kafka::{AuditedStreamConsumer, AuditedThreadedProducer, AuditingProducerContext};
use kaudit_agent::{AgentConfig, AgentHandle, AgentMetrics, Spool, SystemClock};
use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{SqliteStore, Store};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, Producer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir()?;
    let cluster = MockCluster::new(1)?;
    cluster.create_topic("orders", 2, 1)?;
    let bootstrap = cluster.bootstrap_servers();

    // One agent per process: configuration, store, spool and metrics.
    let config = AgentConfig {
        name: "checkout".into(),
        topics: vec![kaudit_agent::TopicRuleConfig {
            pattern: "*".into(),
            business_id: "key".parse()?,
            event_time: "header:event-time".parse()?,
        }],
        ..AgentConfig::default()
    };
    let auditor = config.auditor(Arc::new(SystemClock));
    let store = Arc::new(SqliteStore::open(&data_dir.path().join("audit.db"), &SqliteOptions::default())?);
    let spool = Spool::open(&config.spool_dir(data_dir.path()), config.spool_max_bytes)?;
    let metrics = AgentMetrics::register(&prometheus::Registry::new())?;
    let agent = AgentHandle::start(auditor.clone(), store.clone(), Some(spool), config.flusher_options(), metrics);

    // Tallied when the broker acknowledges; failed deliveries are counted apart. Each send is in
    // flight until its delivery report: the producer's progress in the store.
    let mut producer_config = ClientConfig::new();
    producer_config.set("bootstrap.servers", &bootstrap);
    let producer =
        AuditedThreadedProducer::create(&producer_config, AuditingProducerContext::new(auditor.clone(), "producer"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis().to_string();
    for i in 0..100 {
        let headers = OwnedHeaders::new().insert(Header { key: "event-time", value: Some(now.as_bytes()) });
        let key = format!("order-{i}");
        let record = BaseRecord::to("orders").key(&key).payload("{}").headers(headers);
        producer.send(record).map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(10))?;

    // Tallied on receive.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "billing")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&["orders"])?;
    let consumer = AuditedStreamConsumer::new(consumer, auditor, "consumer/billing");
    for _ in 0..100 {
        consumer.recv().await?;
    }

    agent.shutdown().await; // the last flush, marking the agent stopped
    for row in store.read_range("orders", i64::MIN, i64::MAX).await? {
        println!(
            "{} bucket {} tier {}: {} messages",
            row.key.topic, row.key.bucket_start_ms, row.key.tier, row.tally.count
        );
    }
    for p in store.read_progress("orders").await? {
        println!("{} {} {}: at {} ms, caught up {}", p.topic, p.tier, p.stream, p.watermark_ms, p.caught_up);
    }
    Ok(())
}
