//! The poll thread: counts every message into the shared state until told to stop, then leaves the
//! group, which writes every partition's state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};

use super::config::TapConfig;
use super::context::TapContext;
use super::state::TapShared;
use crate::kafka::cached_watermarks;

/// A running tap: the poll thread. The flusher runs apart (see `TapSource`); a
/// [`super::TapHandle`] owns both and stops them in order.
pub(super) struct TapRunner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TapRunner {
    /// Subscribe and start polling on a new thread.
    pub(super) fn start(shared: Arc<TapShared>, config: &TapConfig, mut client: ClientConfig) -> KafkaResult<Self> {
        config.set_owned_options(&mut client);
        let consumer: BaseConsumer<TapContext> = client.create_with_context(TapContext(shared.clone()))?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kaudit-tap".into())
            .spawn(move || {
                poll_until(&consumer, &shared, &stopping);
                // Leaving the group revokes every partition, which writes their state.
                consumer.unsubscribe();
                let _ = consumer.poll(Duration::from_millis(100));
                shared.release(&shared.assigned());
            })
            .expect("spawn tap thread");
        Ok(Self { stop, thread: Some(thread) })
    }

    /// Stop polling, write every partition's state, leave the group. Blocks until done.
    pub(super) fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TapRunner {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Poll and count until `stop` is set; a partition EOF is progress (the partition is caught up),
/// other consumer errors are logged at most once per 10 s.
fn poll_until(consumer: &BaseConsumer<TapContext>, shared: &TapShared, stop: &AtomicBool) {
    let mut last_error: Option<Instant> = None;
    // The wall clock is read once per 32 messages (and after every idle poll): at these rates
    // that is well under a millisecond of error, and a clock read is ~40 ns.
    let (mut now, mut since_read) = (shared.clock.now_ms(), 0u32);
    while !stop.load(Ordering::Relaxed) {
        if since_read >= 32 {
            (now, since_read) = (shared.clock.now_ms(), 0);
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                since_read += 1;
                shared.record(&msg, now);
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                shared.partition_eof(partition, |topic| cached_watermarks(consumer.client(), topic, partition));
            }
            Some(Err(error)) if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) => {
                tracing::warn!(%error, "tap consumer error");
                last_error = Some(Instant::now());
            }
            Some(Err(_)) => {}
            None => since_read = u32::MAX,
        }
    }
}
