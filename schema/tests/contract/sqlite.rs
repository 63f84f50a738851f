use kaudit_schema::SqliteStore;
use kaudit_schema::sqlite::SqliteOptions;

use crate::cases;

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("audit.db"), &SqliteOptions::default()).unwrap();
    (dir, store)
}

macro_rules! contract {
    ($($case:ident),*) => {$(
        #[tokio::test]
        async fn $case() {
            let (_dir, store) = store();
            cases::$case(&store).await;
        }
    )*};
}

contract!(
    changes_index_every_row_written,
    upsert_overwrites,
    reads_one_agents_rows,
    replay_is_idempotent,
    stale_version_is_ignored,
    reads_range_across_tiers_and_agents,
    lists_topics,
    offsets_are_stored_with_tallies,
    mixed_versions_in_one_batch,
    verdicts_are_revised_in_place,
    alerts_and_outbox,
    outbox_coalesces_and_is_trimmed,
    progress_and_heartbeats_round_trip,
    later_progress_replaces_the_stream,
    stale_progress_is_ignored,
    verdict_details_round_trip,
    cusum_states_round_trip,
    older_cusum_state_is_ignored,
    verdict_owners_round_trip,
    sketches_round_trip_with_their_rows,
    stale_sketch_is_ignored
);

#[tokio::test]
async fn errors_name_their_operation() {
    let (dir, store) = store();
    let conn = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    for table in [
        "tallies",
        "topics",
        "tap_offsets",
        "verdicts",
        "alerts",
        "alert_outbox",
        "progress",
        "heartbeats",
        "verdict_details",
        "cusum_states",
        "verdict_owners",
    ] {
        conn.execute_batch(&format!("DROP TABLE {table}")).unwrap();
    }
    cases::errors_name_their_operation(&store).await;
}
