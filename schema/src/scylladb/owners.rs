//! Verdict owners in Scylla (migration 0006).
//!
//! One partition per topic, (bucket, epoch, owner) clustering. A row is written with its
//! `written_ms` (in microseconds, the unit of CQL write timestamps) as the write timestamp, so
//! last-write-wins keeps the later `written_ms` whatever order writes arrive in, and writing a row
//! twice is harmless. Rows go in unlogged batches of one partition (atomic) and one `written_ms`,
//! at most [`BATCH_ROWS`] each, sent concurrently.
//!
//! Reading every topic is a full-table scan, sorted here (clustering order holds within a
//! partition only): it serves checks and tests, never the verifier's passes.

use std::collections::BTreeMap;

use futures_util::{StreamExt, TryStreamExt, stream};
use scylla::client::session::Session;
use scylla::errors::PrepareError;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::{DeserializeRow, SerializeRow};

use super::{READ_CONCURRENCY, ScyllaStore};
use crate::bucket::EpochMillis;
use crate::records::VerdictOwnerRow;
use crate::store::{BoxError, StoreError, boxed};

const COLUMNS: &str = "topic, bucket_start_ms, epoch, owner, written_ms";

/// Most rows in one batch: a pass's buckets of a topic fit in one or a few.
const BATCH_ROWS: usize = 100;

pub(super) struct Statements {
    insert: PreparedStatement,
    select_topic: PreparedStatement,
    select_all: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(session: &Session) -> Result<Self, PrepareError> {
        let p = |cql: String| super::prepare_idempotent(session, cql);
        Ok(Self {
            insert: p(format!("INSERT INTO verdict_owners ({COLUMNS}) VALUES (?, ?, ?, ?, ?)")).await?,
            select_topic: p(format!("SELECT {COLUMNS} FROM verdict_owners WHERE topic = ?")).await?,
            select_all: p(format!("SELECT {COLUMNS} FROM verdict_owners")).await?,
        })
    }
}

/// A `verdict_owners` row as bound and read.
#[derive(SerializeRow, DeserializeRow)]
struct OwnerColumns<'a> {
    topic: &'a str,
    bucket_start_ms: i64,
    epoch: i64,
    owner: &'a str,
    written_ms: i64,
}

impl<'a> OwnerColumns<'a> {
    fn encode(r: &'a VerdictOwnerRow) -> Self {
        Self {
            topic: &r.topic,
            bucket_start_ms: r.bucket_start_ms,
            epoch: r.epoch,
            owner: &r.owner,
            written_ms: r.written_ms,
        }
    }

    fn decode(self) -> VerdictOwnerRow {
        VerdictOwnerRow {
            topic: self.topic.into(),
            bucket_start_ms: self.bucket_start_ms,
            epoch: self.epoch,
            owner: self.owner.into(),
            written_ms: self.written_ms,
        }
    }
}

impl ScyllaStore {
    fn owner_statements(&self) -> &Statements {
        &self.prepared.owners
    }

    /// Upsert `rows`: one unlogged batch per (topic, `written_ms`) and [`BATCH_ROWS`] rows.
    pub(super) async fn write_owner_rows(&self, rows: &[VerdictOwnerRow]) -> Result<(), StoreError> {
        let mut groups: BTreeMap<(&str, EpochMillis), Vec<&VerdictOwnerRow>> = BTreeMap::new();
        for r in rows {
            groups.entry((&r.topic, r.written_ms)).or_default().push(r);
        }
        let mut writes = Vec::new();
        for ((_, written_ms), rows) in &groups {
            for chunk in rows.chunks(BATCH_ROWS) {
                writes.push(self.write_owner_batch(*written_ms, chunk));
            }
        }
        stream::iter(writes)
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map_err(|source| StoreError::WriteVerdictOwners { rows: rows.len(), source })?;
        Ok(())
    }

    /// Rows of one partition with one `written_ms`, in one unlogged batch stamped with it.
    async fn write_owner_batch(&self, written_ms: EpochMillis, rows: &[&VerdictOwnerRow]) -> Result<(), BoxError> {
        let mut batch = Batch::new(BatchType::Unlogged);
        batch.set_timestamp(Some(super::micros(written_ms)));
        batch.set_is_idempotent(true);
        let values: Vec<OwnerColumns<'_>> = rows.iter().map(|r| OwnerColumns::encode(r)).collect();
        for _ in &values {
            batch.append_statement(self.owner_statements().insert.clone());
        }
        self.session.batch(&batch, values).await.map_err(boxed)?;
        Ok(())
    }

    /// The owner rows of `topic`, or of every topic, by (topic, bucket, epoch, owner).
    pub(super) async fn read_owner_rows(&self, topic: Option<&str>) -> Result<Vec<VerdictOwnerRow>, StoreError> {
        let scope = topic.map_or_else(|| "all topics".to_string(), |t| format!("topic {t}"));
        let read = |source: BoxError| StoreError::ReadVerdictOwners { scope: scope.clone(), source };
        let st = self.owner_statements();
        let result = match topic {
            Some(t) => self.session.execute_unpaged(&st.select_topic, (t,)).await,
            None => self.session.execute_unpaged(&st.select_all, ()).await,
        }
        .map_err(|e| read(boxed(e)))?;
        let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
        let mut out = Vec::new();
        for row in rows.rows::<OwnerColumns<'_>>().map_err(|e| read(boxed(e)))? {
            out.push(row.map_err(|e| read(boxed(e)))?.decode());
        }
        out.sort_by(|a, b| {
            (&a.topic, a.bucket_start_ms, a.epoch, &a.owner).cmp(&(&b.topic, b.bucket_start_ms, b.epoch, &b.owner))
        });
        Ok(out)
    }
}
