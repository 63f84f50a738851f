use super::*;
use crate::store::TallyKey;
use crate::tally::Tally;

fn row(topic: &str, bucket: i64, tier: &str, agent: &str, version: u64, count: u64) -> TallyRow {
    let mut tally = Tally::default();
    for i in 0..count {
        tally.add(i * 7919, 100);
        tally.latency.record(i as i64);
    }
    TallyRow {
        key: TallyKey { topic: topic.into(), bucket_start_ms: bucket, tier: tier.into(), agent_id: agent.into() },
        bucket_width_ms: 60_000,
        version,
        tally,
    }
}

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("nested/audit.db"), &SqliteOptions::default()).unwrap()
}

#[tokio::test]
async fn upsert_overwrites_and_ignores_stale_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.write(&FlushBatch { rows: vec![row("t", 0, "producer", "a", 1, 5)], ..FlushBatch::default() }).await.unwrap();
    store.write(&FlushBatch { rows: vec![row("t", 0, "producer", "a", 2, 9)], ..FlushBatch::default() }).await.unwrap();
    // A replay of the first flush, arriving late, must not lower the row.
    store.write(&FlushBatch { rows: vec![row("t", 0, "producer", "a", 1, 5)], ..FlushBatch::default() }).await.unwrap();
    let rows = store.read_range("t", 0, 60_000).await.unwrap();
    assert_eq!(rows, vec![row("t", 0, "producer", "a", 2, 9)]);
    assert_eq!(rows[0].tally.latency.len(), 9);
}

#[tokio::test]
async fn reads_a_range_across_tiers_and_agents_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let rows = vec![
        row("t", 120_000, "broker", "b1", 1, 1),
        row("t", 0, "producer", "p2", 1, 2),
        row("t", 0, "producer", "p1", 1, 3),
        row("t", 60_000, "broker", "b1", 1, 4),
        row("other", 0, "producer", "p1", 1, 5),
    ];
    store.write(&FlushBatch { rows: rows.clone(), ..FlushBatch::default() }).await.unwrap();
    let got = store.read_range("t", 0, 120_000).await.unwrap();
    let keys: Vec<_> = got.iter().map(|r| (r.key.bucket_start_ms, r.key.agent_id.as_str())).collect();
    assert_eq!(keys, vec![(0, "p1"), (0, "p2"), (60_000, "b1")]);
    assert_eq!(store.list_topics().await.unwrap(), vec!["other".to_string(), "t".to_string()]);
}

#[tokio::test]
async fn offsets_land_with_tallies_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    {
        let store = SqliteStore::open(&path, &SqliteOptions::default()).unwrap();
        let offsets = vec![
            OffsetRow { agent_id: "tap".into(), topic: "t".into(), partition: 1, next_offset: 10, version: 1 },
            OffsetRow { agent_id: "tap".into(), topic: "t".into(), partition: 0, next_offset: 7, version: 1 },
        ];
        store
            .write(&FlushBatch { rows: vec![row("t", 0, "broker", "tap", 1, 17)], offsets, ..FlushBatch::default() })
            .await
            .unwrap();
        let stale = OffsetRow { agent_id: "tap".into(), topic: "t".into(), partition: 0, next_offset: 3, version: 0 };
        store.write(&FlushBatch { rows: vec![], offsets: vec![stale], ..FlushBatch::default() }).await.unwrap();
    }
    let store = SqliteStore::open(&path, &SqliteOptions::default()).unwrap();
    let offsets = store.load_offsets("tap").await.unwrap();
    assert_eq!(offsets.iter().map(|o| (o.partition, o.next_offset)).collect::<Vec<_>>(), vec![(0, 7), (1, 10)]);
    assert!(store.load_offsets("someone-else").await.unwrap().is_empty());
    assert_eq!(store.read_range("t", 0, 1).await.unwrap()[0].tally.count, 17);
}

#[test]
fn migrations_are_recorded_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let first = SqliteStore::open(&path, &SqliteOptions::default()).unwrap();
    assert_eq!(first.schema_version().unwrap(), MIGRATIONS.last().unwrap().0);
    drop(first);
    let again = SqliteStore::open(&path, &SqliteOptions::default()).unwrap();
    assert_eq!(again.schema_version().unwrap(), MIGRATIONS.last().unwrap().0, "reopening applies nothing");
    let conn = again.conn.lock().unwrap();
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0)).unwrap();
    assert_eq!(n as usize, MIGRATIONS.len());
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_locked_database_fails_the_write_and_loses_nothing_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let store = SqliteStore::open(&path, &SqliteOptions { busy_timeout: Duration::from_millis(50) }).unwrap();
    store.write(&FlushBatch { rows: vec![row("t", 0, "producer", "a", 1, 2)], ..FlushBatch::default() }).await.unwrap();
    let locker = Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let err = store
        .write(&FlushBatch { rows: vec![row("t", 0, "producer", "a", 2, 3)], ..FlushBatch::default() })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WriteTallies { rows: 1, .. }), "{err:?}");
    locker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(store.read_range("t", 0, 1).await.unwrap()[0].tally.count, 2);
}

#[tokio::test]
async fn a_verdict_write_error_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let store = SqliteStore::open(&path, &SqliteOptions::default()).unwrap();
    store.conn.lock().unwrap().execute_batch("DROP TABLE verdicts").unwrap();
    let err = store.write_verdicts(&[]).await.unwrap_err();
    assert_eq!(err.to_string(), "write of 0 verdicts failed");
    assert!(crate::error_chain(&err).contains("no such table: verdicts"), "{}", crate::error_chain(&err));
}

fn heartbeat(version: u64, stopped: bool) -> crate::progress::HeartbeatRow {
    crate::progress::HeartbeatRow {
        topic: "t".into(),
        tier: "producer".into(),
        agent_id: "a".into(),
        started_at_ms: 0,
        heartbeat_ms: version as i64,
        open_from_ms: (!stopped).then_some(0),
        stopped,
        resumes: false,
        version,
    }
}

/// A flush is one transaction: a clean stop's heartbeat is never stored without the tallies of
/// its batch, nor the tallies without it.
#[tokio::test]
async fn a_heartbeat_lands_with_its_tallies_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.write(&FlushBatch { heartbeats: vec![heartbeat(1, false)], ..FlushBatch::default() }).await.unwrap();
    let last = FlushBatch {
        rows: vec![row("t", 0, "producer", "a", 2, 3)],
        heartbeats: vec![heartbeat(2, true)],
        ..FlushBatch::default()
    };
    for table in ["tallies", "heartbeats"] {
        let refuse = format!("CREATE TRIGGER refuse BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'no'); END");
        store.conn.lock().unwrap().execute_batch(&refuse).unwrap();
        store.write(&last).await.unwrap_err();
        store.conn.lock().unwrap().execute_batch("DROP TRIGGER refuse").unwrap();
        assert_eq!(store.read_heartbeats("t").await.unwrap(), vec![heartbeat(1, false)], "{table}");
        assert!(store.read_range("t", 0, 1).await.unwrap().is_empty(), "{table}");
    }
    store.write(&last).await.unwrap();
    assert_eq!(store.read_heartbeats("t").await.unwrap(), vec![heartbeat(2, true)]);
    assert_eq!(store.read_range("t", 0, 1).await.unwrap()[0].tally.count, 3);
}

/// A database at schema version 2 gains the progress tables on open and keeps its rows.
#[tokio::test]
async fn a_version_2_database_is_migrated_to_3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    {
        let store = SqliteStore::open(&path, &SqliteOptions::default()).unwrap();
        store
            .write(&FlushBatch { rows: vec![row("t", 0, "producer", "a", 1, 2)], ..FlushBatch::default() })
            .await
            .unwrap();
        store
            .conn
            .lock()
            .unwrap()
            .execute_batch(
                "DROP TABLE progress; DROP TABLE heartbeats; DROP TABLE verdict_details; DROP TABLE changes; \
                 DROP TABLE cusum_states; DROP TABLE verdict_owners; ALTER TABLE tallies DROP COLUMN sketch; \
                 DELETE FROM schema_migrations WHERE version >= 3",
            )
            .unwrap();
        assert_eq!(store.schema_version().unwrap(), 2);
    }
    let store = SqliteStore::open(&path, &SqliteOptions::default()).unwrap();
    assert_eq!(store.schema_version().unwrap(), MIGRATIONS.last().unwrap().0);
    assert_eq!(store.read_range("t", 0, 1).await.unwrap()[0].tally.count, 2);
    store.write(&FlushBatch { heartbeats: vec![heartbeat(1, false)], ..FlushBatch::default() }).await.unwrap();
    assert_eq!(store.read_heartbeats("t").await.unwrap().len(), 1);
}

/// Services of a compose stack start together on a new file: every opener succeeds and finds the
/// schema complete, whichever wins the race (threads stand in for processes: each opens its own
/// connection, and SQLite locks the file the same way).
#[test]
fn concurrent_opens_of_a_new_file_all_migrate() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let start = std::sync::Arc::new(std::sync::Barrier::new(6));
        let openers: Vec<_> = (0..6)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    SqliteStore::open(&path, &SqliteOptions::default()).map(|s| s.schema_version())
                })
            })
            .collect();
        for opener in openers {
            let version =
                opener.join().unwrap().unwrap_or_else(|e| panic!("round {round}: {}", crate::error_chain(&e)));
            assert_eq!(version.unwrap(), MIGRATIONS.len() as u32, "round {round}");
        }
    }
}
