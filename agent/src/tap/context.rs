//! The consumer context: loads a partition's state on assignment, writes it on revocation.
//!
//! librdkafka calls [`TapContext::rebalance`] on the poll thread, inside `poll`, so no message of
//! a partition is handed out before its state is loaded, and none after it was released.

use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};

use super::config::StartFrom;
use super::state::TapShared;

/// The consumer context: loads state on assignment, writes it on revocation.
pub(super) struct TapContext(pub(super) Arc<TapShared>);

impl TapContext {
    /// Where a newly assigned partition starts: its stored next offset, else `start_from`.
    fn start_offset(&self, topic: &str, partition: i32) -> Offset {
        match self.0.load(topic, partition) {
            Some(next) => Offset::Offset(next),
            None if self.0.start_from == StartFrom::Latest => Offset::End,
            None => Offset::Beginning,
        }
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList, listed: &[(String, i32)]) {
        for (topic, partition) in listed {
            let offset = self.start_offset(topic, *partition);
            if let Err(error) = tpl.set_partition_offset(topic, *partition, offset) {
                tracing::error!(topic, partition, %error, "cannot set the start offset");
            }
        }
        if let Err(error) = consumer.assign(tpl) {
            tracing::error!(%error, "assign failed");
        }
    }
}

/// librdkafka's client-level errors, logged as the default context does, except partition EOF:
/// the tap asks for those (`enable.partition.eof`) as progress, and the poll loop handles them.
/// Runs on librdkafka's threads.
impl ClientContext for TapContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        tracing::error!(%error, reason, "librdkafka error");
    }
}

impl ConsumerContext for TapContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let listed: Vec<(String, i32)> =
            tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl, &listed),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.0.release(&listed);
                if let Err(error) = consumer.unassign() {
                    tracing::error!(%error, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error; releasing all partitions");
                self.0.release(&self.0.assigned());
                let _ = consumer.unassign();
            }
        }
    }
}
