use std::collections::BTreeMap;
use std::time::Duration;

use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{SqliteStore, Tally};
use prometheus::Registry;

use super::*;
use crate::auditor::AuditorOptions;
use crate::clock::{Clock, ManualClock};
use crate::fingerprint::fingerprint;

const W: i64 = 60_000;
const T0: i64 = 1_700_000_000_000 / W * W;

struct Rig {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    clock: ManualClock,
    auditor: Auditor,
    store: SqliteStore,
    metrics: AgentMetrics,
    registry: Registry,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let clock = ManualClock::new(T0);
    let auditor = Auditor::new(AuditorOptions {
        clock: Arc::new(clock.clone()),
        close_after_ms: 2 * W,
        ..AuditorOptions::named("test")
    });
    let store = SqliteStore::open(&path, &SqliteOptions { busy_timeout: Duration::from_millis(10) }).unwrap();
    let registry = Registry::new();
    let metrics = AgentMetrics::register(&registry).unwrap();
    Rig { _dir: dir, path, clock, auditor, store, metrics, registry }
}

fn flusher(r: &Rig, max_queued_batches: usize, spool: Option<Spool>) -> Flusher<Auditor> {
    let options = FlusherOptions { max_queued_batches, ..FlusherOptions::default() };
    Flusher::new(r.auditor.clone(), Arc::new(r.store.clone()), spool, options, r.metrics.clone())
}

/// Sums stored rows per bucket, the way the verifier will.
async fn stored_by_bucket(store: &SqliteStore) -> BTreeMap<i64, (u64, u64, u64)> {
    let mut out = BTreeMap::new();
    for row in store.read_range("orders", i64::MIN, i64::MAX).await.unwrap() {
        let e: &mut (u64, u64, u64) = out.entry(row.key.bucket_start_ms).or_default();
        e.0 += row.tally.count;
        e.1 ^= row.tally.fp_xor;
        e.2 = e.2.wrapping_add(row.tally.fp_sum);
    }
    out
}

fn metric_line(registry: &Registry, name: &str) -> Option<f64> {
    let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn an_outage_loses_nothing_once_the_store_recovers() {
    let r = rig();
    let spool_dir = r._dir.path().join("spool");
    let mut f = flusher(&r, 2, Some(Spool::open(&spool_dir, 64 << 20).unwrap()));
    let mut truth: BTreeMap<i64, Tally> = BTreeMap::new();
    let mut n = 0u64;
    let mut send = |clock: &ManualClock, auditor: &Auditor, k: u64| {
        for _ in 0..k {
            n += 1;
            let event = clock.now_ms() - (n as i64 % 3) * 1000;
            let id = format!("id-{n}");
            auditor.record("orders", "producer", id.as_bytes(), b"payload", Some(event));
            truth.entry(event.div_euclid(W) * W).or_default().add(fingerprint(id.as_bytes(), b"payload"), 7);
        }
    };
    send(&r.clock, &r.auditor, 50);
    assert_eq!(f.flush_once().await, FlushReport { written: 1, pending: 0 });

    let locker = rusqlite::Connection::open(&r.path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for _ in 0..8 {
        r.clock.advance(W / 2);
        send(&r.clock, &r.auditor, 40);
        let report = f.flush_once().await;
        assert_eq!(report.written, 0, "the store is locked");
    }
    assert_eq!(f.pending(), 8);
    assert!(spool_dir.read_dir().unwrap().count() >= 6, "batches past the memory bound went to disk");
    assert!(r.auditor.open_buckets() <= 4, "closed buckets left memory during the outage");
    assert_eq!(metric_line(&r.registry, "kaudit_agent_spool_batches"), Some(6.0));
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);

    send(&r.clock, &r.auditor, 10);
    let report = f.flush_once().await;
    assert_eq!(report, FlushReport { written: 9, pending: 0 });
    let expected: BTreeMap<i64, (u64, u64, u64)> =
        truth.iter().map(|(b, t)| (*b, (t.count, t.fp_xor, t.fp_sum))).collect();
    assert_eq!(stored_by_bucket(&r.store).await, expected);
    assert_eq!(metric_line(&r.registry, "kaudit_agent_flush_failures_total"), Some(8.0));
    assert_eq!(metric_line(&r.registry, "kaudit_agent_messages_total"), Some(n as f64));
    assert_eq!(metric_line(&r.registry, "kaudit_agent_spool_bytes"), Some(0.0));
}

#[tokio::test]
async fn without_a_spool_the_backlog_compacts_and_still_loses_nothing() {
    let r = rig();
    let mut f = flusher(&r, 2, None);
    let locker = rusqlite::Connection::open(&r.path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for i in 0..6 {
        r.auditor.record("orders", "producer", format!("{i}").as_bytes(), b"x", Some(T0));
        f.flush_once().await;
    }
    assert!(f.pending() <= 2);
    locker.execute_batch("ROLLBACK").unwrap();
    f.flush_once().await;
    assert_eq!(stored_by_bucket(&r.store).await.get(&T0).map(|t| t.0), Some(6));
}

#[tokio::test]
async fn a_spool_left_by_a_crashed_agent_is_replayed_on_start() {
    let r = rig();
    let spool_dir = r._dir.path().join("spool");
    {
        let mut spool = Spool::open(&spool_dir, 1 << 20).unwrap();
        r.auditor.record("orders", "producer", b"a", b"x", Some(T0));
        spool.append(&r.auditor.snapshot()).unwrap();
    } // the agent died here with a batch on disk
    let mut f = flusher(&r, 4, Some(Spool::open(&spool_dir, 1 << 20).unwrap()));
    assert_eq!(f.pending(), 1);
    // The spooled batch first, then this flush's own (its heartbeat).
    assert_eq!(f.flush_once().await, FlushReport { written: 2, pending: 0 });
    assert_eq!(stored_by_bucket(&r.store).await.get(&T0).map(|t| t.0), Some(1));
}

#[tokio::test(start_paused = true)]
async fn run_flushes_on_its_interval_and_on_shutdown() {
    let r = rig();
    let f = flusher(&r, 4, None);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(f.run(async { stop_rx.await.unwrap_or(()) }));
    r.auditor.record("orders", "producer", b"a", b"x", Some(T0));
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    // The interval flush ran on a blocking thread; give it real time to land.
    for _ in 0..100 {
        if !stored_by_bucket(&r.store).await.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(stored_by_bucket(&r.store).await.get(&T0).map(|t| t.0), Some(1));
    r.auditor.record("orders", "producer", b"b", b"x", Some(T0));
    stop_tx.send(()).unwrap();
    let report = task.await.unwrap();
    assert_eq!(report.pending, 0);
    assert_eq!(stored_by_bucket(&r.store).await.get(&T0).map(|t| t.0), Some(2));
}

/// The auditor as a batch source that keeps a copy of every batch it hands the flusher.
struct Recording {
    auditor: Auditor,
    taken: Arc<std::sync::Mutex<Vec<FlushBatch>>>,
}

impl BatchSource for Recording {
    fn take_batch(&mut self) -> FlushBatch {
        let batch = self.auditor.take_batch();
        self.taken.lock().unwrap().push(batch.clone());
        batch
    }

    fn take_final_batch(&mut self) -> FlushBatch {
        let batch = self.auditor.take_final_batch();
        self.taken.lock().unwrap().push(batch.clone());
        batch
    }

    fn report(&mut self, metrics: &AgentMetrics) {
        self.auditor.report(metrics)
    }
}

#[tokio::test]
async fn a_clean_shutdown_marks_the_heartbeats_stopped_with_the_last_tallies() {
    let r = rig();
    let taken = Arc::default();
    let source = Recording { auditor: r.auditor.clone(), taken: Arc::clone(&taken) };
    let mut f = Flusher::new(source, Arc::new(r.store.clone()), None, FlusherOptions::default(), r.metrics.clone());
    r.auditor.record("orders", "producer", b"a", b"x", Some(T0));
    f.flush_once().await;
    let running = r.store.read_heartbeats("orders").await.unwrap();
    assert_eq!(running.len(), 1);
    assert!(!running[0].stopped, "a running agent's heartbeat");
    assert_eq!((running[0].agent_id.as_str(), running[0].open_from_ms), (r.auditor.agent_id(), Some(T0)));

    r.clock.advance(1_000);
    r.auditor.record("orders", "producer", b"b", b"x", Some(T0));
    assert_eq!(f.shutdown().await, FlushReport { written: 1, pending: 0 });

    let taken = taken.lock().unwrap().clone();
    let (last, earlier) = taken.split_last().unwrap();
    assert!(earlier.iter().flat_map(|b| &b.heartbeats).all(|h| !h.stopped));
    assert_eq!(last.rows.iter().map(|row| row.tally.count).collect::<Vec<_>>(), vec![2], "the last tallies");
    assert!(!last.heartbeats.is_empty() && last.heartbeats.iter().all(|h| h.stopped), "{last:?}");
    assert!(last.heartbeats[0].version > running[0].version);
    let stored = r.store.read_heartbeats("orders").await.unwrap();
    assert!(stored[0].stopped, "{stored:?}");
    assert_eq!(stored_by_bucket(&r.store).await.get(&T0).map(|t| t.0), Some(2));
    let progress = r.store.read_progress("orders").await.unwrap();
    assert_eq!(progress.len(), 1);
    assert!(progress[0].caught_up, "nothing in flight: {progress:?}");
}

#[tokio::test]
async fn an_agent_that_dies_before_its_final_flush_leaves_its_heartbeat_running() {
    let r = rig();
    let mut f = flusher(&r, 4, None);
    r.auditor.record("orders", "producer", b"a", b"x", Some(T0));
    f.flush_once().await;
    r.auditor.record("orders", "producer", b"b", b"x", Some(T0));
    drop(f); // killed: no shutdown
    let stored = r.store.read_heartbeats("orders").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].stopped);
    assert_eq!(stored[0].open_from_ms, Some(T0), "the bucket whose last count may be missing");
}

#[tokio::test]
async fn a_crash_switch_stops_the_agent_without_its_final_flush() {
    let r = rig();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&r.path, &SqliteOptions::default()).unwrap());
    let options = FlusherOptions { flush_interval: Duration::from_secs(2), ..FlusherOptions::default() };
    let agent = crate::runtime::AgentHandle::start(r.auditor.clone(), store, None, options, r.metrics.clone());
    r.auditor.record("orders", "producer", b"a", b"x", Some(T0));
    // Wait for the first flush (one interval in), then count one more the store will never see:
    // the crash comes long before the next flush.
    let started = std::time::Instant::now();
    while r.store.read_heartbeats("orders").await.unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "no first flush");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r.auditor.record("orders", "producer", b"b", b"x", Some(T0));
    agent.crash_switch().abort();
    assert_eq!(agent.shutdown().await, FlushReport::default(), "nothing written after the crash");
    assert_eq!(stored_by_bucket(&r.store).await.get(&T0).map(|t| t.0), Some(1), "the second count died with it");
    assert!(!r.store.read_heartbeats("orders").await.unwrap()[0].stopped, "no stop marker");
}

fn durable_flusher(r: &Rig, spool: Spool) -> (Flusher<Auditor>, crate::ack::AckGate) {
    let gate = crate::ack::AckGate::new(Duration::ZERO);
    let options = FlusherOptions { ack_gate: Some(gate.clone()), ..FlusherOptions::default() };
    let f = Flusher::new(r.auditor.clone(), Arc::new(r.store.clone()), Some(spool), options, r.metrics.clone());
    (f, gate)
}

/// Durable mode: a batch the store refuses goes straight to the spool (never to memory), the
/// watermark covers it, and while the store is failing early flushes do not retry it.
#[tokio::test]
async fn durable_flushes_publish_and_spill_refused_writes_straight_to_the_spool() {
    let r = rig();
    let spool = Spool::open(&r._dir.path().join("spool"), 64 << 20).unwrap();
    let (mut f, gate) = durable_flusher(&r, spool);
    r.auditor.record("orders", "producer", b"a", b"x", Some(T0));
    let needs = r.auditor.snapshots_taken() + 1;
    assert_eq!(f.flush_early().await, FlushReport { written: 1, pending: 0 });
    assert!(gate.durable() >= needs);

    let locker = rusqlite::Connection::open(&r.path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for (id, pending) in [(b"b", 1), (b"c", 2)] {
        r.auditor.record("orders", "producer", id, b"x", Some(T0));
        let needs = r.auditor.snapshots_taken() + 1;
        assert_eq!(f.flush_early().await, FlushReport { written: 0, pending });
        assert_eq!(gate.durable(), needs, "spooled and fsynced counts as durable");
        assert_eq!(metric_line(&r.registry, "kaudit_agent_queued_batches"), Some(0.0), "nothing in memory");
    }
    assert_eq!(
        metric_line(&r.registry, "kaudit_agent_flush_failures_total"),
        Some(1.0),
        "one attempt, not one per flush"
    );
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    assert_eq!(f.flush_once().await.pending, 0);
    assert_eq!(stored_by_bucket(&r.store).await.get(&T0).map(|t| t.0), Some(3));
}

/// Store down and a spool that cannot take the batch: the watermark stays behind it (waiters get
/// 503) while the batch waits in memory, and moves once the store takes it.
#[tokio::test]
async fn durable_watermark_waits_while_neither_store_nor_spool_takes_a_batch() {
    let r = rig();
    let spool = Spool::open(&r._dir.path().join("spool"), 16).unwrap(); // smaller than any batch
    let (mut f, gate) = durable_flusher(&r, spool);
    let locker = rusqlite::Connection::open(&r.path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    r.auditor.record("orders", "producer", b"a", b"x", Some(T0));
    let needs = r.auditor.snapshots_taken() + 1;
    f.flush_early().await;
    assert!(gate.durable() < needs);
    assert_eq!(metric_line(&r.registry, "kaudit_agent_spool_refused_batches_total"), Some(1.0));
    assert_eq!(metric_line(&r.registry, "kaudit_agent_queued_batches"), Some(1.0));
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    f.flush_once().await;
    assert!(gate.durable() >= needs);
    assert_eq!(stored_by_bucket(&r.store).await.get(&T0).map(|t| t.0), Some(1));
}
