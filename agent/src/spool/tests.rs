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

fn quarantined(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir.join(QUARANTINE_DIR)) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// A truncated segment (a torn write of an older version, a full disk) is moved aside once,
/// counted, and the spool goes on with the next one.
#[test]
fn a_truncated_segment_is_quarantined_once_and_the_spool_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    spool.append(&batch(1, &[0], 1)).unwrap();
    spool.append(&batch(2, &[0], 1)).unwrap();
    let first = dir.path().join(format!("{:020}.batch", 0));
    let whole = std::fs::read(&first).unwrap();
    std::fs::write(&first, &whole[..whole.len() / 2]).unwrap();
    assert_eq!(spool.front().unwrap().unwrap().rows[0].version, 2, "the next segment");
    assert_eq!(spool.take_quarantined(), 1);
    assert_eq!(spool.front().unwrap().unwrap().rows[0].version, 2);
    assert_eq!(spool.take_quarantined(), 0, "moved aside once, never retried");
    assert!(!first.exists());
    assert_eq!(quarantined(dir.path()).len(), 1);
    assert!(quarantined(dir.path())[0].starts_with("00000000000000000000.batch."));
    assert_eq!(spool.pop_front().unwrap().unwrap().rows[0].version, 2);
    assert_eq!((spool.len(), spool.bytes()), (0, 0));
}

/// A directory with a segment's name (the wedge: 1.35 M ERROR lines in 13 s) is moved to
/// the quarantine when the spool opens; segments around it replay in order.
#[test]
fn a_directory_named_like_a_segment_is_quarantined_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for v in 1..=3 {
            spool.append(&batch(v, &[0], 1)).unwrap();
        }
    }
    let seven = dir.path().join("00000000000000000007.batch");
    std::fs::create_dir(&seven).unwrap();
    std::fs::write(seven.join("inside"), b"x").unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(spool.take_quarantined(), 1);
    assert!(!seven.exists());
    assert_eq!(quarantined(dir.path()).len(), 1);
    spool.append(&batch(4, &[0], 1)).unwrap();
    assert!(dir.path().join("00000000000000000008.batch").exists(), "sequence numbers go on past it");
    let versions: Vec<u64> = std::iter::from_fn(|| spool.pop_front().unwrap()).map(|b| b.rows[0].version).collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    assert_eq!(spool.take_quarantined(), 0);
    // Reopened, the quarantine is not taken for a segment.
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!((spool.len(), spool.take_quarantined()), (0, 0));
}

/// The 191 KB segment under a 64 KiB bound: a batch larger than the bound is refused
/// (the flusher keeps it in memory, counts it and logs an ERROR), and no file over the bound is left.
#[test]
fn a_batch_larger_than_the_bound_is_refused_and_no_file_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let max = 64 << 10;
    let mut spool = Spool::open(dir.path(), max).unwrap();
    let buckets: Vec<i64> = (0..2_000).map(|b| b * 60_000).collect();
    let big = batch(1, &buckets, 1);
    let size = serde_json::to_vec(&big).unwrap().len() as u64;
    assert!(size > max, "{size}");
    assert!(
        matches!(spool.append(&big), Err(SpoolError::TooLarge { bytes, max_bytes }) if bytes == size && max_bytes == max)
    );
    assert!(matches!(spool.append_durable(&big), Err(SpoolError::TooLarge { .. })));
    spool.append(&batch(2, &[0], 1)).unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        assert!(entry.unwrap().metadata().unwrap().len() <= max);
    }
    assert!(spool.bytes() <= max);
}

/// Durable appends never drop what is spooled: compacted if that helps, else refused.
#[test]
fn a_durable_append_compacts_or_refuses_but_never_drops() {
    let dir = tempfile::tempdir().unwrap();
    let one = serde_json::to_vec(&batch(1, &[0], 1)).unwrap().len() as u64;
    let mut spool = Spool::open(dir.path(), 2 * one + one / 2).unwrap();
    spool.append_durable(&batch(1, &[0], 1)).unwrap();
    spool.append_durable(&batch(2, &[0], 1)).unwrap();
    // Same key: compaction makes room.
    let outcome = spool.append_durable(&batch(3, &[0], 1)).unwrap();
    assert!(outcome.compacted);
    assert_eq!(spool.len(), 2);
    spool.append_durable(&batch(4, &[60_000], 1)).unwrap_or_else(|e| panic!("{e}"));
    // Different keys and no room even compacted: refused, nothing dropped.
    assert!(matches!(spool.append_durable(&batch(5, &[120_000], 1)), Err(SpoolError::Full { .. })));
    let mut kept: Vec<(i64, u64)> = std::iter::from_fn(|| spool.pop_front().unwrap())
        .flat_map(|b| b.rows)
        .map(|r| (r.key.bucket_start_ms, r.version))
        .collect();
    kept.sort();
    assert_eq!(kept, vec![(0, 3), (60_000, 4)]);
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
