//! CUSUM detector states in Scylla (migration 0005).
//!
//! One partition per topic, (tier, signal) clustering: the verifier reads a topic's detectors in
//! one partition read. A state is written with the last bucket its detector observed (in
//! microseconds, the unit of CQL write timestamps) as the write timestamp, so last-write-wins keeps
//! the state of the newest bucket whatever order writes arrive in, like tallies with their version.
//! Two writes for the same bucket tie; the cluster then keeps either, both states after that bucket.
//!
//! The timestamp is the rule; a write first reads the topic's stored buckets and leaves out rows
//! older than them. That keeps the rule on servers that ignore client timestamps (the in-process
//! test server) and saves sending writes that would lose anyway; a write racing it (two owners
//! during a hand-over) is still settled by the timestamps.

use std::collections::{BTreeMap, HashMap};

use scylla::client::session::Session;
use scylla::errors::PrepareError;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::{DeserializeRow, SerializeRow};

use super::ScyllaStore;
use crate::bucket::EpochMillis;
use crate::records::CusumStateRow;
use crate::store::{BoxError, StoreError, boxed};

const COLUMNS: &str = "topic, tier, signal, format, state, last_bucket_ms, hits, updated_ms";

pub(super) struct Statements {
    insert: PreparedStatement,
    select_topic: PreparedStatement,
    select_all: PreparedStatement,
    select_buckets: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(session: &Session) -> Result<Self, PrepareError> {
        let p = |cql: String| super::prepare_idempotent(session, cql);
        Ok(Self {
            insert: p(format!("INSERT INTO cusum_states ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")).await?,
            select_topic: p(format!("SELECT {COLUMNS} FROM cusum_states WHERE topic = ?")).await?,
            select_all: p(format!("SELECT {COLUMNS} FROM cusum_states")).await?,
            select_buckets: p("SELECT tier, signal, last_bucket_ms FROM cusum_states WHERE topic = ?".into()).await?,
        })
    }
}

/// A `cusum_states` row as bound and read.
#[derive(SerializeRow, DeserializeRow)]
struct StateColumns<'a> {
    topic: &'a str,
    tier: &'a str,
    signal: &'a str,
    format: i32,
    state: &'a [u8],
    last_bucket_ms: i64,
    hits: String,
    updated_ms: i64,
}

impl<'a> StateColumns<'a> {
    fn encode(r: &'a CusumStateRow) -> Self {
        Self {
            topic: &r.topic,
            tier: &r.tier,
            signal: &r.signal,
            format: r.format as i32,
            state: &r.state,
            last_bucket_ms: r.last_bucket_ms,
            hits: r.hits_text(),
            updated_ms: r.updated_ms,
        }
    }

    fn decode(self) -> Result<CusumStateRow, StoreError> {
        Ok(CusumStateRow {
            hits: CusumStateRow::parse_hits(self.topic, &self.hits)?,
            topic: self.topic.into(),
            tier: self.tier.into(),
            signal: self.signal.into(),
            format: self.format as u32,
            state: self.state.to_vec(),
            last_bucket_ms: self.last_bucket_ms,
            updated_ms: self.updated_ms,
        })
    }
}

impl ScyllaStore {
    fn cusum_statements(&self) -> &Statements {
        &self.prepared.cusum
    }

    /// Upsert `rows`: per topic, those not older than the stored state, one unlogged batch (one
    /// partition: atomic) per last bucket.
    pub(super) async fn write_cusum_rows(&self, rows: &[CusumStateRow]) -> Result<(), StoreError> {
        let fail = |e: BoxError| StoreError::WriteCusumStates { rows: rows.len(), source: e };
        let mut topics: BTreeMap<&str, Vec<&CusumStateRow>> = BTreeMap::new();
        for r in rows {
            topics.entry(&r.topic).or_default().push(r);
        }
        for (topic, rows) in topics {
            let stored = self.stored_buckets(topic).await.map_err(fail)?;
            let mut groups: BTreeMap<EpochMillis, Vec<&CusumStateRow>> = BTreeMap::new();
            for r in rows {
                let newer = stored.get(&(r.tier.clone(), r.signal.clone())).is_some_and(|b| *b > r.last_bucket_ms);
                if !newer {
                    groups.entry(r.last_bucket_ms).or_default().push(r);
                }
            }
            for (bucket, rows) in groups {
                let mut batch = Batch::new(BatchType::Unlogged);
                batch.set_timestamp(Some(super::micros(bucket)));
                batch.set_is_idempotent(true);
                let values: Vec<StateColumns<'_>> = rows.iter().map(|r| StateColumns::encode(r)).collect();
                for _ in &values {
                    batch.append_statement(self.cusum_statements().insert.clone());
                }
                self.session.batch(&batch, values).await.map_err(|e| fail(boxed(e)))?;
            }
        }
        Ok(())
    }

    /// The last bucket of each stored state of `topic`, by (tier, signal).
    async fn stored_buckets(&self, topic: &str) -> Result<HashMap<(String, String), EpochMillis>, BoxError> {
        let st = self.cusum_statements();
        let result = self.session.execute_unpaged(&st.select_buckets, (topic,)).await?;
        let rows = result.into_rows_result()?;
        let mut out = HashMap::new();
        for row in rows.rows::<(String, String, i64)>()? {
            let (tier, signal, bucket) = row?;
            out.insert((tier, signal), bucket);
        }
        Ok(out)
    }

    /// The states of `topic`, or of every topic, by (topic, tier, signal).
    pub(super) async fn read_cusum_rows(&self, topic: Option<&str>) -> Result<Vec<CusumStateRow>, StoreError> {
        let scope = topic.map_or_else(|| "all topics".to_string(), |t| format!("topic {t}"));
        let read = |source: BoxError| StoreError::ReadCusumStates { scope: scope.clone(), source };
        let st = self.cusum_statements();
        let result = match topic {
            Some(t) => self.session.execute_unpaged(&st.select_topic, (t,)).await,
            None => self.session.execute_unpaged(&st.select_all, ()).await,
        }
        .map_err(|e| read(boxed(e)))?;
        let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
        let mut out = Vec::new();
        for row in rows.rows::<StateColumns<'_>>().map_err(|e| read(boxed(e)))? {
            out.push(row.map_err(|e| read(boxed(e)))?.decode()?);
        }
        out.sort_by(|a, b| (&a.topic, &a.tier, &a.signal).cmp(&(&b.topic, &b.tier, &b.signal)));
        Ok(out)
    }
}
