//! The audit record model at rest.
//!
//! A [`Tally`] summarises every message one agent saw for one (topic, event-time bucket, tier):
//! counts, bytes, two order-independent fingerprint aggregates and a mergeable latency sketch.
//! Tallies merge associatively and commutatively, so any number of agents and any regrouping of
//! buckets give the same answer.
//!
//! Stores hold *cumulative* tallies only (the exactly-once rule in DESIGN.md): an agent writes the
//! full value of a row every time, tagged with a per-agent version that only grows, so a retry, a
//! replay or a reordered write can never lower a row. This crate's pure parts ([`bucket`],
//! [`tally`], [`sketch`]) do no I/O; [`store`] is the trait and [`sqlite`] its embedded backend.
//!
//! It is also the base every other kaudit crate builds on, so the small things they all need live
//! here once: [`ConfigIssue`] for validation, [`error_chain`] for reporting, [`Shutdown`] for stopping.

pub mod bucket;
pub mod clock;
mod columns;
pub mod config_issue;
pub mod difference;
pub mod errors;
pub mod names;
pub mod progress;
pub mod records;
pub mod scylladb;
pub mod secret;
pub mod shutdown;
pub mod sketch;
pub mod sqlite;
pub mod store;
pub mod tally;
pub mod url;

pub use bucket::{BucketWidth, EpochMillis};
pub use clock::{Clock, CoarseClock, ManualClock, SystemClock};
pub use config_issue::ConfigIssue;
pub use errors::error_chain;
pub use progress::{HeartbeatRow, ProgressRow, StreamId};
pub use records::{
    AlertRecord, CusumStateRow, NamedDifferences, NamedKind, NamedMessage, OutboxEntry, Outcome, UnknownVerdictKind,
    VanishedAgent, VerdictDetail, VerdictKind, VerdictOwnerRow, VerdictRow,
};
pub use scylladb::{ScyllaOptions, ScyllaStore};
pub use secret::{Secret, redact_url};
pub use shutdown::{Shutdown, ShutdownSignal};
pub use sketch::LatencySketch;
pub use sqlite::SqliteStore;
pub use store::{
    CHANGE_RETENTION_MS, Change, ChangeFold, Changes, FlushBatch, OffsetRow, REPORTS_CHANGED, Store, StoreError,
    TallyKey, TallyRow, TopicChanges, TopicReports,
};
pub use tally::Tally;
pub use url::{StoreUrl, StoreUrlError};

use std::sync::Arc;

/// Open the store at `url`: SQLite (created and migrated as needed) or a migrated Scylla keyspace.
pub async fn open_store(url: &StoreUrl, scylla: &ScyllaOptions) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match url {
        StoreUrl::Sqlite(path) => Arc::new(SqliteStore::open(path, &sqlite::SqliteOptions::default())?),
        StoreUrl::Scylla(hosts) => Arc::new(ScyllaStore::connect(hosts, scylla).await?),
    })
}
