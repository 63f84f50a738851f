//! Audited consumers: tally on receive, report per-partition progress through a probe.

use std::ffi::CString;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, Weak};

use rdkafka::Offset;
use rdkafka::bindings::{rd_kafka_get_watermark_offsets, rd_kafka_resp_err_t};
use rdkafka::client::{Client, ClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, DefaultConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::util::Timeout;

use super::KafkaMessage;
use crate::auditor::{Auditor, PartitionProbe};
use crate::table::PartitionPosition;

/// The (low, high) watermarks librdkafka last saw for a partition (fetch responses carry them),
/// without a network call; `None` while unknown.
pub(crate) fn cached_watermarks<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the handle is valid while `client` is borrowed; librdkafka reads its cached offsets
    // of the partition under its own lock and writes them to the two integers we own.
    let err =
        unsafe { rd_kafka_get_watermark_offsets(client.native_ptr(), topic.as_ptr(), partition, &mut low, &mut high) };
    (err == rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some((low, high))
}

/// Where a consumer stands, read from librdkafka's local state: its position per assigned
/// partition against the cached high watermark. Holds the consumer weakly: once the wrapper is
/// dropped the probe answers `None` and the auditor drops it.
struct ConsumerProbe<T, C>(Weak<T>, PhantomData<fn() -> C>);

impl<C: ConsumerContext + 'static, T: Consumer<C> + Send + Sync + 'static> PartitionProbe for ConsumerProbe<T, C> {
    fn positions(&self) -> Option<Vec<PartitionPosition>> {
        let consumer = self.0.upgrade()?;
        let Ok(assigned) = consumer.position() else {
            return Some(Vec::new());
        };
        let elements = assigned.elements();
        let positions = elements.iter().map(|e| {
            let watermarks = cached_watermarks(consumer.client(), e.topic(), e.partition());
            let caught_up = match (e.offset(), watermarks) {
                (Offset::Offset(position), Some((_, high))) => position >= high,
                // Nothing read yet: caught up only if there is nothing to read.
                (_, Some((low, high))) => low >= high,
                (_, None) => false,
            };
            PartitionPosition { topic: e.topic().to_string(), partition: e.partition(), caught_up }
        });
        Some(positions.collect())
    }
}

fn register<C: ConsumerContext + 'static, T: Consumer<C> + Send + Sync + 'static>(
    auditor: &Auditor,
    tier: &str,
    consumer: &Arc<T>,
) {
    auditor.add_probe(tier, Box::new(ConsumerProbe::<T, C>(Arc::downgrade(consumer), PhantomData)));
}

/// A `StreamConsumer` that tallies every message it hands out, as tier `tier`, and reports its
/// progress per assigned partition.
pub struct AuditedStreamConsumer<C: ConsumerContext + 'static = DefaultConsumerContext> {
    inner: Arc<StreamConsumer<C>>,
    auditor: Auditor,
    tier: Arc<str>,
}

impl<C: ConsumerContext + 'static> AuditedStreamConsumer<C> {
    pub fn new(inner: StreamConsumer<C>, auditor: Auditor, tier: &str) -> Self {
        let inner = Arc::new(inner);
        register::<C, _>(&auditor, tier, &inner);
        Self { inner, auditor, tier: tier.into() }
    }

    /// Receive the next message, tallied.
    pub async fn recv(&self) -> KafkaResult<BorrowedMessage<'_>> {
        let msg = self.inner.recv().await?;
        self.tally(&msg);
        Ok(msg)
    }

    /// Receive the next message without tallying it: the app calls [`Self::tally`] once it has
    /// processed it, so the tier counts what was processed, not what was received (a message the
    /// app drops after receiving it is then a loss on this tier's edge, named by its partition and
    /// offset).
    pub async fn recv_untallied(&self) -> KafkaResult<BorrowedMessage<'_>> {
        self.inner.recv().await
    }

    /// Tally `msg` (from [`Self::recv_untallied`]) as processed by this tier, with its partition
    /// and offset; a message processed twice is tallied twice.
    pub fn tally(&self, msg: &BorrowedMessage<'_>) {
        self.auditor.record_read_at(msg.topic(), &self.tier, msg.partition(), Some(msg.offset()), &KafkaMessage(msg));
    }
}

impl<C: ConsumerContext + 'static> Deref for AuditedStreamConsumer<C> {
    type Target = StreamConsumer<C>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

/// A `BaseConsumer` that tallies every message it hands out, as tier `tier`, and reports its
/// progress per assigned partition.
pub struct AuditedBaseConsumer<C: ConsumerContext + 'static = DefaultConsumerContext> {
    inner: Arc<BaseConsumer<C>>,
    auditor: Auditor,
    tier: Arc<str>,
}

impl<C: ConsumerContext + 'static> AuditedBaseConsumer<C> {
    pub fn new(inner: BaseConsumer<C>, auditor: Auditor, tier: &str) -> Self {
        let inner = Arc::new(inner);
        register::<C, _>(&auditor, tier, &inner);
        Self { inner, auditor, tier: tier.into() }
    }

    /// Poll for the next message, tallied when there is one.
    pub fn poll(&self, timeout: impl Into<Timeout>) -> Option<KafkaResult<BorrowedMessage<'_>>> {
        let result = self.inner.poll(timeout)?;
        if let Ok(msg) = &result {
            self.auditor.record_read_at(
                msg.topic(),
                &self.tier,
                msg.partition(),
                Some(msg.offset()),
                &KafkaMessage(msg),
            );
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
