//! The demo's applications: an audited producer that loses some messages before the broker, a
//! billing consumer that drops some messages and processes others twice, and an analytics
//! consumer that lags. Each records what it did to the [`Ledger`], the ground truth the
//! verifier's verdicts are checked against.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use kaudit_agent::kafka::{AuditedStreamConsumer, AuditedThreadedProducer, AuditingProducerContext, KafkaMessage};
use kaudit_agent::table::Observation;
use kaudit_agent::tap::TapShared;
use kaudit_agent::{Auditor, Clock, EventTime, OwnedMessage, SystemClock};
use kaudit_schema::{BucketWidth, EpochMillis};
use kaudit_schema::{Shutdown, ShutdownSignal};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, Producer};
use tokio::task::JoinHandle;

use super::faults::{ANALYTICS, BILLING, FaultPlan, Injected, Ledger, PRODUCER, TOPIC};

/// Running counts for the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    pub produced: AtomicU64,
    pub lost: AtomicU64,
    pub billing: AtomicU64,
    pub billing_lost: AtomicU64,
    pub duplicated: AtomicU64,
    pub analytics: AtomicU64,
    pub delayed: AtomicU64,
}

impl Counters {
    /// Messages that reached the broker.
    pub fn sent(&self) -> u64 {
        self.produced.load(Relaxed) - self.lost.load(Relaxed)
    }
}

/// What the applications share.
pub struct Shared {
    /// Fixed once every consumer has joined, before the first message is produced.
    plan: std::sync::OnceLock<FaultPlan>,
    pub width: BucketWidth,
    /// The verifier's p99 delay threshold, ms: billing's latency is counted against it.
    pub delay_threshold_ms: u64,
    pub counters: Counters,
    pub ledger: Mutex<Ledger>,
    /// Set to stop producing early (Ctrl-C).
    pub stop_producing: AtomicBool,
}

impl Shared {
    pub fn new(width: BucketWidth, delay_threshold_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            plan: std::sync::OnceLock::new(),
            width,
            delay_threshold_ms,
            counters: Counters::default(),
            ledger: Mutex::default(),
            stop_producing: AtomicBool::new(false),
        })
    }

    pub fn set_plan(&self, plan: FaultPlan) {
        self.plan.set(plan).expect("the plan is set once");
    }

    /// The fault plan; set before anything is produced.
    pub fn plan(&self) -> FaultPlan {
        *self.plan.get().expect("the plan is set before producing")
    }

    /// The fault plan, once it is set (consumers run before it is).
    pub fn plan_if_set(&self) -> Option<FaultPlan> {
        self.plan.get().copied()
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().expect("ledger poisoned")
    }
}

fn event_ms(obs: &Observation) -> Option<EpochMillis> {
    match obs.event_time {
        EventTime::Valid(t) => Some(t),
        _ => None,
    }
}

/// The producer's agent crashing mid-run: the switch that kills the running instance's flusher
/// (no final flush) and the auditor of the instance that takes over.
pub struct ProducerCrash {
    pub switch: tokio::task::AbortHandle,
    pub successor: Auditor,
}

/// Produce `rate` orders per second for `duration` (blocking; run it on its own thread). A message
/// chosen for loss is counted by the producer's agent as delivered but never sent. With `crash`,
/// at the plan's crash time the producer flushes (everything it handed over is acknowledged and
/// counted), its agent dies without its last flush, and a new producer with the successor's
/// agent carries on.
pub fn produce(
    bootstrap: &str,
    auditor: Auditor,
    shared: &Shared,
    rate: u64,
    duration: Duration,
    seed: u64,
    mut crash: Option<ProducerCrash>,
) -> anyhow::Result<()> {
    let mut sender = Sender::new(bootstrap, auditor, seed)?;
    let plan = shared.plan();
    let started = Instant::now();
    let mut i: u64 = 0;
    while started.elapsed() < duration && !shared.stop_producing.load(Relaxed) {
        if plan.crash_at_ms.is_some_and(|t| SystemClock.now_ms() >= t)
            && let Some(ProducerCrash { switch, successor }) = crash.take()
        {
            sender.producer.flush(Duration::from_secs(30)).context("flushing the producer")?;
            switch.abort();
            sender = Sender::new(bootstrap, successor, seed ^ 0xc4a5)?;
        }
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while i < due {
            sender.send(i, shared, &plan)?;
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    sender.producer.flush(Duration::from_secs(30)).context("flushing the producer")?;
    Ok(())
}

/// An audited producer with the demo's loss fault.
struct Sender {
    producer: AuditedThreadedProducer,
    auditor: Auditor,
    rng: StdRng,
}

impl Sender {
    fn new(bootstrap: &str, auditor: Auditor, seed: u64) -> anyhow::Result<Self> {
        let config = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            // librdkafka's mock broker finds a fetch offset by walking its message sets one by
            // one; bigger batches keep that walk short at the demo's rates.
            .set("linger.ms", "50")
            .set("queue.buffering.max.messages", "500000")
            .clone();
        let producer =
            AuditedThreadedProducer::create(&config, AuditingProducerContext::new(auditor.clone(), PRODUCER))
                .context("creating the producer")?;
        Ok(Self { producer, auditor, rng: StdRng::seed_from_u64(seed) })
    }

    /// Order `i`: sent, or (when the loss fault picks it) counted as delivered and dropped.
    fn send(&mut self, i: u64, shared: &Shared, plan: &FaultPlan) -> anyhow::Result<()> {
        let key = format!("order-{i}");
        let created_at = SystemClock.now_ms();
        let payload = format!(r#"{{"order_id":"{key}","amount_cents":{},"created_at":{created_at}}}"#, 100 + i % 9_900);
        let bucket = shared.width.start_of(created_at);
        shared.ledger().produced(bucket);
        shared.counters.produced.fetch_add(1, Relaxed);
        if plan.applies_to(created_at) && self.rng.random::<f64>() < plan.loss {
            let msg = OwnedMessage { key: Some(key.into_bytes()), payload: payload.into_bytes(), ..Default::default() };
            let obs = self.auditor.observation(TOPIC, &msg);
            shared.ledger().lost(bucket, obs.fingerprint);
            shared.counters.lost.fetch_add(1, Relaxed);
            self.auditor.observe(TOPIC, PRODUCER, obs);
            return Ok(());
        }
        let mut record = BaseRecord::to(TOPIC).key(&key).payload(&payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e).context("producing"),
            }
        }
    }
}

/// A consumer in group `group`, subscribed to the demo topic.
fn consumer(bootstrap: &str, group: &str) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        // The mock cluster holds a fetch until its wait runs out; keep it short so latency is
        // the pipeline's, not the fetch wait's.
        .set("fetch.wait.max.ms", "50")
        .create()
        .with_context(|| format!("creating consumer {group}"))?;
    consumer.subscribe(&[TOPIC]).context("subscribing")?;
    Ok(consumer)
}

/// Billing: tallied by its agent once processed (`recv_untallied`, then `tally`); some messages
/// are dropped after they were received (never processed, never counted), some processed (and so
/// counted) twice. With a pause in the plan it stops reading at the first faulty bucket for that
/// long (as a consumer does during a rebalance), then catches up, and its latency goes to the
/// ledger.
pub async fn billing(
    consumer: Arc<AuditedStreamConsumer>,
    auditor: Auditor,
    shared: Arc<Shared>,
    seed: u64,
    stopped: ShutdownSignal,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xb111_1d09);
    let mut paused = false;
    loop {
        let pause = shared.plan_if_set().filter(|p| p.pause_ms > 0 && SystemClock.now_ms() >= p.from_ms);
        if let Some(plan) = pause.filter(|_| !paused) {
            paused = true;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(plan.pause_ms)) => {}
                _ = stopped.stopped() => break,
            }
        }
        tokio::select! {
            biased;
            _ = stopped.stopped() => break,
            msg = consumer.recv_untallied() => match msg {
                Ok(msg) => process_billing(&consumer, &msg, &auditor, &shared, &shared.plan(), &mut rng),
                Err(error) => tracing::warn!(%error, "billing consumer error"),
            },
        }
    }
}

/// What billing does to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BillingFault {
    None,
    Drop,
    Twice,
}

/// One message at billing: dropped, processed twice or once (one draw decides, so a seed picks
/// the same messages whatever the rates), its latency counted while a pause is injected.
fn process_billing(
    consumer: &AuditedStreamConsumer,
    msg: &BorrowedMessage<'_>,
    auditor: &Auditor,
    shared: &Shared,
    plan: &FaultPlan,
    rng: &mut StdRng,
) {
    shared.counters.billing.fetch_add(1, Relaxed);
    let draw = if plan.consumer_loss + plan.duplicates > 0.0 { rng.random::<f64>() } else { 1.0 };
    let fault = if draw < plan.consumer_loss {
        BillingFault::Drop
    } else if draw < plan.consumer_loss + plan.duplicates {
        BillingFault::Twice
    } else {
        BillingFault::None
    };
    if plan.pause_ms == 0 && fault == BillingFault::None {
        consumer.tally(msg);
        return;
    }
    let obs = auditor.observation(TOPIC, &KafkaMessage(msg));
    let Some(t) = event_ms(&obs) else {
        consumer.tally(msg);
        return;
    };
    let bucket = shared.width.start_of(t);
    let fault = if plan.applies_to(t) { fault } else { BillingFault::None };
    let at = Injected { fingerprint: obs.fingerprint, partition: msg.partition(), offset: msg.offset() };
    let copies = match fault {
        BillingFault::Drop => {
            shared.ledger().billing_lost(bucket, at);
            shared.counters.billing_lost.fetch_add(1, Relaxed);
            0
        }
        BillingFault::Twice => {
            shared.ledger().duplicated(bucket, at);
            shared.counters.duplicated.fetch_add(1, Relaxed);
            2
        }
        BillingFault::None => 1,
    };
    for _ in 0..copies {
        consumer.tally(msg);
        if plan.pause_ms > 0 {
            shared.ledger().billing_latency(bucket, SystemClock.now_ms() - t, shared.delay_threshold_ms);
        }
    }
}

/// Analytics: processes (and counts) each message `delay_ms` after its creation once faults apply.
/// On stop it finishes the messages it holds, each at its time.
pub async fn analytics(consumer: Arc<StreamConsumer>, auditor: Auditor, shared: Arc<Shared>, stopped: ShutdownSignal) {
    let stop = stopped.wait();
    tokio::pin!(stop);
    let mut held: VecDeque<(EpochMillis, Observation)> = VecDeque::new();
    let process_due = |held: &mut VecDeque<(EpochMillis, Observation)>| {
        let now = SystemClock.now_ms();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let (due, obs) = held.pop_front().expect("non-empty");
            auditor.observe(TOPIC, ANALYTICS, obs);
            shared.ledger().delayed(shared.width.start_of(due - shared.plan().delay_ms as i64));
            shared.counters.delayed.fetch_add(1, Relaxed);
        }
    };
    let wait_for_front = |held: &VecDeque<(EpochMillis, Observation)>| {
        let ms = held.front().map_or(200, |(due, _)| (due - SystemClock.now_ms()).clamp(0, 200));
        tokio::time::sleep(Duration::from_millis(ms as u64))
    };
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = wait_for_front(&held) => process_due(&mut held),
            msg = consumer.recv() => match msg {
                Ok(msg) => {
                    shared.counters.analytics.fetch_add(1, Relaxed);
                    let obs = auditor.observation(TOPIC, &KafkaMessage(&msg));
                    let plan = shared.plan();
                    match event_ms(&obs) {
                        Some(t) if plan.delay_ms > 0 && plan.applies_to(t) => {
                            held.push_back((t + plan.delay_ms as i64, obs));
                        }
                        _ => auditor.observe(TOPIC, ANALYTICS, obs),
                    }
                    // With a backlog `recv` is always ready and the timer arm never runs.
                    process_due(&mut held);
                }
                Err(error) => tracing::warn!(%error, "analytics consumer error"),
            },
        }
    }
    while !held.is_empty() {
        wait_for_front(&held).await;
        process_due(&mut held);
    }
}

/// The two consumer groups, billing and analytics, each read by one task until stopped.
pub struct Consumers {
    billing: Arc<AuditedStreamConsumer>,
    analytics: Arc<StreamConsumer>,
    shutdown: Shutdown,
    tasks: [JoinHandle<()>; 2],
}

impl Consumers {
    /// Join both groups and start reading; `billing` and `analytics` are their agents' auditors.
    pub fn start(
        bootstrap: &str,
        billing: &Auditor,
        analytics: &Auditor,
        shared: &Arc<Shared>,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let billing_consumer =
            Arc::new(AuditedStreamConsumer::new(consumer(bootstrap, "billing")?, billing.clone(), BILLING));
        let analytics_consumer = Arc::new(consumer(bootstrap, "analytics")?);
        let shutdown = Shutdown::new();
        let tasks = [
            tokio::spawn(self::billing(
                billing_consumer.clone(),
                billing.clone(),
                shared.clone(),
                seed,
                shutdown.signal(),
            )),
            tokio::spawn(self::analytics(
                analytics_consumer.clone(),
                analytics.clone(),
                shared.clone(),
                shutdown.signal(),
            )),
        ];
        Ok(Self { billing: billing_consumer, analytics: analytics_consumer, shutdown, tasks })
    }

    /// Wait until the tap and both groups have partitions: the clock of the run starts after
    /// that, or the seconds a group join takes would show up as delay.
    pub async fn joined(&self, tap: &TapShared) -> anyhow::Result<()> {
        let assigned = |c: &StreamConsumer| c.assignment().map(|a| a.count() > 0).unwrap_or(false);
        let started = Instant::now();
        super::wait::until(Duration::from_secs(60), || {
            !tap.assigned().is_empty() && assigned(&self.billing) && assigned(&self.analytics)
        })
        .await
        .context("the tap and consumer groups did not join within 60 s")?;
        eprintln!("tap and consumer groups joined in {:.1?}", started.elapsed());
        Ok(())
    }

    /// Wait until the tap and both groups have received the `sent` messages, or fail after 30 s
    /// without progress.
    pub async fn drain(&self, shared: &Shared, tap: &TapShared) -> anyhow::Result<()> {
        let sent = shared.counters.sent();
        let c = &shared.counters;
        let received = || (tap.seen(), c.billing.load(Relaxed), c.analytics.load(Relaxed));
        let (mut last, mut last_change) = (received(), Instant::now());
        super::wait::until(Duration::from_secs(24 * 3600), || {
            let now = received();
            if now != last {
                (last, last_change) = (now, Instant::now());
            }
            (now.0 >= sent && now.1 >= sent && now.2 >= sent) || last_change.elapsed() > Duration::from_secs(30)
        })
        .await?;
        let (t, b, a) = received();
        anyhow::ensure!(
            t >= sent && b >= sent && a >= sent,
            "the consumers stopped receiving before every message arrived (30 s without progress): sent {sent}, \
             broker {t}, billing {b}, analytics {a}"
        );
        Ok(())
    }

    /// Stop reading; analytics first processes the messages it holds.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        for task in self.tasks {
            task.await?;
        }
        Ok(())
    }
}
