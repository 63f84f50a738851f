//! The contract cases, each against `&dyn Store`.

use kaudit_schema::{
    Changes, CusumStateRow, FlushBatch, HeartbeatRow, OffsetRow, ProgressRow, Store, StreamId, Tally, TallyKey,
    TallyRow, VanishedAgent, VerdictDetail, VerdictOwnerRow,
};

pub const W: i64 = 60_000;
pub const T0: i64 = 1_700_000_000_000 / W * W;

pub fn row(topic: &str, bucket: i64, tier: &str, agent: &str, version: u64, count: u64) -> TallyRow {
    let mut tally = Tally::default();
    for i in 0..count {
        tally.add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), 100 + i);
        tally.latency.record((i * 37 % 500) as i64);
    }
    tally.no_time = count / 10;
    let key = TallyKey { topic: topic.into(), bucket_start_ms: bucket, tier: tier.into(), agent_id: agent.into() };
    TallyRow { key, bucket_width_ms: W, version, tally }
}

fn batch(rows: Vec<TallyRow>) -> FlushBatch {
    FlushBatch { rows, ..FlushBatch::default() }
}

/// Every tally row written is in the change index from the time of its write on, and a read from
/// where the last one ended finds only later writes (the verifier's incremental passes).
pub async fn changes_index_every_row_written(store: &dyn Store) {
    let first = batch(vec![row("orders", T0, "producer", "a", 1, 5), row("payments", T0 + W, "broker", "b", 1, 2)]);
    store.write(&first).await.unwrap();
    let all = store.read_changes(0).await.unwrap();
    let buckets = |c: &Changes| -> Vec<(String, i64)> {
        let mut got: Vec<(String, i64)> =
            c.topics.iter().flat_map(|t| t.buckets.iter().map(|(b, _)| (t.topic.clone(), *b))).collect();
        got.sort();
        got
    };
    assert_eq!(buckets(&all), [("orders".into(), T0), ("payments".into(), T0 + W)]);
    assert!(all.topics.iter().flat_map(|t| &t.buckets).all(|(_, written)| *written <= all.until_ms));
    let later = store.read_changes(all.until_ms + 1).await.unwrap();
    assert!(later.is_empty(), "{later:?}");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // Another tier's row of the same bucket: one change of the bucket, with the latest write.
    store.write(&batch(vec![row("orders", T0, "producer", "a", 2, 6)])).await.unwrap();
    store.write(&batch(vec![row("orders", T0, "consumer", "c", 1, 6)])).await.unwrap();
    let next = store.read_changes(all.until_ms + 1).await.unwrap();
    assert_eq!((next.len(), buckets(&next)), (1, vec![("orders".into(), T0)]), "{next:?}");
    assert!(next.topics[0].buckets[0].1 > all.until_ms);
}

/// One agent's rows of one tier, by bucket, sketches included; no other agent's or tier's, and
/// none outside the range.
pub async fn reads_one_agents_rows(store: &dyn Store) {
    let mine = [
        sketched("orders", T0, "broker", "g:orders:3", 2, 5),
        sketched("orders", T0 + W, "broker", "g:orders:3", 2, 4),
    ];
    let others = [
        row("orders", T0, "broker", "g:orders:4", 2, 6),
        row("orders", T0, "producer", "g:orders:3", 2, 7),
        row("orders", T0 + W, "broker", "g:orders:3~late9", 2, 1),
        row("orders", T0 + 2 * W, "broker", "g:orders:3", 2, 3),
        row("payments", T0, "broker", "g:orders:3", 2, 2),
    ];
    store.write(&batch(mine.iter().chain(&others).cloned().collect())).await.unwrap();
    let got = store.read_agent_range("orders", "broker", "g:orders:3", T0, T0 + 2 * W).await.unwrap();
    assert_eq!(got, mine.to_vec());
    assert!(got.iter().all(|r| r.tally.sketch.is_some()));
    assert!(store.read_agent_range("orders", "broker", "nobody", T0, T0 + 3 * W).await.unwrap().is_empty());
}

/// A later cumulative write replaces the row, every field and the sketch included.
pub async fn upsert_overwrites(store: &dyn Store) {
    store.write(&batch(vec![row("orders", T0, "producer", "a", 1, 5)])).await.unwrap();
    store.write(&batch(vec![row("orders", T0, "producer", "a", 2, 9)])).await.unwrap();
    let got = store.read_range("orders", T0, T0 + W).await.unwrap();
    assert_eq!(got, vec![row("orders", T0, "producer", "a", 2, 9)]);
    assert_eq!(got[0].tally.latency.len(), 9);
}

/// Writing the same flush twice (a retry, a replayed spool segment) changes nothing.
pub async fn replay_is_idempotent(store: &dyn Store) {
    let flush = batch(vec![row("orders", T0, "producer", "a", 7, 3), row("orders", T0 + W, "producer", "a", 7, 4)]);
    store.write(&flush).await.unwrap();
    store.write(&flush).await.unwrap();
    let got = store.read_range("orders", T0, T0 + 2 * W).await.unwrap();
    assert_eq!(got, flush.rows);
}

/// A stale version arriving after a newer one never lowers the row.
pub async fn stale_version_is_ignored(store: &dyn Store) {
    store.write(&batch(vec![row("orders", T0, "producer", "a", 20, 8)])).await.unwrap();
    store.write(&batch(vec![row("orders", T0, "producer", "a", 10, 2)])).await.unwrap();
    assert_eq!(store.read_range("orders", T0, T0 + W).await.unwrap()[0].tally.count, 8);
}

/// A bucket range comes back across tiers and agents, ordered, and only that topic's.
pub async fn reads_range_across_tiers_and_agents(store: &dyn Store) {
    let rows = vec![
        row("orders", T0 + 2 * W, "broker", "b1", 1, 1),
        row("orders", T0, "producer", "p2", 1, 2),
        row("orders", T0, "producer", "p1", 1, 3),
        row("orders", T0, "consumer/billing", "c1", 1, 5),
        row("orders", T0 + W, "broker", "b1", 1, 4),
        row("payments", T0, "producer", "p1", 1, 6),
    ];
    store.write(&batch(rows)).await.unwrap();
    let got = store.read_range("orders", T0, T0 + 2 * W).await.unwrap();
    let keys: Vec<_> =
        got.iter().map(|r| (r.key.bucket_start_ms - T0, r.key.tier.as_str(), r.key.agent_id.as_str())).collect();
    assert_eq!(
        keys,
        vec![(0, "consumer/billing", "c1"), (0, "producer", "p1"), (0, "producer", "p2"), (W, "broker", "b1")]
    );
    let merged =
        Tally::merged(got.iter().filter(|r| r.key.bucket_start_ms == T0 && r.key.tier == "producer").map(|r| &r.tally));
    assert_eq!(merged.count, 5, "rows of two agents sum client-side");
    assert!(store.read_range("orders", T0 + 3 * W, T0 + 4 * W).await.unwrap().is_empty());
    assert!(store.read_range("unknown-topic", T0, T0 + W).await.unwrap().is_empty());
}

/// Every topic written is listed, once, sorted.
pub async fn lists_topics(store: &dyn Store) {
    store.write(&batch(vec![row("zeta", T0, "p", "a", 1, 1), row("alpha", T0, "p", "a", 1, 1)])).await.unwrap();
    store.write(&batch(vec![row("alpha", T0 + W, "p", "a", 1, 1)])).await.unwrap();
    assert_eq!(store.list_topics().await.unwrap(), vec!["alpha".to_string(), "zeta".to_string()]);
}

/// A tap's offsets land with its tallies and are read back per agent.
pub async fn offsets_are_stored_with_tallies(store: &dyn Store) {
    let offsets = vec![
        OffsetRow { agent_id: "tap-1".into(), topic: "orders".into(), partition: 1, next_offset: 10, version: 3 },
        OffsetRow { agent_id: "tap-1".into(), topic: "orders".into(), partition: 0, next_offset: 7, version: 3 },
        OffsetRow { agent_id: "tap-2".into(), topic: "orders".into(), partition: 0, next_offset: 99, version: 3 },
    ];
    store
        .write(&FlushBatch {
            rows: vec![row("orders", T0, "broker", "tap-1", 3, 17)],
            offsets,
            ..FlushBatch::default()
        })
        .await
        .unwrap();
    let mine = store.load_offsets("tap-1").await.unwrap();
    assert_eq!(mine.iter().map(|o| (o.partition, o.next_offset)).collect::<Vec<_>>(), vec![(0, 7), (1, 10)]);
    assert!(store.load_offsets("nobody").await.unwrap().is_empty());
    assert_eq!(store.read_range("orders", T0, T0 + W).await.unwrap()[0].tally.count, 17);
}

/// A compacted spool batch holds rows of several versions; each lands with its own.
pub async fn mixed_versions_in_one_batch(store: &dyn Store) {
    let rows = vec![row("orders", T0, "producer", "a", 5, 1), row("orders", T0 + W, "producer", "a", 9, 2)];
    let offsets =
        vec![OffsetRow { agent_id: "a".into(), topic: "orders".into(), partition: 0, next_offset: 3, version: 9 }];
    store.write(&FlushBatch { rows: rows.clone(), offsets, ..FlushBatch::default() }).await.unwrap();
    assert_eq!(store.read_range("orders", T0, T0 + 2 * W).await.unwrap(), rows);
    assert_eq!(store.load_offsets("a").await.unwrap()[0].next_offset, 3);
}

fn verdict(bucket: i64, tier: &str, kind: &str, count: u64) -> kaudit_schema::VerdictRow {
    kaudit_schema::VerdictRow {
        topic: "orders".into(),
        bucket_start_ms: bucket,
        tier: tier.into(),
        upstream_tier: "producer".into(),
        kind: kind.parse().unwrap(),
        upstream_count: 10,
        count,
        lost_fingerprint: (count == 9).then_some(0xdead_beef),
        p99_ms: Some(120),
        evaluated_at_ms: bucket + 90_000,
        detail: None,
    }
}

pub fn progress(topic: &str, tier: &str, stream: StreamId, agent: &str, version: u64, watermark: i64) -> ProgressRow {
    ProgressRow {
        topic: topic.into(),
        tier: tier.into(),
        stream,
        agent_id: agent.into(),
        watermark_ms: watermark,
        caught_up: watermark % 2 == 0,
        reported_at_ms: T0 + 5 * W,
        version,
    }
}

pub fn heartbeat(topic: &str, tier: &str, agent: &str, version: u64, open_from: Option<i64>) -> HeartbeatRow {
    HeartbeatRow {
        topic: topic.into(),
        tier: tier.into(),
        agent_id: agent.into(),
        started_at_ms: T0 - W,
        heartbeat_ms: T0 + version as i64,
        open_from_ms: open_from,
        stopped: open_from.is_none(),
        resumes: tier == "broker",
        version,
    }
}

fn progress_batch(progress: Vec<ProgressRow>, heartbeats: Vec<HeartbeatRow>) -> FlushBatch {
    FlushBatch { progress, heartbeats, ..FlushBatch::default() }
}

/// A flush's progress and heartbeats come back as written, per topic, ordered by (tier, stream)
/// and (tier, agent), partitions in numeric order; a batch without tallies is enough.
pub async fn progress_and_heartbeats_round_trip(store: &dyn Store) {
    let streams = vec![
        progress("orders", "producer", StreamId::Agent("p-1".into()), "p-1", 3, T0 + 1),
        progress("orders", "broker", StreamId::Partition(10), "tap-a", 3, T0 + 2),
        progress("orders", "broker", StreamId::Partition(2), "tap-b", 3, T0 + 3),
        progress("payments", "broker", StreamId::Partition(0), "tap-a", 3, T0),
    ];
    let beats = vec![
        heartbeat("orders", "producer", "p-1", 3, Some(T0)),
        heartbeat("orders", "broker", "tap-b", 3, None),
        heartbeat("orders", "broker", "tap-a", 3, Some(T0 - W)),
        heartbeat("payments", "broker", "tap-a", 3, Some(T0)),
    ];
    let mut flush = progress_batch(streams.clone(), beats.clone());
    flush.rows = vec![row("orders", T0, "producer", "p-1", 3, 4)];
    store.write(&flush).await.unwrap();
    let got = store.read_progress("orders").await.unwrap();
    assert_eq!(got, vec![streams[2].clone(), streams[1].clone(), streams[0].clone()]);
    let got = store.read_heartbeats("orders").await.unwrap();
    assert_eq!(got, vec![beats[2].clone(), beats[1].clone(), beats[0].clone()]);
    assert_eq!(store.read_progress("payments").await.unwrap(), vec![streams[3].clone()]);
    assert_eq!(store.read_heartbeats("payments").await.unwrap(), vec![beats[3].clone()]);
    assert!(store.read_progress("unknown-topic").await.unwrap().is_empty());
    assert!(store.read_heartbeats("unknown-topic").await.unwrap().is_empty());
    // Several topics' reports in one call are what the per-topic reads give.
    let topics = ["orders".to_string(), "payments".to_string(), "unknown-topic".to_string()];
    for r in store.read_reports(&topics).await.unwrap() {
        assert_eq!(r.progress, store.read_progress(&r.topic).await.unwrap(), "{}", r.topic);
        assert_eq!(r.heartbeats, store.read_heartbeats(&r.topic).await.unwrap(), "{}", r.topic);
        assert!(r.topic != "unknown-topic" || (r.progress.is_empty() && r.heartbeats.is_empty()));
    }
    let read: Vec<String> = store.read_reports(&topics).await.unwrap().into_iter().map(|r| r.topic).collect();
    assert!(read.contains(&"orders".to_string()) && read.contains(&"payments".to_string()), "{read:?}");
    // The change index says which topics' reports changed, once each, beside the tallies.
    let mut reported: Vec<String> = store
        .read_changes(0)
        .await
        .unwrap()
        .topics
        .into_iter()
        .filter(|t| t.buckets.iter().filter(|(b, _)| *b == kaudit_schema::REPORTS_CHANGED).count() == 1)
        .map(|t| t.topic)
        .collect();
    reported.sort();
    assert_eq!(reported, ["orders", "payments"]);
    // Progress alone (an idle agent's flush) is written too.
    let later = progress("orders", "producer", StreamId::Agent("p-1".into()), "p-1", 4, T0 + W);
    store.write(&progress_batch(vec![later.clone()], vec![])).await.unwrap();
    assert_eq!(store.read_progress("orders").await.unwrap()[2], later);
}

/// A newer report replaces a stream's row, whoever made it: a partition's next owner takes over
/// its row, and a clean stop's marker replaces the instance's last heartbeat.
pub async fn later_progress_replaces_the_stream(store: &dyn Store) {
    let first = progress("orders", "broker", StreamId::Partition(0), "tap-a", 10, T0);
    let next_owner = progress("orders", "broker", StreamId::Partition(0), "tap-b", 20, T0 + W);
    let live = heartbeat("orders", "producer", "p-1", 10, Some(T0));
    let stopped =
        HeartbeatRow { stopped: true, open_from_ms: None, ..heartbeat("orders", "producer", "p-1", 20, None) };
    store.write(&progress_batch(vec![first], vec![live])).await.unwrap();
    store.write(&progress_batch(vec![next_owner.clone()], vec![stopped.clone()])).await.unwrap();
    assert_eq!(store.read_progress("orders").await.unwrap(), vec![next_owner]);
    assert_eq!(store.read_heartbeats("orders").await.unwrap(), vec![stopped]);
}

/// A stale report (a replayed spool, or the previous owner of a partition flushing late) never
/// lowers a stream's progress or an instance's heartbeat, in separate writes or in one batch.
pub async fn stale_progress_is_ignored(store: &dyn Store) {
    let newer = progress("orders", "broker", StreamId::Partition(0), "tap-b", 20, T0 + W);
    let older = progress("orders", "broker", StreamId::Partition(0), "tap-a", 10, T0);
    let hb_newer = heartbeat("orders", "producer", "p-1", 20, None);
    let hb_older = heartbeat("orders", "producer", "p-1", 10, Some(T0));
    store.write(&progress_batch(vec![newer.clone()], vec![hb_newer.clone()])).await.unwrap();
    store.write(&progress_batch(vec![older.clone()], vec![hb_older.clone()])).await.unwrap();
    assert_eq!(store.read_progress("orders").await.unwrap(), vec![newer.clone()]);
    assert_eq!(store.read_heartbeats("orders").await.unwrap(), vec![hb_newer.clone()]);
    // A compacted spool batch may carry both; the newer wins whatever the order.
    let mut other = progress_batch(vec![], vec![]);
    for (p, h) in [(&newer, &hb_newer), (&older, &hb_older)] {
        let (mut p, mut h) = (p.clone(), h.clone());
        p.topic = "payments".into();
        h.topic = "payments".into();
        other.progress.insert(0, p);
        other.heartbeats.insert(0, h);
    }
    store.write(&other).await.unwrap();
    assert_eq!(store.read_progress("payments").await.unwrap()[0].agent_id, "tap-b");
    assert!(store.read_heartbeats("payments").await.unwrap()[0].stopped);
}

/// A verdict's detail is stored with it and read back; a later write without one clears it.
pub async fn verdict_details_round_trip(store: &dyn Store) {
    store.write(&batch(vec![row("orders", T0, "producer", "a", 1, 10)])).await.unwrap();
    let pending = kaudit_schema::VerdictRow {
        detail: Some(VerdictDetail {
            behind_tier: Some("broker".into()),
            lag_ms: Some(42_000),
            ..VerdictDetail::default()
        }),
        ..verdict(T0, "broker", "pending", 0)
    };
    let vanished = VanishedAgent { agent_id: "p-1".into(), tier: "producer".into(), last_heartbeat_ms: T0 + 7 };
    let indeterminate = kaudit_schema::VerdictRow {
        detail: Some(VerdictDetail { vanished: vec![vanished], ..VerdictDetail::default() }),
        ..verdict(T0, "consumer/billing", "indeterminate", 12)
    };
    let plain = verdict(T0 + W, "broker", "complete", 10);
    store.write_verdicts(&[pending.clone(), indeterminate.clone(), plain.clone()]).await.unwrap();
    let got = store.read_verdicts("orders", T0, T0 + 2 * W).await.unwrap();
    assert_eq!(got, vec![pending, indeterminate.clone(), plain]);
    let revised = verdict(T0, "broker", "complete", 10);
    store.write_verdicts(std::slice::from_ref(&revised)).await.unwrap();
    assert_eq!(store.read_verdicts("orders", T0, T0 + W).await.unwrap(), vec![revised, indeterminate]);
}

/// Verdicts are upserted per (topic, bucket, tier): a revision replaces what it revises.
pub async fn verdicts_are_revised_in_place(store: &dyn Store) {
    // The topic must be known to the store (agents register it with their tallies).
    store.write(&batch(vec![row("orders", T0, "producer", "a", 1, 10)])).await.unwrap();
    store.write_verdicts(&[verdict(T0, "broker", "loss", 9), verdict(T0 + W, "broker", "complete", 10)]).await.unwrap();
    store.write_verdicts(&[verdict(T0, "broker", "complete", 10)]).await.unwrap();
    let got = store.read_verdicts("orders", T0, T0 + 2 * W).await.unwrap();
    assert_eq!(got, vec![verdict(T0, "broker", "complete", 10), verdict(T0 + W, "broker", "complete", 10)]);
    assert_eq!(store.read_verdicts("orders", T0 + W, T0 + 2 * W).await.unwrap().len(), 1);
}

/// An alert's state and its notifications are stored together; the outbox drains in order.
pub async fn alerts_and_outbox(store: &dyn Store) {
    use kaudit_schema::{AlertRecord, OutboxEntry};
    let alert = |state: &str, at: i64| AlertRecord {
        dedup_key: "loss/orders/broker".into(),
        state: state.into(),
        body: "{}".into(),
        updated_at_ms: at,
    };
    let note = |sink: &str, seq: i64| OutboxEntry {
        sink: sink.into(),
        seq,
        dedup_key: "loss/orders/broker".into(),
        payload: format!("{{\"seq\":{seq}}}"),
        attempts: 0,
    };
    store.record_alert(&alert("firing", 1), &[note("slack", 2), note("pagerduty", 2)]).await.unwrap();
    store.record_alert(&alert("resolved", 5), &[]).await.unwrap();
    assert_eq!(store.list_alerts().await.unwrap(), vec![alert("resolved", 5)], "the state alone is stored");
    let other = OutboxEntry { dedup_key: "lag/orders/broker".into(), ..note("slack", 7) };
    store
        .record_alert(&AlertRecord { dedup_key: other.dedup_key.clone(), ..alert("firing", 6) }, &[other])
        .await
        .unwrap();
    let slack = store.outbox("slack", 10).await.unwrap();
    assert_eq!(slack.iter().map(|n| n.seq).collect::<Vec<_>>(), vec![2, 7]);
    assert_eq!(store.outbox("slack", 1).await.unwrap().len(), 1);
    let mut retry = slack[0].clone();
    retry.attempts = 3;
    store.record_attempt(&retry).await.unwrap();
    assert_eq!(store.outbox("slack", 10).await.unwrap()[0], retry);
    store.ack_notification("slack", 2).await.unwrap();
    assert_eq!(store.outbox("slack", 10).await.unwrap().iter().map(|n| n.seq).collect::<Vec<_>>(), vec![7]);
    assert_eq!(store.outbox("pagerduty", 10).await.unwrap().len(), 1);
    assert!(store.outbox("webhook", 10).await.unwrap().is_empty());
}

/// A newer notification of a dedup key replaces its waiting older one for that sink, and only
/// for that sink; trimming drops the oldest past the bound and nothing when within it.
pub async fn outbox_coalesces_and_is_trimmed(store: &dyn Store) {
    use kaudit_schema::{AlertRecord, OutboxEntry};
    let alert = |key: &str, state: &str| AlertRecord {
        dedup_key: key.into(),
        state: state.into(),
        body: format!("{{\"state\":\"{state}\"}}"),
        updated_at_ms: 1,
    };
    let note = |sink: &str, seq: i64, key: &str| OutboxEntry {
        sink: sink.into(),
        seq,
        dedup_key: key.into(),
        payload: format!("{{\"seq\":{seq}}}"),
        attempts: 0,
    };
    let seqs = |v: Vec<OutboxEntry>| v.iter().map(|n| (n.seq, n.dedup_key.clone())).collect::<Vec<_>>();
    store.record_alert(&alert("a", "firing"), &[note("slack", 1, "a"), note("pd", 1, "a")]).await.unwrap();
    store.record_alert(&alert("b", "firing"), &[note("slack", 2, "b")]).await.unwrap();
    store.ack_notification("pd", 1).await.unwrap();
    store.record_alert(&alert("a", "resolved"), &[note("slack", 3, "a"), note("pd", 3, "a")]).await.unwrap();
    assert_eq!(seqs(store.outbox("slack", 10).await.unwrap()), vec![(2, "b".into()), (3, "a".into())]);
    assert_eq!(seqs(store.outbox("pd", 10).await.unwrap()), vec![(3, "a".into())]);
    assert_eq!(store.outbox("slack", 10).await.unwrap()[1].payload, "{\"seq\":3}");
    // An attempt counted on a notification that was replaced meanwhile does not bring it back.
    store.record_attempt(&OutboxEntry { attempts: 2, ..note("slack", 1, "a") }).await.unwrap();
    assert_eq!(seqs(store.outbox("slack", 10).await.unwrap()), vec![(2, "b".into()), (3, "a".into())]);

    for seq in 10..16 {
        let key = format!("k{seq}");
        store.record_alert(&alert(&key, "firing"), &[note("slack", seq, &key)]).await.unwrap();
    }
    assert_eq!(store.trim_outbox("slack", 8).await.unwrap(), 0, "8 waiting: within the bound");
    assert_eq!(store.trim_outbox("slack", 3).await.unwrap(), 5);
    let left: Vec<i64> = store.outbox("slack", 10).await.unwrap().iter().map(|n| n.seq).collect();
    assert_eq!(left, vec![13, 14, 15], "the newest are kept");
    assert_eq!(store.trim_outbox("nobody", 3).await.unwrap(), 0);
    assert_eq!(store.outbox("pd", 10).await.unwrap().len(), 1, "another sink is untouched");
}

/// With its store broken (tables dropped, or the cluster gone), every operation fails with an error
/// that names the operation and what it was for, not a generic one.
pub async fn errors_name_their_operation(store: &dyn Store) {
    use kaudit_schema::{AlertRecord, OutboxEntry};
    let message = |e: kaudit_schema::StoreError| e.to_string();
    let flush = batch(vec![row("orders", T0, "producer", "a", 1, 1)]);
    assert_eq!(message(store.write(&flush).await.unwrap_err()), "write of 1 tally rows failed");
    // SQLite reads the rows, Scylla first the topic's bucket width: both name the topic.
    let tallies = message(store.read_range("orders", T0, T0 + W).await.unwrap_err());
    assert!(tallies.starts_with("read of ") && tallies.ends_with("of topic orders failed"), "{tallies}");
    let verdicts = message(store.read_verdicts("orders", T0, T0 + W).await.unwrap_err());
    assert!(verdicts.starts_with("read of ") && verdicts.ends_with("of topic orders failed"), "{verdicts}");
    assert_eq!(message(store.list_topics().await.unwrap_err()), "read of the topic list failed");
    assert_eq!(message(store.load_offsets("tap-1").await.unwrap_err()), "read of the offsets of agent tap-1 failed");
    assert_eq!(message(store.read_progress("orders").await.unwrap_err()), "read of progress of topic orders failed");
    let heartbeats = message(store.read_heartbeats("orders").await.unwrap_err());
    assert_eq!(heartbeats, "read of heartbeats of topic orders failed");
    let progress_only = progress_batch(vec![], vec![heartbeat("orders", "producer", "a", 1, None)]);
    assert_eq!(message(store.write(&progress_only).await.unwrap_err()), "write of 0 tally rows failed");
    let alert = AlertRecord { dedup_key: "k".into(), state: "firing".into(), body: "{}".into(), updated_at_ms: 1 };
    let note = OutboxEntry { sink: "slack".into(), seq: 2, dedup_key: "k".into(), payload: "{}".into(), attempts: 1 };
    let write_alert = message(store.record_alert(&alert, std::slice::from_ref(&note)).await.unwrap_err());
    assert_eq!(write_alert, "write of alert k with 1 notifications failed");
    assert_eq!(message(store.list_alerts().await.unwrap_err()), "read of alerts failed");
    assert_eq!(message(store.outbox("slack", 10).await.unwrap_err()), "read of the outbox of sink slack failed");
    let ack = message(store.ack_notification("slack", 2).await.unwrap_err());
    assert_eq!(ack, "outbox ack of notification 2 of sink slack failed");
    assert_eq!(message(store.trim_outbox("slack", 5).await.unwrap_err()), "trim of the outbox of sink slack failed");
    let attempt = message(store.record_attempt(&note).await.unwrap_err());
    assert_eq!(attempt, "write of the attempt count of notification 2 of sink slack failed");
    let state = cusum_state("orders", "consumer", "loss_ratio", T0, &[1]);
    let write_states = message(store.write_cusum_states(&[state]).await.unwrap_err());
    assert_eq!(write_states, "write of 1 cusum states failed");
    let states = message(store.read_cusum_states(Some("orders")).await.unwrap_err());
    assert_eq!(states, "read of the cusum states of topic orders failed");
    assert_eq!(
        message(store.read_cusum_states(None).await.unwrap_err()),
        "read of the cusum states of all topics failed"
    );
    let owner = verdict_owner("orders", T0, 1, "v0", T0 + W);
    let write_owners = message(store.write_verdict_owners(&[owner]).await.unwrap_err());
    assert_eq!(write_owners, "write of 1 verdict owner rows failed");
    let owners = message(store.read_verdict_owners(Some("orders")).await.unwrap_err());
    assert_eq!(owners, "read of the verdict owners of topic orders failed");
    let all_owners = message(store.read_verdict_owners(None).await.unwrap_err());
    assert_eq!(all_owners, "read of the verdict owners of all topics failed");
}

fn cusum_state(topic: &str, tier: &str, signal: &str, last_bucket_ms: i64, state: &[u8]) -> CusumStateRow {
    CusumStateRow {
        topic: topic.into(),
        tier: tier.into(),
        signal: signal.into(),
        format: 1,
        state: state.to_vec(),
        last_bucket_ms,
        hits: vec![(last_bucket_ms - 2 * W, 5.0)],
        updated_ms: last_bucket_ms + 100_000,
    }
}

/// CUSUM states come back as written, by topic or all at once, in (topic, tier, signal) order;
/// writing a state again changes nothing, and one for a later bucket replaces it.
pub async fn cusum_states_round_trip(store: &dyn Store) {
    assert!(store.read_cusum_states(None).await.unwrap().is_empty());
    let loss = cusum_state("orders", "consumer", "loss_ratio", T0 + 5 * W, &[1, 0, 255, 7]);
    let delay =
        CusumStateRow { hits: vec![], ..cusum_state("orders", "broker", "p99_delay_ms", T0 + 5 * W, &[9; 300]) };
    let other = cusum_state("payments", "consumer", "duplicate_ratio", T0 + 3 * W, &[2]);
    store.write_cusum_states(&[loss.clone(), other.clone(), delay.clone()]).await.unwrap();
    store.write_cusum_states(std::slice::from_ref(&loss)).await.unwrap();
    assert_eq!(store.read_cusum_states(Some("orders")).await.unwrap(), vec![delay.clone(), loss.clone()]);
    assert_eq!(store.read_cusum_states(None).await.unwrap(), vec![delay.clone(), loss, other]);
    assert!(store.read_cusum_states(Some("nobody")).await.unwrap().is_empty());
    let later = CusumStateRow {
        hits: vec![(T0 + 4 * W, 5.0), (T0 + 6 * W, 4.5)],
        ..cusum_state("orders", "consumer", "loss_ratio", T0 + 6 * W, &[1, 2])
    };
    store.write_cusum_states(std::slice::from_ref(&later)).await.unwrap();
    assert_eq!(store.read_cusum_states(Some("orders")).await.unwrap(), vec![delay, later]);
}

/// A state for an older bucket than the stored one is ignored, also in a batch that stores others:
/// a late or replayed write never takes a detector back.
pub async fn older_cusum_state_is_ignored(store: &dyn Store) {
    let newer = cusum_state("orders", "consumer", "loss_ratio", T0 + 10 * W, &[1, 10]);
    store.write_cusum_states(std::slice::from_ref(&newer)).await.unwrap();
    let older = cusum_state("orders", "consumer", "loss_ratio", T0 + 9 * W, &[1, 9]);
    let fresh = cusum_state("orders", "consumer", "duplicate_ratio", T0 + 9 * W, &[1, 9]);
    store.write_cusum_states(&[older, fresh.clone()]).await.unwrap();
    assert_eq!(store.read_cusum_states(Some("orders")).await.unwrap(), vec![fresh, newer.clone()]);
    assert_eq!(store.read_cusum_states(None).await.unwrap()[1], newer);
}

fn verdict_owner(topic: &str, bucket_start_ms: i64, epoch: i64, owner: &str, written_ms: i64) -> VerdictOwnerRow {
    VerdictOwnerRow { topic: topic.into(), bucket_start_ms, epoch, owner: owner.into(), written_ms }
}

/// Verdict owner rows come back as written, by topic or all at once, in (topic, bucket, epoch,
/// owner) order whatever the order written; writing them again changes nothing, and a row written
/// again with a later `written_ms` replaces the stored one.
pub async fn verdict_owners_round_trip(store: &dyn Store) {
    assert!(store.read_verdict_owners(None).await.unwrap().is_empty());
    let late_bucket = verdict_owner("orders", T0 + W, 1, "v0", T0 + 2 * W);
    let handed_over = verdict_owner("orders", T0, 2, "v1", T0 + 3 * W);
    let doubled = verdict_owner("orders", T0, 2, "v0", T0 + 3 * W);
    let first = verdict_owner("orders", T0, 1, "v0", T0 + W);
    let other = verdict_owner("payments", T0 - W, 3, "v2", T0 + W);
    let rows = [late_bucket.clone(), handed_over.clone(), other.clone(), doubled.clone(), first.clone()];
    store.write_verdict_owners(&rows).await.unwrap();
    store.write_verdict_owners(&rows).await.unwrap();
    let orders = vec![first.clone(), doubled.clone(), handed_over.clone(), late_bucket.clone()];
    assert_eq!(store.read_verdict_owners(Some("orders")).await.unwrap(), orders);
    assert_eq!(store.read_verdict_owners(Some("payments")).await.unwrap(), vec![other.clone()]);
    let all = vec![first.clone(), doubled.clone(), handed_over.clone(), late_bucket.clone(), other.clone()];
    assert_eq!(store.read_verdict_owners(None).await.unwrap(), all);
    assert!(store.read_verdict_owners(Some("nobody")).await.unwrap().is_empty());
    let rewritten = VerdictOwnerRow { written_ms: T0 + 9 * W, ..first };
    store.write_verdict_owners(std::slice::from_ref(&rewritten)).await.unwrap();
    assert_eq!(
        store.read_verdict_owners(Some("orders")).await.unwrap(),
        vec![rewritten.clone(), doubled, handed_over, late_bucket]
    );
    assert_eq!(store.read_verdict_owners(None).await.unwrap()[4], other);
}

/// `row` with a difference sketch of its messages, each at `partition` and an offset.
fn sketched(topic: &str, bucket: i64, tier: &str, agent: &str, version: u64, count: u64) -> TallyRow {
    use kaudit_schema::difference::{DEFAULT_GEOMETRY, DifferenceSketch, Locator};
    let mut r = row(topic, bucket, tier, agent, 0, 0);
    r.version = version;
    r.tally.sketch = Some(DifferenceSketch::new(DEFAULT_GEOMETRY));
    for i in 0..count {
        r.tally.add_at(
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ version,
            100,
            Some(Locator { partition: 2, offset: i as i64 }),
        );
    }
    r
}

/// Each tally row's sketch is stored with it and read back with it, whichever way the row is
/// written (a partition of several rows, a single row, a tap's batch with offsets); a row without
/// one reads back without one; a newer version replaces the sketch with the row.
pub async fn sketches_round_trip_with_their_rows(store: &dyn Store) {
    // In read order: (bucket, tier, agent).
    let several = vec![row("orders", T0, "consumer", "b", 2, 39), sketched("orders", T0, "producer", "a", 2, 40)];
    let single = sketched("payments", T0, "broker", "x", 2, 7);
    store.write(&batch(several.clone())).await.unwrap();
    store.write(&batch(vec![single.clone()])).await.unwrap();
    let tap = sketched("orders", T0 + W, "broker", "tap-a", 3, 12);
    let offset =
        OffsetRow { agent_id: "tap-a".into(), topic: "orders".into(), partition: 2, next_offset: 12, version: 3 };
    store.write(&FlushBatch { rows: vec![tap.clone()], offsets: vec![offset], ..FlushBatch::default() }).await.unwrap();
    let mut expected = several.clone();
    expected.push(tap.clone());
    assert_eq!(store.read_range("orders", T0, T0 + 2 * W).await.unwrap(), expected);
    assert_eq!(store.read_range("payments", T0, T0 + W).await.unwrap(), vec![single.clone()]);
    store.write(&batch(several.clone())).await.unwrap();
    assert_eq!(store.read_range("orders", T0, T0 + W).await.unwrap(), several, "a replay changes nothing");
    let newer = sketched("orders", T0, "producer", "a", 5, 41);
    store.write(&batch(vec![newer.clone()])).await.unwrap();
    let read = store.read_range("orders", T0, T0 + W).await.unwrap();
    assert_eq!(read[1], newer, "the newer row with its own sketch");
    assert!(read[0].tally.sketch.is_none());
}

/// An older version delivered after a newer one changes neither the row nor its sketch.
pub async fn stale_sketch_is_ignored(store: &dyn Store) {
    let newer = sketched("orders", T0, "producer", "a", 5, 41);
    store.write(&batch(vec![newer.clone()])).await.unwrap();
    store.write(&batch(vec![sketched("orders", T0, "producer", "a", 4, 40)])).await.unwrap();
    assert_eq!(store.read_range("orders", T0, T0 + W).await.unwrap(), vec![newer]);
}
