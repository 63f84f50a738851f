//! The Scylla backend against an in-process CQL server.
//!
//! kassandra keeps the last write it receives and ignores client write timestamps, so
//! `stale_version_is_ignored` and `stale_progress_is_ignored` (which real Scylla and Cassandra
//! satisfy through last-write-wins on the version we send as the write timestamp) are not part of
//! this run; everything else is.

use kaudit_schema::ScyllaStore;
use kaudit_schema::scylladb::migrate::{applied_versions, migrate};
use kaudit_schema::scylladb::{ScyllaOptions, connect_session};
use kaudit_testkit::CqlServer;

use crate::cases;

pub fn options(keyspace: &str) -> ScyllaOptions {
    ScyllaOptions { keyspace: keyspace.into(), await_schema_agreement: false, ..ScyllaOptions::default() }
}

pub async fn store(server: &CqlServer, keyspace: &str) -> ScyllaStore {
    let options = options(keyspace);
    let hosts = vec![server.addr().to_string()];
    let session = connect_session(&hosts, &options).await.unwrap();
    migrate(&session, &options).await.unwrap();
    ScyllaStore::from_session(session, &hosts, &options).await.unwrap()
}

macro_rules! contract {
    ($($case:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let server = CqlServer::start();
            let store = store(&server, concat!("t_", stringify!($case))).await;
            cases::$case(&store).await;
        }
    )*};
}

contract!(
    changes_index_every_row_written,
    upsert_overwrites,
    reads_one_agents_rows,
    replay_is_idempotent,
    reads_range_across_tiers_and_agents,
    lists_topics,
    offsets_are_stored_with_tallies,
    mixed_versions_in_one_batch,
    verdicts_are_revised_in_place,
    alerts_and_outbox,
    outbox_coalesces_and_is_trimmed,
    progress_and_heartbeats_round_trip,
    later_progress_replaces_the_stream,
    verdict_details_round_trip,
    cusum_states_round_trip,
    older_cusum_state_is_ignored,
    verdict_owners_round_trip,
    sketches_round_trip_with_their_rows
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_recorded_and_idempotent() {
    let server = CqlServer::start();
    let options = options("t_migrate");
    let hosts = vec![server.addr().to_string()];
    let session = connect_session(&hosts, &options).await.unwrap();
    assert_eq!(migrate(&session, &options).await.unwrap(), vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(migrate(&session, &options).await.unwrap(), Vec::<u32>::new(), "second run applies nothing");
    assert_eq!(applied_versions(&session).await.unwrap(), vec![1, 2, 3, 4, 5, 6, 7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmigrated_keyspace_is_a_clear_error() {
    let server = CqlServer::start();
    let options = options("t_unmigrated");
    let hosts = vec![server.addr().to_string()];
    let session = connect_session(&hosts, &options).await.unwrap();
    session
        .query_unpaged(
            "CREATE KEYSPACE t_unmigrated WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
            (),
        )
        .await
        .unwrap();
    session.use_keyspace("t_unmigrated", false).await.unwrap();
    session.query_unpaged("CREATE TABLE schema_migrations (version int PRIMARY KEY, name text)", ()).await.unwrap();
    let err = ScyllaStore::from_session(session, &hosts, &options).await.err().expect("must refuse");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("run `kaudit migrate`"), "{chain}");
}

/// kassandra cannot drop a table, so the cluster goes away instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_their_operation() {
    let mut server = CqlServer::start();
    let store = store(&server, "t_errors").await;
    server.stop();
    cases::errors_name_their_operation(&store).await;
}

/// Two `kaudit migrate` runs (or a verifier and an agent's operator) at the same moment on a new
/// keyspace: both succeed, and the keyspace ends migrated once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_both_succeed() {
    let server = CqlServer::start();
    let options = options("t_concurrent");
    let hosts = vec![server.addr().to_string()];
    let (a, b) = (connect_session(&hosts, &options).await.unwrap(), connect_session(&hosts, &options).await.unwrap());
    let (ra, rb) = tokio::join!(migrate(&a, &options), migrate(&b, &options));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(!ra.is_empty() || !rb.is_empty(), "one of them applied the migrations: {ra:?} {rb:?}");
    assert_eq!(applied_versions(&a).await.unwrap(), vec![1, 2, 3, 4, 5, 6, 7]);
    ScyllaStore::from_session(b, &hosts, &options).await.expect("the keyspace is usable");
}
