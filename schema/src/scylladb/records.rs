//! Verdicts, alert state and the outbox in Scylla: the verifier's side of the backend.

use scylla::client::session::Session;
use scylla::errors::PrepareError;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;

use super::ScyllaStore;
use crate::bucket::EpochMillis;
use crate::records::{AlertRecord, OutboxEntry, VerdictRow};
use crate::store::{StoreError, boxed};

/// Rows one outbox read returns at most; callers ask for fewer and the rest is cut client-side.
const OUTBOX_PAGE: usize = 1000;

/// Absent values are stored as `''` and -1, not null: a null column in an upsert must overwrite
/// the old value, and not every CQL server treats a bound null that way.
type VerdictColumns = (String, i64, String, String, String, i64, i64, String, i64, i64);

pub(super) struct Statements {
    insert_verdict: PreparedStatement,
    select_verdicts: PreparedStatement,
    insert_alert: PreparedStatement,
    select_alerts: PreparedStatement,
    insert_outbox: PreparedStatement,
    select_outbox: PreparedStatement,
    delete_outbox: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(session: &Session) -> Result<Self, PrepareError> {
        let p = |cql: String| async move {
            let mut s = session.prepare(cql).await?;
            s.set_is_idempotent(true);
            Ok::<_, PrepareError>(s)
        };
        Ok(Self {
            insert_verdict: p(
                "INSERT INTO verdicts (topic, bucket_start_ms, tier, upstream_tier, kind, upstream_count, count, \
                 lost_fingerprint, p99_ms, evaluated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    .into(),
            )
            .await?,
            select_verdicts: p("SELECT topic, bucket_start_ms, tier, upstream_tier, kind, upstream_count, count, \
                 lost_fingerprint, p99_ms, evaluated_at_ms FROM verdicts WHERE topic = ? AND bucket_start_ms = ?"
                .into())
            .await?,
            insert_alert: p("INSERT INTO alerts (dedup_key, state, body, updated_at_ms) VALUES (?, ?, ?, ?)".into())
                .await?,
            select_alerts: p("SELECT dedup_key, state, body, updated_at_ms FROM alerts".into()).await?,
            insert_outbox: p(
                "INSERT INTO alert_outbox (sink, seq, dedup_key, payload, attempts) VALUES (?, ?, ?, ?, ?)".into(),
            )
            .await?,
            select_outbox: p(format!(
                "SELECT sink, seq, dedup_key, payload, attempts FROM alert_outbox WHERE sink = ? LIMIT {OUTBOX_PAGE}"
            ))
            .await?,
            delete_outbox: p("DELETE FROM alert_outbox WHERE sink = ? AND seq = ?".into()).await?,
        })
    }
}

fn write_err(rows: usize) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> StoreError {
    move |source| StoreError::Write { rows, source }
}

fn read_err(what: &'static str) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> StoreError {
    move |source| StoreError::Read { what, source }
}

fn verdict_values(v: &VerdictRow) -> VerdictColumns {
    (
        v.topic.clone(),
        v.bucket_start_ms,
        v.tier.clone(),
        v.upstream_tier.clone(),
        v.kind.clone(),
        v.upstream_count as i64,
        v.count as i64,
        v.lost_fingerprint.map_or(String::new(), |f| format!("{f:016x}")),
        v.p99_ms.map_or(-1, |p| p as i64),
        v.evaluated_at_ms,
    )
}

impl ScyllaStore {
    fn st(&self) -> &Statements {
        &self.prepared.records
    }

    pub(super) async fn write_verdict_rows(&self, rows: &[VerdictRow]) -> Result<(), StoreError> {
        for v in rows {
            self.session
                .execute_unpaged(&self.st().insert_verdict, verdict_values(v))
                .await
                .map_err(|e| write_err(rows.len())(boxed(e)))?;
        }
        Ok(())
    }

    pub(super) async fn read_verdict_bucket(
        &self,
        topic: &str,
        bucket: EpochMillis,
    ) -> Result<Vec<VerdictRow>, StoreError> {
        let read = read_err("verdicts");
        let result = self
            .session
            .execute_unpaged(&self.st().select_verdicts, (topic, bucket))
            .await
            .map_err(|e| read(boxed(e)))?;
        let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
        let mut out = Vec::new();
        for row in rows.rows::<VerdictColumns>().map_err(|e| read(boxed(e)))? {
            let c = row.map_err(|e| read(boxed(e)))?;
            out.push(VerdictRow {
                topic: c.0,
                bucket_start_ms: c.1,
                tier: c.2,
                upstream_tier: c.3,
                kind: c.4,
                upstream_count: c.5 as u64,
                count: c.6 as u64,
                lost_fingerprint: u64::from_str_radix(&c.7, 16).ok(),
                p99_ms: u64::try_from(c.8).ok(),
                evaluated_at_ms: c.9,
            });
        }
        Ok(out)
    }

    pub(super) async fn record_alert_batch(
        &self,
        alert: &AlertRecord,
        notifications: &[OutboxEntry],
    ) -> Result<(), StoreError> {
        // A logged batch: the alert's state and its notifications land together or not at all.
        type Row = Box<dyn scylla::serialize::row::SerializeRow + Send + Sync>;
        let mut batch = Batch::new(BatchType::Logged);
        batch.set_is_idempotent(true);
        batch.append_statement(self.st().insert_alert.clone());
        let mut values: Vec<Row> =
            vec![Box::new((alert.dedup_key.clone(), alert.state.clone(), alert.body.clone(), alert.updated_at_ms))];
        for n in notifications {
            batch.append_statement(self.st().insert_outbox.clone());
            values.push(Box::new((n.sink.clone(), n.seq, n.dedup_key.clone(), n.payload.clone(), n.attempts as i32)));
        }
        self.session.batch(&batch, values).await.map_err(|e| write_err(1 + notifications.len())(boxed(e)))?;
        Ok(())
    }

    pub(super) async fn all_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        let read = read_err("alerts");
        let result = self.session.execute_unpaged(&self.st().select_alerts, ()).await.map_err(|e| read(boxed(e)))?;
        let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
        let mut out = Vec::new();
        for row in rows.rows::<(String, String, String, i64)>().map_err(|e| read(boxed(e)))? {
            let (dedup_key, state, body, updated_at_ms) = row.map_err(|e| read(boxed(e)))?;
            out.push(AlertRecord { dedup_key, state, body, updated_at_ms });
        }
        out.sort_by(|a, b| a.dedup_key.cmp(&b.dedup_key));
        Ok(out)
    }

    pub(super) async fn outbox_entries(&self, sink: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let read = read_err("alert outbox");
        let result =
            self.session.execute_unpaged(&self.st().select_outbox, (sink,)).await.map_err(|e| read(boxed(e)))?;
        let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
        let mut out = Vec::new();
        for row in rows.rows::<(String, i64, String, String, Option<i32>)>().map_err(|e| read(boxed(e)))? {
            let (sink, seq, dedup_key, payload, attempts) = row.map_err(|e| read(boxed(e)))?;
            out.push(OutboxEntry { sink, seq, dedup_key, payload, attempts: attempts.unwrap_or(0) as u32 });
        }
        out.sort_by_key(|e| e.seq);
        out.truncate(limit);
        Ok(out)
    }

    pub(super) async fn delete_notification(&self, sink: &str, seq: i64) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(&self.st().delete_outbox, (sink, seq))
            .await
            .map_err(|e| write_err(1)(boxed(e)))?;
        Ok(())
    }

    pub(super) async fn put_notification(&self, n: &OutboxEntry) -> Result<(), StoreError> {
        let values = (n.sink.as_str(), n.seq, n.dedup_key.as_str(), n.payload.as_str(), n.attempts as i32);
        self.session.execute_unpaged(&self.st().insert_outbox, values).await.map_err(|e| write_err(1)(boxed(e)))?;
        Ok(())
    }
}
