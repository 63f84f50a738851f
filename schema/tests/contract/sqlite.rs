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
    upsert_overwrites,
    replay_is_idempotent,
    stale_version_is_ignored,
    reads_range_across_tiers_and_agents,
    lists_topics,
    offsets_are_stored_with_tallies,
    mixed_versions_in_one_batch,
    verdicts_are_revised_in_place,
    alerts_and_outbox
);
