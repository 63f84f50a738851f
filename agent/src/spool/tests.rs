use kaudit_schema::Tally;

use super::*;

fn batch(version: u64, buckets: &[i64], count: u64) -> FlushBatch {
    let rows = buckets
        .iter()
        .map(|b| {
            let mut tally = Tally::default();
            (0..count).for_each(|i| tally.add(i, 1));
            TallyRow {
                key: TallyKey { topic: "t".into(), bucket_start_ms: *b, tier: "p".into(), agent_id: "a".into() },
                bucket_width_ms: 60_000,
                version,
                tally,
            }
        })
        .collect();
    FlushBatch {
        rows,
        offsets: vec![OffsetRow {
            agent_id: "a".into(),
            topic: "t".into(),
            partition: 0,
            next_offset: version as i64,
            version,
        }],
        progress: vec![],
        heartbeats: vec![],
    }
}

#[test]
fn replays_in_order_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for v in 1..=3 {
            assert_eq!(spool.append(&batch(v, &[0], v)).unwrap(), AppendOutcome::default());
        }
        assert_eq!(spool.pop_front().unwrap().unwrap().rows[0].version, 1);
    }
    std::fs::write(dir.path().join("00000000000000000099.tmp"), b"half a write").unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(spool.len(), 2);
    spool.append(&batch(4, &[0], 4)).unwrap();
    let versions: Vec<u64> = std::iter::from_fn(|| spool.pop_front().unwrap()).map(|b| b.rows[0].version).collect();
    assert_eq!(versions, vec![2, 3, 4]);
    assert_eq!((spool.len(), spool.bytes()), (0, 0));
}

#[test]
fn compaction_keeps_the_newest_version_of_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let one = serde_json::to_vec(&batch(1, &[0, 60_000], 5)).unwrap().len() as u64;
    let mut spool = Spool::open(dir.path(), one * 3 + one / 2).unwrap();
    for v in 1..=3 {
        spool.append(&batch(v, &[0, 60_000], 5)).unwrap();
    }
    let outcome = spool.append(&batch(4, &[0, 60_000], 5)).unwrap();
    assert_eq!(outcome, AppendOutcome { compacted: true, dropped_rows: 0 });
    assert_eq!(spool.len(), 2);
    let compacted = spool.pop_front().unwrap().unwrap();
    assert_eq!(compacted.rows.len(), 2);
    assert!(compacted.rows.iter().all(|r| r.version == 3));
    assert_eq!(compacted.offsets.len(), 1);
    assert_eq!(compacted.offsets[0].next_offset, 3);
}

#[test]
fn past_its_bound_the_spool_drops_oldest_and_says_how_much() {
    let dir = tempfile::tempdir().unwrap();
    let one = serde_json::to_vec(&batch(1, &[0], 1)).unwrap().len() as u64;
    let mut spool = Spool::open(dir.path(), one + one / 2).unwrap();
    spool.append(&batch(1, &[0], 1)).unwrap();
    // Different keys: compaction cannot help, the oldest must go.
    let outcome = spool.append(&batch(2, &[60_000], 1)).unwrap();
    assert_eq!(outcome, AppendOutcome { compacted: true, dropped_rows: 1 });
    assert_eq!(spool.front().unwrap().unwrap().rows[0].key.bucket_start_ms, 60_000);
    assert!(spool.bytes() <= one + one / 2);
}

#[test]
fn corrupt_segments_are_dropped_not_wedged_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    spool.append(&batch(1, &[0], 1)).unwrap();
    spool.append(&batch(2, &[0], 1)).unwrap();
    std::fs::write(dir.path().join(format!("{:020}.batch", 0)), b"{not json").unwrap();
    assert!(matches!(spool.front(), Err(SpoolError::Corrupt { .. })));
    assert!(spool.pop_front().unwrap().is_none());
    assert_eq!(spool.pop_front().unwrap().unwrap().rows[0].version, 2);
}

#[test]
fn compaction_keeps_the_newest_progress_and_heartbeat_of_each_stream() {
    let with_progress = |version: u64, watermark_ms: i64, stopped: bool| {
        let mut b = batch(version, &[0], 1);
        b.progress = [StreamId::Partition(0), StreamId::Agent("a".into())]
            .into_iter()
            .map(|stream| ProgressRow {
                topic: "t".into(),
                tier: "p".into(),
                stream,
                agent_id: "a".into(),
                watermark_ms,
                caught_up: false,
                reported_at_ms: watermark_ms,
                version,
            })
            .collect();
        b.heartbeats = vec![HeartbeatRow {
            topic: "t".into(),
            tier: "p".into(),
            agent_id: "a".into(),
            started_at_ms: 0,
            heartbeat_ms: watermark_ms,
            open_from_ms: None,
            stopped,
            resumes: false,
            version,
        }];
        b
    };
    // Out of order, as the shutdown spill may leave them.
    let merged =
        compact_batches([with_progress(3, 300, true), with_progress(1, 100, false), with_progress(2, 200, false)]);
    assert_eq!(merged.progress.len(), 2);
    assert!(merged.progress.iter().all(|p| (p.version, p.watermark_ms) == (3, 300)));
    assert_eq!(merged.heartbeats.len(), 1);
    assert!(merged.heartbeats[0].stopped, "the stop marker is the newest heartbeat and stays");
}
