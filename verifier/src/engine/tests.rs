use std::sync::Arc;

use kaudit_alerting::AlertState;
use kaudit_alerting::dispatch::{Backoff, Limits};
use kaudit_alerting::sinks::WebhookConfig;
use kaudit_alerting::{AlertMetrics, SinkConfig};
use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{
    FlushBatch, HeartbeatRow, ManualClock, Outcome, ProgressRow, SqliteStore, StreamId, Tally, TallyKey, TallyRow,
};

use super::*;
use crate::pipeline::PipelineConfig;

mod cusum;

const W: i64 = 60_000;
const T0: i64 = 1_700_000_000_000 / W * W;

struct Rig {
    _dir: tempfile::TempDir,
    store: SqliteStore,
    clock: ManualClock,
    registry: prometheus::Registry,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("v.db"), &SqliteOptions::default()).unwrap();
    Rig { _dir: dir, store, clock: ManualClock::new(T0), registry: prometheus::Registry::new() }
}

fn config() -> VerifierConfig {
    VerifierConfig {
        pipelines: vec![PipelineConfig {
            topics: vec!["orders".into()],
            tiers: vec!["producer".into()],
            consumers: vec!["consumer".into()],
        }],
        ..VerifierConfig::default()
    }
}

fn engine(r: &Rig) -> Engine {
    engine_with(r, config(), &r.registry)
}

/// An engine over the rig's store and clock with `config`, its metrics in `registry`, and a
/// webhook sink (nothing listens: notifications stay in the outbox).
fn engine_with(r: &Rig, config: VerifierConfig, registry: &prometheus::Registry) -> Engine {
    let sink = SinkConfig::Webhook(WebhookConfig {
        name: None,
        url: "http://127.0.0.1:9/".into(),
        secret: None,
        secret_env: None,
    });
    let metrics = AlertMetrics::register(&prometheus::Registry::new()).unwrap();
    let dispatcher =
        Dispatcher::new(Arc::new(r.store.clone()), vec![sink.build().unwrap()], metrics, Backoff::default());
    let vm = VerifierMetrics::register(registry).unwrap();
    Engine::new(Arc::new(r.store.clone()), Some(dispatcher), config, 5_000, Arc::new(r.clock.clone()), vm)
}

async fn tally(store: &SqliteStore, bucket: i64, tier: &str, agent: &str, n: u64, version: u64) {
    let mut t = Tally::default();
    (0..n).for_each(|i| {
        t.add(i * 7919 + 1, 100);
        t.latency.record(20);
    });
    let key = TallyKey { topic: "orders".into(), bucket_start_ms: bucket, tier: tier.into(), agent_id: agent.into() };
    let rows = vec![TallyRow { key, bucket_width_ms: W, version, tally: t }];
    store.write(&FlushBatch { rows, offsets: vec![], progress: vec![], heartbeats: vec![] }).await.unwrap();
}

#[tokio::test]
async fn waits_for_the_watermark_then_stores_verdicts() {
    let r = rig();
    let mut e = engine(&r);
    tally(&r.store, T0, "producer", "p", 1000, 1).await;
    tally(&r.store, T0, "consumer", "c", 1000, 1).await;
    r.clock.set(T0 + W + 40_000); // exactly end + grace: not yet
    assert_eq!(e.tick().await.unwrap().first_evaluations, 0);
    r.clock.advance(1);
    assert_eq!(e.tick().await.unwrap().first_evaluations, 1);
    let stored = r.store.read_verdicts("orders", T0, T0 + W).await.unwrap();
    assert_eq!((stored[0].kind, stored[0].count), (Outcome::Complete.into(), 1000));
    assert_eq!(e.tick().await.unwrap(), TickReport::default(), "nothing new on the next pass");
}

#[tokio::test]
async fn loss_fires_a_late_tally_revises_and_resolves_and_a_restart_repeats_nothing() {
    let r = rig();
    let mut e = engine(&r);
    tally(&r.store, T0, "producer", "p", 10_000, 1).await;
    tally(&r.store, T0, "consumer", "c", 9_990, 1).await;
    r.clock.set(T0 + 2 * W);
    let report = e.tick().await.unwrap();
    assert_eq!((report.first_evaluations, report.notifications), (1, 1));
    let outbox = r.store.outbox("webhook", 10).await.unwrap();
    assert_eq!(outbox.len(), 1);
    let fired: Alert = serde_json::from_str(&outbox[0].payload).unwrap();
    assert_eq!(
        (fired.state, fired.numbers.missing, fired.dedup_key.as_str()),
        (AlertState::Firing, 10, "loss/orders/consumer")
    );
    let firing = r#"kaudit_verifier_alert_firing{kind="loss",tier="consumer",topic="orders"} 1"#;
    let text = prometheus::TextEncoder::new().encode_to_string(&r.registry.gather()).unwrap();
    assert!(text.contains(firing), "{text}");

    // The consumer's agent flushes late: the bucket is complete after all.
    tally(&r.store, T0, "consumer", "c", 10_000, 2).await;
    r.clock.advance(5_000);
    let report = e.tick().await.unwrap();
    assert_eq!((report.revisions, report.notifications), (1, 1));
    let outbox = r.store.outbox("webhook", 10).await.unwrap();
    assert_eq!(outbox.len(), 1, "undelivered, the firing notification is replaced by the resolution");
    let resolved: Alert = serde_json::from_str(&outbox[0].payload).unwrap();
    assert_eq!(resolved.state, AlertState::Resolved);
    assert_eq!(r.store.read_verdicts("orders", T0, T0 + W).await.unwrap()[0].kind, Outcome::Complete.into());

    // A restarted verifier reloads alert state and stored verdicts: no notification, no recount.
    let mut again = Engine::new(
        Arc::new(r.store.clone()),
        None,
        config(),
        5_000,
        Arc::new(r.clock.clone()),
        VerifierMetrics::register(&prometheus::Registry::new()).unwrap(),
    );
    r.clock.advance(5_000);
    let report = again.tick().await.unwrap();
    assert_eq!(report, TickReport { first_evaluations: 0, revisions: 0, notifications: 0 });
    assert_eq!(again.alerts()["loss/orders/consumer"].state, AlertState::Resolved);
    let text = prometheus::TextEncoder::new().encode_to_string(&r.registry.gather()).unwrap();
    assert!(text.contains("kaudit_verifier_buckets_evaluated_total 1"), "{text}");
    assert!(text.contains("kaudit_verifier_revisions_total 1"), "{text}");
    assert!(text.contains(r#"kaudit_verifier_missing_messages_total{tier="consumer",topic="orders"} 10"#), "{text}");
    let upstream = r#"kaudit_verifier_upstream_messages_total{tier="consumer",topic="orders"} 10000"#;
    assert!(text.contains(upstream), "counted once, at the first evaluation: {text}");
    assert!(!text.contains(firing), "a resolved alert leaves the gauge: {text}");
}

#[tokio::test]
async fn a_silent_tier_is_a_missing_tier_alert_and_buckets_past_the_horizon_are_left_alone() {
    let r = rig();
    let mut e = engine(&r);
    tally(&r.store, T0, "producer", "p", 100, 1).await;
    r.clock.set(T0 + 2 * W);
    e.tick().await.unwrap();
    assert_eq!(e.alerts()["missing_tier/orders/consumer"].state, AlertState::Firing);
    // Two hours later a tally for that old bucket turns up: beyond the 1 h lateness horizon.
    r.clock.set(T0 + 2 * 3_600_000);
    tally(&r.store, T0, "consumer", "c", 100, 1).await;
    assert_eq!(e.tick().await.unwrap().revisions, 0);
}

/// What an agent writes with a flush besides its tallies: one progress row and one heartbeat.
async fn report(r: &Rig, tier: &str, stream: StreamId, watermark_ms: i64, caught_up: bool) {
    let now = r.clock.now_ms();
    let agent_id = format!("{tier}-1");
    let progress = ProgressRow {
        topic: "orders".into(),
        tier: tier.into(),
        stream,
        agent_id: agent_id.clone(),
        watermark_ms,
        caught_up,
        reported_at_ms: now,
        version: now as u64,
    };
    let heartbeat = HeartbeatRow {
        topic: "orders".into(),
        tier: tier.into(),
        agent_id,
        started_at_ms: T0,
        heartbeat_ms: now,
        open_from_ms: Some(T0),
        stopped: false,
        resumes: false,
        version: now as u64,
    };
    let batch = FlushBatch { rows: vec![], offsets: vec![], progress: vec![progress], heartbeats: vec![heartbeat] };
    r.store.write(&batch).await.unwrap();
}

#[tokio::test]
async fn a_lagging_consumer_is_pending_and_lag_not_loss_until_it_catches_up() {
    let r = rig();
    let mut config = config();
    config.thresholds.max_lag_ms = 60_000;
    let sink = SinkConfig::Webhook(WebhookConfig {
        name: None,
        url: "http://127.0.0.1:9/".into(),
        secret: None,
        secret_env: None,
    });
    let metrics = AlertMetrics::register(&prometheus::Registry::new()).unwrap();
    let dispatcher =
        Dispatcher::new(Arc::new(r.store.clone()), vec![sink.build().unwrap()], metrics, Backoff::default());
    let vm = VerifierMetrics::register(&r.registry).unwrap();
    let mut e = Engine::new(Arc::new(r.store.clone()), Some(dispatcher), config, 5_000, Arc::new(r.clock.clone()), vm);

    tally(&r.store, T0, "producer", "p", 1_000, 1).await;
    tally(&r.store, T0, "consumer", "c", 400, 1).await;
    r.clock.set(T0 + W + 40_001); // past end + grace; the consumer has read 20 s into the bucket
    report(&r, "producer", StreamId::Agent("producer-1".into()), T0 + W + 40_000, true).await;
    report(&r, "consumer", StreamId::Partition(0), T0 + 20_000, false).await;
    let tick = e.tick().await.unwrap();
    assert_eq!((tick.first_evaluations, tick.notifications), (0, 1));
    let stored = r.store.read_verdicts("orders", T0, T0 + W).await.unwrap();
    assert_eq!((stored[0].kind, stored[0].count), (Outcome::Pending.into(), 400));
    let detail = stored[0].detail.clone().unwrap();
    assert_eq!((detail.behind_tier.as_deref(), detail.lag_ms), (Some("consumer"), Some(40_000)));
    let outbox = r.store.outbox("webhook", 10).await.unwrap();
    let lag: Alert = serde_json::from_str(&outbox[0].payload).unwrap();
    assert_eq!((lag.dedup_key.as_str(), lag.state), ("lag/orders/consumer", AlertState::Firing));
    assert_eq!(lag.numbers.lag_ms, Some(W + 40_001 - 20_000));

    // The consumer catches up with every message: complete at first evaluation, lag resolved.
    r.clock.advance(5_000);
    tally(&r.store, T0, "consumer", "c", 1_000, 2).await;
    report(&r, "producer", StreamId::Agent("producer-1".into()), r.clock.now_ms(), true).await;
    report(&r, "consumer", StreamId::Partition(0), r.clock.now_ms() - 1_000, true).await;
    let tick = e.tick().await.unwrap();
    assert_eq!((tick.first_evaluations, tick.revisions, tick.notifications), (1, 0, 1));
    let stored = r.store.read_verdicts("orders", T0, T0 + W).await.unwrap();
    assert_eq!((stored[0].kind, stored[0].detail.clone()), (Outcome::Complete.into(), None));
    let outbox = r.store.outbox("webhook", 10).await.unwrap();
    assert_eq!(outbox.len(), 1, "lag fired and resolved, nothing else (coalesced, undelivered)");
    let resolved: Alert = serde_json::from_str(&outbox[0].payload).unwrap();
    assert_eq!((resolved.dedup_key.as_str(), resolved.state), ("lag/orders/consumer", AlertState::Resolved));
    assert_eq!(resolved.resolution.as_deref(), Some("caught up (lag 0 s)"));

    let text = prometheus::TextEncoder::new().encode_to_string(&r.registry.gather()).unwrap();
    for line in [
        r#"kaudit_verifier_verdicts_total{kind="pending"} 1"#,
        r#"kaudit_verifier_verdicts_total{kind="complete"} 1"#,
        r#"kaudit_verifier_tier_lag_seconds{tier="consumer",topic="orders"} 0"#,
        r#"kaudit_verifier_agents_live{tier="consumer",topic="orders"} 1"#,
        r#"kaudit_verifier_agents_live{tier="producer",topic="orders"} 1"#,
        "kaudit_verifier_buckets_evaluated_total 1",
        r#"kaudit_verifier_missing_messages_total{tier="consumer",topic="orders"} 0"#,
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}

/// 300 invented topics matching the pipeline, each missing its consumer tier (two alerts each:
/// loss and missing tier): topics come under watch 100 a pass up to 250; the first pass notifies
/// 20 alerts and one flood alert names the rest, later passes of the flood nothing more; the
/// outbox keeps the newest 10.
#[tokio::test]
async fn a_flood_of_topics_is_bounded_and_summarised() {
    let r = rig();
    let config = VerifierConfig {
        pipelines: vec![PipelineConfig {
            topics: vec!["orders.*".into()],
            tiers: vec!["producer".into()],
            consumers: vec!["consumer".into()],
        }],
        max_new_topics_per_pass: 100,
        max_topics: 250,
        ..VerifierConfig::default()
    };
    let rows = (0..300)
        .map(|i| {
            let key = TallyKey {
                topic: format!("orders.card{i:03}"),
                bucket_start_ms: T0,
                tier: "producer".into(),
                agent_id: "p".into(),
            };
            let mut tally = Tally::default();
            tally.add(1, 1);
            TallyRow { key, bucket_width_ms: W, version: 1, tally }
        })
        .collect();
    r.store.write(&FlushBatch { rows, ..FlushBatch::default() }).await.unwrap();
    let sink = SinkConfig::Webhook(WebhookConfig {
        name: None,
        url: "http://127.0.0.1:9/".into(),
        secret: None,
        secret_env: None,
    });
    let alert_registry = prometheus::Registry::new();
    let limits = Limits { max_notifications_per_pass: 20, max_outbox_per_sink: 10 };
    let dispatcher = Dispatcher::new(
        Arc::new(r.store.clone()),
        vec![sink.build().unwrap()],
        AlertMetrics::register(&alert_registry).unwrap(),
        Backoff::default(),
    )
    .with_limits(limits);
    let vm = VerifierMetrics::register(&r.registry).unwrap();
    let mut e = Engine::new(Arc::new(r.store.clone()), Some(dispatcher), config, 5_000, Arc::new(r.clock.clone()), vm);
    r.clock.set(T0 + 2 * W);

    let notified: Vec<usize> = {
        let mut n = Vec::new();
        for _ in 0..4 {
            n.push(e.tick().await.unwrap().notifications);
            r.clock.advance(5_000);
        }
        n
    };
    assert_eq!(notified, [21, 0, 0, 0], "20, plus the flood alert once");
    let flood = &e.alerts()[crate::alerts::flood::FLOOD_KEY];
    assert_eq!((flood.state, flood.numbers.suppressed), (AlertState::Firing, Some(2 * 250 - 20)));
    assert_eq!(flood.numbers.suppressed_kinds.values().sum::<u64>(), 480);
    assert_eq!(flood.numbers.suppressed_topics.len(), 5);
    assert_eq!(e.alerts().len(), 501, "every alert is stored as state");
    assert_eq!(r.store.list_alerts().await.unwrap().len(), 501);
    let outbox = r.store.outbox("webhook", 100).await.unwrap();
    assert_eq!(outbox.len(), 10, "the newest 10 of 21");

    let text = prometheus::TextEncoder::new().encode_to_string(&r.registry.gather()).unwrap();
    for line in
        ["kaudit_verifier_topics_watched 250", "kaudit_verifier_topics_ignored 50", "kaudit_verifier_topics_waiting 0"]
    {
        assert!(text.contains(line), "{line}\n{text}");
    }
    let text = prometheus::TextEncoder::new().encode_to_string(&alert_registry.gather()).unwrap();
    assert!(text.contains(r#"kaudit_verifier_notifications_dropped_total{sink="webhook"} 11"#), "{text}");

    // No more passes over the limit: the flood alert resolves, once.
    r.clock.advance(60_000);
    assert_eq!(e.tick().await.unwrap().notifications, 1);
    assert_eq!(e.alerts()[crate::alerts::flood::FLOOD_KEY].state, AlertState::Resolved);
}

/// A counter's value in `registry`'s exposition.
fn counter(registry: &prometheus::Registry, name: &str) -> u64 {
    let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Incremental evaluation: the first pass reads the topic in full; after it, a pass reads nothing
/// while nothing changed, and only the changed bucket's rows when a late tally arrives, which it
/// revises; a restarted engine reads in full once again.
#[tokio::test]
async fn after_the_first_pass_only_changed_and_open_buckets_are_read() {
    let r = rig();
    let mut e = engine(&r);
    for b in 0..5 {
        tally(&r.store, T0 + b * W, "producer", "p", 100, 1).await;
        tally(&r.store, T0 + b * W, "consumer", "c", 100, 1).await;
    }
    r.clock.set(T0 + 5 * W + 40_001); // every bucket past end + grace
    assert_eq!(e.tick().await.unwrap().first_evaluations, 5);
    let rows = |r: &Rig| counter(&r.registry, "kaudit_verifier_tally_rows_read_total");
    assert_eq!((rows(&r), counter(&r.registry, "kaudit_verifier_full_reads_total")), (10, 1));

    for _ in 0..3 {
        r.clock.advance(5_000);
        assert_eq!(e.tick().await.unwrap(), TickReport::default());
    }
    assert_eq!(rows(&r), 10, "nothing changed: nothing read");

    tally(&r.store, T0 + 2 * W, "consumer", "c-late", 1, 1).await; // one extra message in bucket 2
    r.clock.advance(5_000);
    let report = e.tick().await.unwrap();
    assert_eq!(report.revisions, 1, "{report:?}");
    assert_eq!(rows(&r), 13, "only bucket 2's three rows");
    let stored = r.store.read_verdicts("orders", T0 + 2 * W, T0 + 3 * W).await.unwrap();
    assert_eq!(stored[0].kind, Outcome::Duplicates.into());
    assert_eq!(counter(&r.registry, "kaudit_verifier_full_reads_total"), 1);

    // A restart reads in full once, then incrementally again.
    let registry = prometheus::Registry::new();
    let vm = VerifierMetrics::register(&registry).unwrap();
    let mut again = Engine::new(Arc::new(r.store.clone()), None, config(), 5_000, Arc::new(r.clock.clone()), vm);
    r.clock.advance(5_000);
    assert_eq!(again.tick().await.unwrap().first_evaluations, 0, "verdicts are loaded, not made again");
    assert_eq!(counter(&registry, "kaudit_verifier_full_reads_total"), 1);
    let after_restart = counter(&registry, "kaudit_verifier_tally_rows_read_total");
    assert_eq!(after_restart, 11);
    r.clock.advance(5_000);
    again.tick().await.unwrap();
    assert!(counter(&registry, "kaudit_verifier_tally_rows_read_total") <= after_restart + 3);
}

/// A stop ends the pass in progress at its next topic instead of waiting for all of them (a pass
/// after a takeover can take many seconds, and a clean stop should hand the shards over at once);
/// the topics it did evaluate are finished, their verdicts stored.
#[tokio::test]
async fn a_stop_ends_the_pass_in_progress_at_its_next_topic() {
    const TOPICS: usize = 200;
    let r = rig();
    let config = VerifierConfig {
        pipelines: vec![PipelineConfig {
            topics: vec!["orders.*".into()],
            tiers: vec!["producer".into()],
            consumers: vec!["consumer".into()],
        }],
        max_new_topics_per_pass: TOPICS,
        ..VerifierConfig::default()
    };
    let rows = (0..TOPICS)
        .flat_map(|i| ["producer", "consumer"].map(move |tier| (i, tier)))
        .map(|(i, tier)| {
            let key = TallyKey {
                topic: format!("orders.card{i:03}"),
                bucket_start_ms: T0,
                tier: tier.into(),
                agent_id: tier.into(),
            };
            let mut tally = Tally::default();
            tally.add(1, 1);
            TallyRow { key, bucket_width_ms: W, version: 1, tally }
        })
        .collect();
    r.store.write(&FlushBatch { rows, ..FlushBatch::default() }).await.unwrap();
    r.clock.set(T0 + 2 * W);
    let e = engine_with(&r, config, &r.registry);

    // Stop once the first topic's bucket is evaluated, while the pass is under way.
    let registry = r.registry.clone();
    let stop = async move {
        while counter(&registry, "kaudit_verifier_buckets_evaluated_total") == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), e.run(stop)).await.expect("the engine stops");
    let evaluated = counter(&r.registry, "kaudit_verifier_buckets_evaluated_total") as usize;
    assert!((1..TOPICS / 2).contains(&evaluated), "{evaluated} of {TOPICS} topics evaluated after the stop");
    let mut stored = 0;
    for i in 0..TOPICS {
        stored += r.store.read_verdicts(&format!("orders.card{i:03}"), T0, T0 + W).await.unwrap().len();
    }
    assert_eq!(stored, evaluated, "the topics evaluated before the stop are finished");
}
