//! Audited producers: the delivery-report context, and wrappers that also count hand-offs.

use kaudit_schema::difference::Locator;
use std::ops::Deref;
use std::sync::Arc;

use kaudit_schema::EpochMillis;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Message, OwnedHeaders, ToBytes};
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, DeliveryResult, FutureProducer, FutureRecord, Producer, ProducerContext,
    ThreadedProducer,
};
use rdkafka::util::Timeout;

use super::{KafkaMessage, find_header};
use crate::auditor::Auditor;
use crate::extract::{AuditMessage, EventTime, EventTimeSource, from_epoch_number};

/// A producer context that tallies acknowledged deliveries as tier `tier`, and settles the
/// hand-off an [`AuditedThreadedProducer`] counted for each report, delivered or failed.
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

    /// The auditor deliveries are counted through.
    pub fn auditor(&self) -> &Auditor {
        &self.auditor
    }

    /// The tier deliveries are counted as.
    pub fn tier(&self) -> &str {
        &self.tier
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
            Ok(msg) => {
                let mut obs = self.auditor.observation(msg.topic(), &KafkaMessage(msg));
                // Where the broker acknowledged it: a loss downstream is named with it.
                obs.locator = located(msg.partition(), msg.offset());
                self.auditor.observe_delivered(msg.topic(), &self.tier, obs, None);
            }
            Err((_, msg)) => {
                self.auditor.record_failure(msg.topic(), &self.tier);
                let sent = self.auditor.bucket_time(msg.topic(), &KafkaMessage(msg));
                self.auditor.settle(msg.topic(), &self.tier, sent);
            }
        }
        self.inner.delivery(result, opaque)
    }
}

/// A record about to be sent, seen as an [`AuditMessage`].
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

/// What [`AuditedThreadedProducer::send`] returns: the refused record back with the error, as
/// `ThreadedProducer::send` does.
pub type SendResult<'a, K, P, C> =
    Result<(), (KafkaError, BaseRecord<'a, K, P, <C as ProducerContext>::DeliveryOpaque>)>;

/// A `ThreadedProducer` whose sends are counted in flight until their delivery report, so its
/// progress is exact (see [`super`]); it derefs to the producer for flush, transactions and the
/// rest. Send through [`AuditedThreadedProducer::send`]: a message sent on the inner producer
/// directly is still tallied on delivery, but was never in flight.
///
/// A delivery report settles the hand-off counted in the bucket of the delivered message; when
/// that bucket has none (the report carries another time than the record did, e.g. a
/// broker-stamped LogAppendTime), it settles the oldest bucket in flight instead.
///
/// ```no_run
/// # fn demo(config: rdkafka::ClientConfig) -> anyhow::Result<()> {
/// use kaudit_agent::kafka::{AuditedThreadedProducer, AuditingProducerContext};
/// use kaudit_agent::{Auditor, AuditorOptions};
/// use rdkafka::producer::{BaseRecord, Producer};
///
/// let auditor = Auditor::new(AuditorOptions::named("checkout"));
/// let producer = AuditedThreadedProducer::create(&config, AuditingProducerContext::new(auditor, "producer"))?;
/// producer.send(BaseRecord::to("orders").key("order-42").payload("{}")).map_err(|(e, _)| e)?;
/// producer.flush(std::time::Duration::from_secs(5))?;
/// # Ok(()) }
/// ```
pub struct AuditedThreadedProducer<C: ProducerContext + 'static = DefaultProducerContext> {
    inner: ThreadedProducer<AuditingProducerContext<C>>,
}

impl<C: ProducerContext + 'static> AuditedThreadedProducer<C> {
    /// Wrap a producer created with an auditing context.
    pub fn new(inner: ThreadedProducer<AuditingProducerContext<C>>) -> Self {
        Self { inner }
    }

    /// Create the producer from `config` with `context`.
    pub fn create(config: &ClientConfig, context: AuditingProducerContext<C>) -> KafkaResult<Self> {
        config.create_with_context(context).map(Self::new)
    }

    /// Send like [`ThreadedProducer::send`], counting the message in flight (by its bucket) until
    /// its delivery report; a record the producer refuses is not in flight.
    #[allow(clippy::result_large_err)] // the signature of `ThreadedProducer::send`
    pub fn send<'a, K, P>(&self, record: BaseRecord<'a, K, P, C::DeliveryOpaque>) -> SendResult<'a, K, P, C>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let context = self.inner.context();
        let (auditor, tier, topic) = (&context.auditor, &*context.tier, record.topic);
        let view = RecordView {
            key: record.key.map(ToBytes::to_bytes),
            payload: record.payload.map(ToBytes::to_bytes).unwrap_or_default(),
            timestamp: record.timestamp,
            headers: record.headers.as_ref(),
        };
        let bucket_time = auditor.bucket_time(topic, &view);
        // Counted before the send: the report may arrive before `send` returns.
        auditor.hand_off(topic, tier, bucket_time);
        self.inner.send(record).inspect_err(|_| auditor.settle(topic, tier, bucket_time))
    }
}

impl<C: ProducerContext + 'static> Deref for AuditedThreadedProducer<C> {
    type Target = ThreadedProducer<AuditingProducerContext<C>>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

/// A `FutureProducer` that tallies each message once its send resolves as delivered, and counts
/// it in flight until then.
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

/// A hand-off not settled yet; settles on drop (a send future dropped before it resolved: its
/// message's fate is unknown here, and it is not tallied).
struct InFlight<'a> {
    auditor: &'a Auditor,
    topic: &'a str,
    tier: &'a str,
    bucket_time: EpochMillis,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.auditor.settle(self.topic, self.tier, self.bucket_time);
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
        let bucket_time = self.auditor.bucket_time_of(obs.event_time);
        self.auditor.hand_off(topic, &self.tier, bucket_time);
        let in_flight = InFlight { auditor: &self.auditor, topic, tier: &self.tier, bucket_time };
        let result = self.inner.send(record, queue_timeout).await;
        std::mem::forget(in_flight); // settled below, with the tally
        match &result {
            Ok(delivery) => {
                if stamped_by_broker {
                    obs.event_time = delivery.timestamp.to_millis().map_or(EventTime::Missing, from_epoch_number);
                }
                obs.locator = located(delivery.partition, delivery.offset);
                self.auditor.observe_delivered(topic, &self.tier, obs, Some(bucket_time));
            }
            Err(_) => {
                self.auditor.record_failure(topic, &self.tier);
                self.auditor.settle(topic, &self.tier, bucket_time);
            }
        }
        result
    }
}

/// Where the broker acknowledged a message; `None` when librdkafka does not know the offset
/// (`RD_KAFKA_OFFSET_INVALID`, -1001) or the partition: a loss is then named without a locator,
/// never at a made-up one.
fn located(partition: i32, offset: i64) -> Option<Locator> {
    (partition >= 0 && offset >= 0).then_some(Locator { partition, offset })
}

#[cfg(test)]
mod locator_tests {
    use super::*;

    #[test]
    fn an_unknown_offset_is_no_locator() {
        assert_eq!(located(2, 41), Some(Locator { partition: 2, offset: 41 }));
        assert_eq!(located(2, -1001), None);
        assert_eq!(located(-1, 5), None);
    }
}
