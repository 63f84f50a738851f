//! librdkafka's mock cluster with consumer groups that form at once.
//!
//! The mock cluster waits `group.initial.rebalance.delay.ms` (3 s, as a real broker does) before
//! the first rebalance of a group. rdkafka's `MockCluster` does not expose the setting, so this
//! owns the cluster through a client handle (`test.mock.num.brokers`) and sets it to 0 through
//! librdkafka's mock API. The protocol spoken on the loopback ports is the same.

use rdkafka::ClientConfig;
use rdkafka::bindings::{rd_kafka_handle_mock_cluster, rd_kafka_mock_group_initial_rebalance_delay_ms};
use rdkafka::error::KafkaResult;
use rdkafka::producer::{BaseProducer, Producer};

/// A mock cluster whose consumer groups rebalance without the initial delay.
pub struct QuickMockCluster {
    owner: BaseProducer,
    bootstrap: String,
}

impl QuickMockCluster {
    pub fn new(brokers: i32) -> KafkaResult<Self> {
        let owner: BaseProducer = ClientConfig::new().set("test.mock.num.brokers", brokers.to_string()).create()?;
        let cluster = owner.client().mock_cluster().expect("a client with test.mock.num.brokers owns a mock cluster");
        let bootstrap = cluster.bootstrap_servers();
        drop(cluster);
        // SAFETY: the handle is valid while `owner` lives (it owns the mock cluster), and the
        // call only stores an integer in the cluster's defaults under the cluster's lock.
        unsafe {
            let mock = rd_kafka_handle_mock_cluster(owner.client().native_ptr());
            assert!(!mock.is_null());
            rd_kafka_mock_group_initial_rebalance_delay_ms(mock, 0);
        }
        Ok(Self { owner, bootstrap })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The client that owns the cluster (for librdkafka's mock API).
    pub(crate) fn owner(&self) -> &BaseProducer {
        &self.owner
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) -> KafkaResult<()> {
        self.owner.client().mock_cluster().expect("owned").create_topic(topic, partitions, 1)
    }
}
