//! Verdicts, alert state and the outbox in Scylla: the verifier's side of the backend.
//!
//! A verdict's detail lives in `verdict_details` (same key as `verdicts`), written with it in one
//! unlogged batch and joined back client-side; `''` stands for no detail.

use std::collections::HashMap;

use scylla::client::session::Session;
use scylla::errors::PrepareError;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::{DeserializeRow, SerializeRow};

use super::ScyllaStore;
use crate::bucket::EpochMillis;
use crate::records::{AlertRecord, OutboxEntry, VerdictDetail, VerdictRow};
use crate::store::{BoxError, StoreError, boxed};

/// Rows one outbox read returns at most; callers ask for fewer and the rest is cut client-side.
const OUTBOX_PAGE: usize = 1000;

/// A `verdicts` row as bound and read. Absent values are stored as `''` and -1, not null: a null
/// column in an upsert must overwrite the old value, and not every CQL server treats a bound null
/// that way.
#[derive(SerializeRow, DeserializeRow)]
struct VerdictColumns<'a> {
    topic: &'a str,
    bucket_start_ms: i64,
    tier: &'a str,
    upstream_tier: &'a str,
    kind: String,
    upstream_count: i64,
    count: i64,
    /// Hex, or `''`.
    lost_fingerprint: String,
    /// Or -1.
    p99_ms: i64,
    evaluated_at_ms: i64,
}

/// An `alerts` row as bound and read.
#[derive(SerializeRow, DeserializeRow)]
struct AlertColumns<'a> {
    dedup_key: &'a str,
    state: &'a str,
    body: &'a str,
    updated_at_ms: i64,
}

/// An `alert_outbox` row as bound and read.
#[derive(SerializeRow, DeserializeRow)]
struct OutboxColumns<'a> {
    sink: &'a str,
    seq: i64,
    dedup_key: &'a str,
    payload: &'a str,
    /// Null in rows written before attempts were counted.
    attempts: Option<i32>,
}

impl<'a> OutboxColumns<'a> {
    fn encode(n: &'a OutboxEntry) -> Self {
        Self {
            sink: &n.sink,
            seq: n.seq,
            dedup_key: &n.dedup_key,
            payload: &n.payload,
            attempts: Some(n.attempts as i32),
        }
    }

    fn decode(self) -> OutboxEntry {
        OutboxEntry {
            sink: self.sink.into(),
            seq: self.seq,
            dedup_key: self.dedup_key.into(),
            payload: self.payload.into(),
            attempts: self.attempts.unwrap_or(0) as u32,
        }
    }
}

pub(super) struct Statements {
    insert_verdict: PreparedStatement,
    select_verdicts: PreparedStatement,
    insert_detail: PreparedStatement,
    select_details: PreparedStatement,
    insert_alert: PreparedStatement,
    select_alerts: PreparedStatement,
    insert_outbox: PreparedStatement,
    select_outbox: PreparedStatement,
    /// Every waiting notification's seq and dedup key of one sink: coalescing and trimming.
    select_outbox_keys: PreparedStatement,
    select_outbox_one: PreparedStatement,
    delete_outbox: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(session: &Session) -> Result<Self, PrepareError> {
        let p = |cql: String| super::prepare_idempotent(session, cql);
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
            insert_detail: p(
                "INSERT INTO verdict_details (topic, bucket_start_ms, tier, detail) VALUES (?, ?, ?, ?)".into()
            )
            .await?,
            select_details:
                p("SELECT tier, detail FROM verdict_details WHERE topic = ? AND bucket_start_ms = ?".into()).await?,
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
            select_outbox_keys: p("SELECT seq, dedup_key FROM alert_outbox WHERE sink = ?".into()).await?,
            select_outbox_one: p("SELECT seq FROM alert_outbox WHERE sink = ? AND seq = ?".into()).await?,
            delete_outbox: p("DELETE FROM alert_outbox WHERE sink = ? AND seq = ?".into()).await?,
        })
    }
}

fn verdict_values(v: &VerdictRow) -> VerdictColumns<'_> {
    VerdictColumns {
        topic: &v.topic,
        bucket_start_ms: v.bucket_start_ms,
        tier: &v.tier,
        upstream_tier: &v.upstream_tier,
        kind: v.kind.to_string(),
        upstream_count: v.upstream_count as i64,
        count: v.count as i64,
        lost_fingerprint: v.lost_fingerprint.map_or(String::new(), |f| format!("{f:016x}")),
        p99_ms: v.p99_ms.map_or(-1, |p| p as i64),
        evaluated_at_ms: v.evaluated_at_ms,
    }
}

impl ScyllaStore {
    fn st(&self) -> &Statements {
        &self.prepared.records
    }

    pub(super) async fn write_verdict_rows(&self, rows: &[VerdictRow]) -> Result<(), StoreError> {
        let fail = |e: BoxError| StoreError::WriteVerdicts { rows: rows.len(), source: e };
        let mut batch = Batch::new(BatchType::Unlogged);
        batch.set_is_idempotent(true);
        batch.append_statement(self.st().insert_verdict.clone());
        batch.append_statement(self.st().insert_detail.clone());
        for v in rows {
            let detail = match &v.detail {
                Some(d) => serde_json::to_string(d).map_err(|e| fail(boxed(e)))?,
                None => String::new(),
            };
            let detail_row = (v.topic.as_str(), v.bucket_start_ms, v.tier.as_str(), detail);
            self.session.batch(&batch, (verdict_values(v), detail_row)).await.map_err(|e| fail(boxed(e)))?;
        }
        Ok(())
    }

    /// The details stored for the verdicts of one bucket, by tier.
    async fn detail_bucket(
        &self,
        topic: &str,
        bucket: EpochMillis,
    ) -> Result<HashMap<String, VerdictDetail>, StoreError> {
        let read = |source: BoxError| StoreError::ReadVerdicts { topic: topic.into(), source };
        let result = self
            .session
            .execute_unpaged(&self.st().select_details, (topic, bucket))
            .await
            .map_err(|e| read(boxed(e)))?;
        let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
        let mut out = HashMap::new();
        for row in rows.rows::<(String, String)>().map_err(|e| read(boxed(e)))? {
            let (tier, json) = row.map_err(|e| read(boxed(e)))?;
            if !json.is_empty() {
                out.insert(tier, serde_json::from_str(&json).map_err(|e| read(boxed(e)))?);
            }
        }
        Ok(out)
    }

    pub(super) async fn read_verdict_bucket(
        &self,
        topic: &str,
        bucket: EpochMillis,
    ) -> Result<Vec<VerdictRow>, StoreError> {
        let read = |source: BoxError| StoreError::ReadVerdicts { topic: topic.into(), source };
        let result = self
            .session
            .execute_unpaged(&self.st().select_verdicts, (topic, bucket))
            .await
            .map_err(|e| read(boxed(e)))?;
        let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
        let mut details = self.detail_bucket(topic, bucket).await?;
        let mut out = Vec::new();
        for row in rows.rows::<VerdictColumns<'_>>().map_err(|e| read(boxed(e)))? {
            let c = row.map_err(|e| read(boxed(e)))?;
            out.push(VerdictRow {
                detail: details.remove(c.tier),
                topic: c.topic.into(),
                bucket_start_ms: c.bucket_start_ms,
                tier: c.tier.into(),
                upstream_tier: c.upstream_tier.into(),
                kind: c.kind.parse().map_err(|e| read(boxed(e)))?,
                upstream_count: c.upstream_count as u64,
                count: c.count as u64,
                lost_fingerprint: u64::from_str_radix(&c.lost_fingerprint, 16).ok(),
                p99_ms: u64::try_from(c.p99_ms).ok(),
                evaluated_at_ms: c.evaluated_at_ms,
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
        type Row<'a> = Box<dyn scylla::serialize::row::SerializeRow + Send + Sync + 'a>;
        let mut batch = Batch::new(BatchType::Logged);
        batch.set_is_idempotent(true);
        batch.append_statement(self.st().insert_alert.clone());
        let alert_row = AlertColumns {
            dedup_key: &alert.dedup_key,
            state: &alert.state,
            body: &alert.body,
            updated_at_ms: alert.updated_at_ms,
        };
        let fail = |e: BoxError| StoreError::WriteAlert {
            dedup_key: alert.dedup_key.clone(),
            notifications: notifications.len(),
            source: e,
        };
        let mut values: Vec<Row<'_>> = vec![Box::new(alert_row)];
        // Coalescing: the older waiting notifications of each key go in the same batch.
        let mut replaced = Vec::new();
        for n in notifications {
            let waiting = self.outbox_keys(&n.sink).await.map_err(fail)?;
            replaced.extend(
                waiting
                    .into_iter()
                    .filter(|(seq, key)| *key == n.dedup_key && *seq != n.seq)
                    .map(|(s, _)| (n.sink.as_str(), s)),
            );
        }
        for (sink, seq) in replaced {
            batch.append_statement(self.st().delete_outbox.clone());
            values.push(Box::new((sink, seq)));
        }
        for n in notifications {
            batch.append_statement(self.st().insert_outbox.clone());
            values.push(Box::new(OutboxColumns::encode(n)));
        }
        self.session.batch(&batch, values).await.map_err(|e| fail(boxed(e)))?;
        Ok(())
    }

    /// (seq, dedup key) of every notification waiting for `sink`, oldest first.
    async fn outbox_keys(&self, sink: &str) -> Result<Vec<(i64, String)>, BoxError> {
        let result = self.session.execute_unpaged(&self.st().select_outbox_keys, (sink,)).await?;
        let mut out = result.into_rows_result()?.rows::<(i64, String)>()?.collect::<Result<Vec<_>, _>>()?;
        out.sort_unstable();
        Ok(out)
    }

    pub(super) async fn trim_sink(&self, sink: &str, max: usize) -> Result<usize, StoreError> {
        let fail = |source: BoxError| StoreError::TrimOutbox { sink: sink.into(), source };
        let waiting = self.outbox_keys(sink).await.map_err(fail)?;
        let drop = waiting.len().saturating_sub(max);
        for chunk in waiting[..drop].chunks(100) {
            // One partition: an unlogged batch is atomic there.
            let mut batch = Batch::new(BatchType::Unlogged);
            batch.set_is_idempotent(true);
            let values: Vec<(&str, i64)> = chunk.iter().map(|(seq, _)| (sink, *seq)).collect();
            for _ in &values {
                batch.append_statement(self.st().delete_outbox.clone());
            }
            self.session.batch(&batch, values).await.map_err(|e| fail(boxed(e)))?;
        }
        Ok(drop)
    }

    pub(super) async fn all_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        let read = |source| StoreError::ReadAlerts { source };
        let result = self.session.execute_unpaged(&self.st().select_alerts, ()).await.map_err(|e| read(boxed(e)))?;
        let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
        let mut out = Vec::new();
        for row in rows.rows::<AlertColumns<'_>>().map_err(|e| read(boxed(e)))? {
            let c = row.map_err(|e| read(boxed(e)))?;
            out.push(AlertRecord {
                dedup_key: c.dedup_key.into(),
                state: c.state.into(),
                body: c.body.into(),
                updated_at_ms: c.updated_at_ms,
            });
        }
        out.sort_by(|a, b| a.dedup_key.cmp(&b.dedup_key));
        Ok(out)
    }

    pub(super) async fn outbox_entries(&self, sink: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let read = |source| StoreError::ReadOutbox { sink: sink.into(), source };
        let result =
            self.session.execute_unpaged(&self.st().select_outbox, (sink,)).await.map_err(|e| read(boxed(e)))?;
        let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
        let mut out = Vec::new();
        for row in rows.rows::<OutboxColumns<'_>>().map_err(|e| read(boxed(e)))? {
            out.push(row.map_err(|e| read(boxed(e)))?.decode());
        }
        out.sort_by_key(|e| e.seq);
        out.truncate(limit);
        Ok(out)
    }

    pub(super) async fn delete_notification(&self, sink: &str, seq: i64) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(&self.st().delete_outbox, (sink, seq))
            .await
            .map_err(|e| StoreError::AckNotification { sink: sink.into(), seq, source: boxed(e) })?;
        Ok(())
    }

    /// Count an attempt: rewrite the row if it is still waiting. A row that a newer notification
    /// of its key replaced meanwhile stays gone (a window of one read remains: CQL's conditional
    /// update would close it, but costs a Paxos round on every failed delivery).
    pub(super) async fn put_notification(&self, n: &OutboxEntry) -> Result<(), StoreError> {
        let fail = |source: BoxError| StoreError::RecordAttempt { sink: n.sink.clone(), seq: n.seq, source };
        let found = self
            .session
            .execute_unpaged(&self.st().select_outbox_one, (n.sink.as_str(), n.seq))
            .await
            .map_err(|e| fail(boxed(e)))?;
        let rows = found.into_rows_result().map_err(|e| fail(boxed(e)))?;
        let seqs: Vec<(i64,)> =
            rows.rows().map_err(|e| fail(boxed(e)))?.collect::<Result<_, _>>().map_err(|e| fail(boxed(e)))?;
        // Compared, not counted: some CQL test servers answer with the whole partition.
        if !seqs.iter().any(|(seq,)| *seq == n.seq) {
            return Ok(());
        }
        self.session
            .execute_unpaged(&self.st().insert_outbox, OutboxColumns::encode(n))
            .await
            .map_err(|e| StoreError::RecordAttempt { sink: n.sink.clone(), seq: n.seq, source: boxed(e) })?;
        Ok(())
    }
}
