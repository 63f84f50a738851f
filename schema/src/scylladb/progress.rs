//! Progress reports and heartbeats in Scylla (migration 0003).
//!
//! Both tables are partitioned by topic, so the verifier reads a topic's progress (or heartbeats)
//! in one partition read, and a flush's rows of one topic and one version go in one unlogged batch
//! (both tables share the partition key, so the batch touches one replica set), with the version
//! as the write timestamp: the newest report wins however writes are replayed or reordered.
//! [`ScyllaStore::write`](super::ScyllaStore) writes these only after the batch's tallies.

use std::collections::BTreeMap;

use scylla::client::session::Session;
use scylla::errors::{ExecutionError, PrepareError};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::{DeserializeRow, SerializeRow};

use super::ScyllaStore;
use crate::progress::{HeartbeatRow, ProgressRow};
use crate::store::{BoxError, StoreError, boxed};

/// `open_from_ms` of a heartbeat whose flush changed nothing. Not null: a bound null does not
/// overwrite the old value on every CQL server. No bucket starts here.
const NOT_OPEN: i64 = i64::MIN;

/// A `progress` row as bound and read.
#[derive(SerializeRow, DeserializeRow)]
struct ProgressColumns<'a> {
    topic: &'a str,
    tier: &'a str,
    /// [`StreamId`](crate::progress::StreamId) as text.
    stream: String,
    agent_id: &'a str,
    watermark_ms: i64,
    caught_up: bool,
    reported_at_ms: i64,
    version: i64,
}

impl<'a> ProgressColumns<'a> {
    fn encode(p: &'a ProgressRow) -> Self {
        Self {
            topic: &p.topic,
            tier: &p.tier,
            stream: p.stream.to_string(),
            agent_id: &p.agent_id,
            watermark_ms: p.watermark_ms,
            caught_up: p.caught_up,
            reported_at_ms: p.reported_at_ms,
            version: p.version as i64,
        }
    }

    fn decode(self) -> Result<ProgressRow, StoreError> {
        let stream = self
            .stream
            .parse()
            .map_err(|e| StoreError::Corrupt { topic: self.topic.into(), reason: format!("{e}") })?;
        Ok(ProgressRow {
            topic: self.topic.into(),
            tier: self.tier.into(),
            stream,
            agent_id: self.agent_id.into(),
            watermark_ms: self.watermark_ms,
            caught_up: self.caught_up,
            reported_at_ms: self.reported_at_ms,
            version: self.version as u64,
        })
    }
}

/// A `heartbeats` row as bound and read.
#[derive(SerializeRow, DeserializeRow)]
struct HeartbeatColumns<'a> {
    topic: &'a str,
    tier: &'a str,
    agent_id: &'a str,
    started_at_ms: i64,
    heartbeat_ms: i64,
    /// Or [`NOT_OPEN`].
    open_from_ms: i64,
    stopped: bool,
    resumes: bool,
    version: i64,
}

impl<'a> HeartbeatColumns<'a> {
    fn encode(h: &'a HeartbeatRow) -> Self {
        Self {
            topic: &h.topic,
            tier: &h.tier,
            agent_id: &h.agent_id,
            started_at_ms: h.started_at_ms,
            heartbeat_ms: h.heartbeat_ms,
            open_from_ms: h.open_from_ms.unwrap_or(NOT_OPEN),
            stopped: h.stopped,
            resumes: h.resumes,
            version: h.version as i64,
        }
    }

    fn decode(self) -> HeartbeatRow {
        HeartbeatRow {
            topic: self.topic.into(),
            tier: self.tier.into(),
            agent_id: self.agent_id.into(),
            started_at_ms: self.started_at_ms,
            heartbeat_ms: self.heartbeat_ms,
            open_from_ms: (self.open_from_ms != NOT_OPEN).then_some(self.open_from_ms),
            stopped: self.stopped,
            resumes: self.resumes,
            version: self.version as u64,
        }
    }
}

pub(super) struct Statements {
    insert_progress: PreparedStatement,
    select_progress: PreparedStatement,
    insert_heartbeat: PreparedStatement,
    select_heartbeats: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(session: &Session) -> Result<Self, PrepareError> {
        let p = |cql: &'static str| super::prepare_idempotent(session, cql);
        Ok(Self {
            insert_progress: p("INSERT INTO progress (topic, tier, stream, agent_id, watermark_ms, caught_up, \
                 reported_at_ms, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
            .await?,
            select_progress: p("SELECT topic, tier, stream, agent_id, watermark_ms, caught_up, reported_at_ms, \
                 version FROM progress WHERE topic = ?")
            .await?,
            insert_heartbeat: p("INSERT INTO heartbeats (topic, tier, agent_id, started_at_ms, heartbeat_ms, \
                 open_from_ms, stopped, resumes, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .await?,
            select_heartbeats: p("SELECT topic, tier, agent_id, started_at_ms, heartbeat_ms, open_from_ms, stopped, \
                 resumes, version FROM heartbeats WHERE topic = ?")
            .await?,
        })
    }
}

/// One unlogged batch: the progress and heartbeat rows of one topic with one version.
type Group<'a> = (Vec<&'a ProgressRow>, Vec<&'a HeartbeatRow>);

impl ScyllaStore {
    fn progress_statements(&self) -> &Statements {
        &self.prepared.progress
    }

    /// Upsert `progress` and `heartbeats`, one unlogged batch per (topic, version), oldest version
    /// first.
    pub(super) async fn write_progress(
        &self,
        progress: &[ProgressRow],
        heartbeats: &[HeartbeatRow],
    ) -> Result<(), ExecutionError> {
        let mut groups: BTreeMap<(&str, u64), Group<'_>> = BTreeMap::new();
        for p in progress {
            groups.entry((&p.topic, p.version)).or_default().0.push(p);
        }
        for h in heartbeats {
            groups.entry((&h.topic, h.version)).or_default().1.push(h);
        }
        let st = self.progress_statements();
        for ((_, version), (progress, heartbeats)) in groups {
            type Row<'a> = Box<dyn scylla::serialize::row::SerializeRow + Send + Sync + 'a>;
            let mut batch = Batch::new(BatchType::Unlogged);
            batch.set_timestamp(Some(version.min(i64::MAX as u64) as i64));
            batch.set_is_idempotent(true);
            let mut values: Vec<Row<'_>> = Vec::with_capacity(progress.len() + heartbeats.len());
            for p in progress {
                batch.append_statement(st.insert_progress.clone());
                values.push(Box::new(ProgressColumns::encode(p)));
            }
            for h in heartbeats {
                batch.append_statement(st.insert_heartbeat.clone());
                values.push(Box::new(HeartbeatColumns::encode(h)));
            }
            self.session.batch(&batch, values).await?;
        }
        Ok(())
    }

    /// Every progress row of `topic`, by (tier, stream).
    pub(super) async fn progress_of(&self, topic: &str) -> Result<Vec<ProgressRow>, StoreError> {
        let read = |source: BoxError| StoreError::ReadProgress { topic: topic.into(), source };
        let result = self
            .session
            .execute_unpaged(&self.progress_statements().select_progress, (topic,))
            .await
            .map_err(|e| read(boxed(e)))?;
        let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
        let mut out = Vec::new();
        for row in rows.rows::<ProgressColumns<'_>>().map_err(|e| read(boxed(e)))? {
            out.push(row.map_err(|e| read(boxed(e)))?.decode()?);
        }
        out.sort_by(|a, b| (&a.tier, &a.stream).cmp(&(&b.tier, &b.stream)));
        Ok(out)
    }

    /// Every heartbeat row of `topic`, by (tier, agent).
    pub(super) async fn heartbeats_of(&self, topic: &str) -> Result<Vec<HeartbeatRow>, StoreError> {
        let read = |source: BoxError| StoreError::ReadHeartbeats { topic: topic.into(), source };
        let result = self
            .session
            .execute_unpaged(&self.progress_statements().select_heartbeats, (topic,))
            .await
            .map_err(|e| read(boxed(e)))?;
        let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
        let mut out = Vec::new();
        for row in rows.rows::<HeartbeatColumns<'_>>().map_err(|e| read(boxed(e)))? {
            out.push(row.map_err(|e| read(boxed(e)))?.decode());
        }
        out.sort_by(|a, b| (&a.tier, &a.agent_id).cmp(&(&b.tier, &b.agent_id)));
        Ok(out)
    }
}
