//! An experiment (issue 15, part 3): the audited producer's delivery callback hands the hashing
//! to another thread. The callback copies each delivered message's topic, key, payload, timestamp
//! and place into a slot taken from a pool (slots and their buffers are reused, so the steady path
//! allocates nothing) and passes it over a bounded single-producer ring; a hashing thread
//! fingerprints and counts it and returns the slot. When no slot is free the callback hashes the
//! message itself (bounded and loss-free). Headers are not copied: the bench's rules read none.
//!
//! Only the bench uses it: `producer_*/audited_hand_off` measures it beside `audited`, and the
//! agent ships it only if it lowers the overhead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use kaudit_agent::Auditor;
use kaudit_agent::extract::AuditMessage;
use kaudit_agent::kafka::KafkaMessage;
use kaudit_schema::difference::Locator;
use rdkafka::ClientContext;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use spin::mutex::SpinMutex;

/// Slots in the pool, and the ring's capacity: 2 ms of deliveries at 2 M msg/s.
const SLOTS: usize = 4096;

/// One delivered message, copied out of librdkafka's buffers.
#[derive(Default)]
struct Delivered {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    timestamp_ms: Option<i64>,
    partition: i32,
    offset: i64,
}

impl AuditMessage for Delivered {
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }
    fn header(&self, _: &str) -> Option<&[u8]> {
        None
    }
}

/// A producer context that hands each delivered message to a hashing thread.
pub struct HandOffContext {
    auditor: Auditor,
    tier: String,
    /// Free slots (filled by the hashing thread) and full ones (filled here): one producer each.
    free: SpinMutex<rtrb::Consumer<Box<Delivered>>>,
    full: SpinMutex<rtrb::Producer<Box<Delivered>>>,
    /// Messages hashed here because no slot was free.
    pub hashed_inline: AtomicU64,
    /// Messages the hashing thread has counted.
    pub handed_off: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl HandOffContext {
    pub fn new(auditor: Auditor, tier: &str) -> Self {
        let (mut free_tx, free_rx) = rtrb::RingBuffer::new(SLOTS);
        let (full_tx, mut full_rx) = rtrb::RingBuffer::<Box<Delivered>>::new(SLOTS);
        for _ in 0..SLOTS {
            free_tx.push(Box::default()).expect("room for every slot");
        }
        let (stop, handed_off) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let worker = {
            let (auditor, tier, stop, handed_off) =
                (auditor.clone(), tier.to_string(), stop.clone(), handed_off.clone());
            std::thread::Builder::new()
                .name("kaudit-hash".into())
                .spawn(move || {
                    // Idle: short naps at first (a batch's next deliveries), then 1 ms ones, so an
                    // idle hashing thread does not take the core the other producers measure on.
                    let mut idle = 0u32;
                    loop {
                        match full_rx.pop() {
                            Ok(d) => {
                                idle = 0;
                                let mut obs = auditor.observation(&d.topic, &*d);
                                obs.locator =
                                    (d.offset >= 0).then_some(Locator { partition: d.partition, offset: d.offset });
                                auditor.observe_delivered(&d.topic, &tier, obs, None);
                                handed_off.fetch_add(1, Ordering::Relaxed);
                                free_tx.push(d).expect("the pool holds every slot");
                            }
                            Err(_) if stop.load(Ordering::Relaxed) => return,
                            Err(_) => {
                                idle = idle.saturating_add(1);
                                let nap = if idle < 50 { Duration::from_micros(20) } else { Duration::from_millis(1) };
                                std::thread::sleep(nap);
                            }
                        }
                    }
                })
                .expect("spawn the hashing thread")
        };
        Self {
            auditor,
            tier: tier.to_string(),
            free: SpinMutex::new(free_rx),
            full: SpinMutex::new(full_tx),
            hashed_inline: AtomicU64::new(0),
            handed_off,
            stop,
            worker: Some(worker),
        }
    }
}

impl Drop for HandOffContext {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl ClientContext for HandOffContext {}

impl ProducerContext for HandOffContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let Ok(msg) = result else { panic!("the bench's deliveries succeed") };
        let slot = self.free.try_lock().and_then(|mut free| free.pop().ok());
        match slot {
            Some(mut d) => {
                d.topic.clear();
                d.topic.push_str(msg.topic());
                match (msg.key(), &mut d.key) {
                    (Some(k), Some(buf)) => {
                        buf.clear();
                        buf.extend_from_slice(k);
                    }
                    (Some(k), none) => *none = Some(k.to_vec()),
                    (None, key) => *key = None,
                }
                d.payload.clear();
                d.payload.extend_from_slice(msg.payload().unwrap_or_default());
                d.timestamp_ms = msg.timestamp().to_millis();
                (d.partition, d.offset) = (msg.partition(), msg.offset());
                // One delivery-callback thread per producer: the lock is never contended.
                self.full.lock().push(d).map_err(|_| ()).expect("a ring slot for every pool slot");
            }
            None => {
                self.hashed_inline.fetch_add(1, Ordering::Relaxed);
                let mut obs = self.auditor.observation(msg.topic(), &KafkaMessage(msg));
                obs.locator = Some(Locator { partition: msg.partition(), offset: msg.offset() });
                self.auditor.observe_delivered(msg.topic(), &self.tier, obs, None);
            }
        }
    }
}
