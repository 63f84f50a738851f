//! Audited rdkafka clients.
//!
//! * Producers tally a message when librdkafka's delivery report says the broker acknowledged it;
//!   failed deliveries are counted apart ([`Auditor::record_failure`]) and never as sent.
//!   [`AuditedThreadedProducer`] (around a `ThreadedProducer` with an [`AuditingProducerContext`])
//!   and [`AuditedFutureProducer`] (async code) also count each hand-off, so their progress is
//!   exact: the start of the oldest bucket with a message still in flight, caught up when none is.
//!   A bare [`AuditingProducerContext`] (with a `BaseProducer`, or a `ThreadedProducer` sent to
//!   directly) tallies just the same but cannot know what is in flight: it reports itself caught
//!   up at every flush, and only the verifier's time grace guards its buckets.
//! * Consumers tally on receive: [`AuditedStreamConsumer`] and [`AuditedBaseConsumer`] wrap the
//!   rdkafka consumers and deref to them for subscribe, commit and the rest. They report progress
//!   per assigned partition: the largest event time read there, caught up once the position has
//!   reached the high watermark librdkafka last saw (asked at each flush, never over the network).
//!   A revoked partition is no longer reported; its last report stands until its next owner's.
//!   To count what the app *processed* instead, receive with
//!   [`AuditedStreamConsumer::recv_untallied`] and tally each message once processed
//!   ([`AuditedStreamConsumer::tally`]): a message dropped in between is a loss on the edge.
//!
//! Callbacks: delivery reports run on whichever thread polls the producer (librdkafka's
//! background poll thread for a `ThreadedProducer`); consumer probes run on the flusher's task.

mod consumer;
mod producer;

use rdkafka::message::{Headers, Message};

use crate::extract::AuditMessage;

#[cfg(doc)]
use crate::auditor::Auditor;
pub(crate) use consumer::cached_watermarks;
pub use consumer::{AuditedBaseConsumer, AuditedStreamConsumer};
pub use producer::{AuditedFutureProducer, AuditedThreadedProducer, AuditingProducerContext, SendResult};

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
