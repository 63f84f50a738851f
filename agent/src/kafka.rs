//! Audited rdkafka clients.
//!
//! * Producers tally a message when librdkafka's delivery report says the broker acknowledged it;
//!   failed deliveries are counted apart ([`Auditor::record_failure`]) and never as sent. Use
//!   [`AuditingProducerContext`] with a `BaseProducer` or `ThreadedProducer`, or
//!   [`AuditedFutureProducer`] in async code.
//! * Consumers tally on receive: [`AuditedStreamConsumer`] and [`AuditedBaseConsumer`] wrap the
//!   rdkafka consumers and deref to them for subscribe, commit and the rest.

use std::ops::Deref;
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, DefaultConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers, Message, OwnedHeaders, ToBytes};
use rdkafka::producer::{DefaultProducerContext, DeliveryResult, FutureProducer, FutureRecord, ProducerContext};
use rdkafka::util::Timeout;

use crate::auditor::Auditor;
use crate::extract::{AuditMessage, EventTime, EventTimeSource, from_epoch_number};

/// Any rdkafka message seen as an [`AuditMessage`].
pub struct KafkaMessage<'a, M: Message>(pub &'a M);

impl<M: Message> AuditMessage for KafkaMessage<'_, M> {
    fn key(&self) -> Option<&[u8]> {
        self.0.key()
    }
    fn payload(&self) -> &[u8] {
        self.0.payload().unwrap_or_default()
    }
    fn timestamp_ms(&self) -> Option<i64> {
        self.0.timestamp().to_millis()
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(self.0.headers()?, name)
    }
}

fn find_header<'a, H: Headers>(headers: &'a H, name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|h| h.key == name).and_then(|h| h.value)
}

/// A producer context that tallies acknowledged deliveries as tier `tier`.
///
/// `delivery` runs on whichever thread polls the producer (librdkafka's background poll thread
/// for a `ThreadedProducer`), so it only takes the auditor's short lock.
pub struct AuditingProducerContext<C = DefaultProducerContext> {
    auditor: Auditor,
    tier: Arc<str>,
    inner: C,
}

impl AuditingProducerContext<DefaultProducerContext> {
    pub fn new(auditor: Auditor, tier: &str) -> Self {
        Self::wrap(auditor, tier, DefaultProducerContext)
    }
}

impl<C> AuditingProducerContext<C> {
    /// Audit around an existing context, which still receives every callback.
    pub fn wrap(auditor: Auditor, tier: &str, inner: C) -> Self {
        Self { auditor, tier: tier.into(), inner }
    }
}

impl<C: ClientContext> ClientContext for AuditingProducerContext<C> {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.inner.log(level, fac, log_message)
    }
    fn stats_raw(&self, statistics: &[u8]) {
        self.inner.stats_raw(statistics)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.inner.error(error, reason)
    }
}

impl<C: ProducerContext> ProducerContext for AuditingProducerContext<C> {
    type DeliveryOpaque = C::DeliveryOpaque;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        match result {
            Ok(msg) => self.auditor.record_message(msg.topic(), &self.tier, &KafkaMessage(msg)),
            Err((_, msg)) => self.auditor.record_failure(msg.topic(), &self.tier),
        }
        self.inner.delivery(result, opaque)
    }
}

/// A `FutureProducer` that tallies each message once its send resolves as delivered.
///
/// ```no_run
/// # async fn demo(config: rdkafka::ClientConfig) -> anyhow::Result<()> {
/// use kaudit_agent::{Auditor, AuditorOptions, kafka::AuditedFutureProducer};
/// use rdkafka::producer::FutureRecord;
///
/// let auditor = Auditor::new(AuditorOptions::named("checkout"));
/// let producer = AuditedFutureProducer::new(config.create()?, auditor, "producer");
/// producer
///     .send(FutureRecord::to("orders").key("order-42").payload("{}"), std::time::Duration::from_secs(5))
///     .await
///     .map_err(|(e, _)| e)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AuditedFutureProducer {
    inner: FutureProducer,
    auditor: Auditor,
    tier: Arc<str>,
}

struct RecordView<'a> {
    key: Option<&'a [u8]>,
    payload: &'a [u8],
    timestamp: Option<i64>,
    headers: Option<&'a OwnedHeaders>,
}

impl AuditMessage for RecordView<'_> {
    fn key(&self) -> Option<&[u8]> {
        self.key
    }
    fn payload(&self) -> &[u8] {
        self.payload
    }
    fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(self.headers?, name)
    }
}

impl AuditedFutureProducer {
    pub fn new(inner: FutureProducer, auditor: Auditor, tier: &str) -> Self {
        Self { inner, auditor, tier: tier.into() }
    }

    /// The wrapped producer (for flush, transactions and the rest).
    pub fn inner(&self) -> &FutureProducer {
        &self.inner
    }

    /// Send like [`FutureProducer::send`]; the message is tallied only if it was delivered.
    pub async fn send<K, P>(
        &self,
        record: FutureRecord<'_, K, P>,
        queue_timeout: impl Into<Timeout>,
    ) -> rdkafka::producer::future_producer::OwnedDeliveryResult
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let topic = record.topic;
        let view = RecordView {
            key: record.key.map(ToBytes::to_bytes),
            payload: record.payload.map(ToBytes::to_bytes).unwrap_or_default(),
            timestamp: record.timestamp,
            headers: record.headers.as_ref(),
        };
        let mut obs = self.auditor.observation(topic, &view);
        let stamped_by_broker =
            record.timestamp.is_none() && self.auditor.rule_for(topic).event_time == EventTimeSource::KafkaTimestamp;
        let result = self.inner.send(record, queue_timeout).await;
        match &result {
            Ok(delivery) => {
                if stamped_by_broker {
                    obs.event_time = delivery.timestamp.to_millis().map_or(EventTime::Missing, from_epoch_number);
                }
                self.auditor.observe(topic, &self.tier, obs);
            }
            Err(_) => self.auditor.record_failure(topic, &self.tier),
        }
        result
    }
}

/// A `StreamConsumer` that tallies every message it hands out, as tier `tier`.
pub struct AuditedStreamConsumer<C: ConsumerContext + 'static = DefaultConsumerContext> {
    inner: StreamConsumer<C>,
    auditor: Auditor,
    tier: Arc<str>,
}

impl<C: ConsumerContext + 'static> AuditedStreamConsumer<C> {
    pub fn new(inner: StreamConsumer<C>, auditor: Auditor, tier: &str) -> Self {
        Self { inner, auditor, tier: tier.into() }
    }

    /// Receive the next message, tallied.
    pub async fn recv(&self) -> KafkaResult<BorrowedMessage<'_>> {
        let msg = self.inner.recv().await?;
        self.auditor.record_message(msg.topic(), &self.tier, &KafkaMessage(&msg));
        Ok(msg)
    }
}

impl<C: ConsumerContext + 'static> Deref for AuditedStreamConsumer<C> {
    type Target = StreamConsumer<C>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

/// A `BaseConsumer` that tallies every message it hands out, as tier `tier`.
pub struct AuditedBaseConsumer<C: ConsumerContext + 'static = DefaultConsumerContext> {
    inner: BaseConsumer<C>,
    auditor: Auditor,
    tier: Arc<str>,
}

impl<C: ConsumerContext + 'static> AuditedBaseConsumer<C> {
    pub fn new(inner: BaseConsumer<C>, auditor: Auditor, tier: &str) -> Self {
        Self { inner, auditor, tier: tier.into() }
    }

    /// Poll for the next message, tallied when there is one.
    pub fn poll(&self, timeout: impl Into<Timeout>) -> Option<KafkaResult<BorrowedMessage<'_>>> {
        let result = self.inner.poll(timeout)?;
        if let Ok(msg) = &result {
            self.auditor.record_message(msg.topic(), &self.tier, &KafkaMessage(msg));
        }
        Some(result)
    }
}

impl<C: ConsumerContext + 'static> Deref for AuditedBaseConsumer<C> {
    type Target = BaseConsumer<C>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}
