//! The ScyllaDB/Cassandra backend.
//!
//! Prepared statements only; token-aware routing (the driver's default policy); consistency,
//! timeouts and retries from [`ScyllaOptions`]. Every write carries its row's version as the
//! write timestamp, so the cluster's last-write-wins keeps the newest cumulative value whatever the
//! order writes arrive in. Batches are used only where they are atomic by design: one partition
//! (unlogged), or a tap's tallies with its offsets (logged). A flush's progress and heartbeats
//! follow its tallies (module `progress`), never precede them: a clean stop's heartbeat is stored
//! only once the tallies of its batch are.

pub mod config;
mod cusum;
pub mod migrate;
mod owners;
mod progress;
mod records;
mod tls;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt, stream};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::retry::DefaultRetryPolicy;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::{DeserializeRow, SerializeRow};

pub use self::config::{Replication, ScyllaOptions, TlsOptions};
use crate::bucket::{BucketWidth, EpochMillis};
use crate::clock::Clock;
use crate::columns::{TallyColumns, tally_columns};
use crate::progress::{HeartbeatRow, ProgressRow};
use crate::records::{AlertRecord, CusumStateRow, OutboxEntry, VerdictOwnerRow, VerdictRow};
use crate::store::{
    BoxError, Change, Changes, FlushBatch, OffsetRow, Store, StoreError, TallyRow, TopicReports, boxed,
};

/// `tally_sketches` values: topic, bucket start, tier, agent id, version, sketch.
type SketchValues<'a> = (&'a str, i64, &'a str, &'a str, i64, Vec<u8>);

/// The `tally_sketches` values of a row that carries a sketch.
fn sketch_values(row: &TallyRow) -> Option<SketchValues<'_>> {
    let sketch = row.tally.sketch.as_ref()?;
    let k = &row.key;
    Some((&k.topic, k.bucket_start_ms, &k.tier, &k.agent_id, row.version as i64, sketch.to_bytes()))
}

/// Most buckets one `read_range` walks; each is one partition read.
pub const MAX_BUCKETS_PER_READ: i64 = 100_000;
/// Partition reads in flight at once for one `read_range`.
const READ_CONCURRENCY: usize = 16;

const INSERT_TALLY: &str =
    concat!("INSERT INTO tallies (", tally_columns!(), ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
const INSERT_SKETCH: &str =
    "INSERT INTO tally_sketches (topic, bucket_start_ms, tier, agent_id, version, sketch) VALUES (?, ?, ?, ?, ?, ?)";
const SELECT_SKETCHES: &str =
    "SELECT tier, agent_id, version, sketch FROM tally_sketches WHERE topic = ? AND bucket_start_ms = ?";
const INSERT_TOPIC: &str = "INSERT INTO topics (topic, bucket_width_ms) VALUES (?, ?)";
const INSERT_OFFSET: &str =
    "INSERT INTO tap_offsets (agent_id, topic, partition, next_offset, version) VALUES (?, ?, ?, ?, ?)";
const SELECT_BUCKET: &str =
    concat!("SELECT ", tally_columns!(), " FROM tallies WHERE topic = ? AND bucket_start_ms = ?");
const SELECT_AGENT_ROW: &str = concat!(
    "SELECT ",
    tally_columns!(),
    " FROM tallies WHERE topic = ? AND bucket_start_ms = ? AND tier = ? AND agent_id = ?"
);
const SELECT_AGENT_SKETCH: &str = "SELECT tier, agent_id, version, sketch FROM tally_sketches \
                                   WHERE topic = ? AND bucket_start_ms = ? AND tier = ? AND agent_id = ?";
const SELECT_WIDTH: &str = "SELECT bucket_width_ms FROM topics WHERE topic = ?";
const INSERT_CHANGE: &str = "INSERT INTO changes (slot_ms, part, written_ms, topic, bucket_start_ms, tier, agent_id) \
                             VALUES (?, ?, ?, ?, ?, ?, ?)";
const SELECT_CHANGES: &str = "SELECT written_ms, topic, bucket_start_ms, tier, agent_id FROM changes \
                              WHERE slot_ms = ? AND part = ?";
/// The change index's partitions: 10-s slots of write time, each in [`CHANGE_PARTS`] parts by topic.
const CHANGE_SLOT_MS: i64 = 10_000;
const CHANGE_PARTS: i32 = 8;

/// The part of the change index a topic's changes go to (FNV-1a: stable across processes).
fn change_part(topic: &str) -> i32 {
    let hash = topic.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    (hash % CHANGE_PARTS as u32) as i32
}
const SELECT_TOPICS: &str = "SELECT topic FROM topics";
const SELECT_OFFSETS: &str =
    "SELECT agent_id, topic, partition, next_offset, version FROM tap_offsets WHERE agent_id = ?";

/// A `tap_offsets` row as bound and read.
#[derive(SerializeRow, DeserializeRow)]
struct OffsetColumns<'a> {
    agent_id: &'a str,
    topic: &'a str,
    partition: i32,
    next_offset: i64,
    version: i64,
}

impl<'a> OffsetColumns<'a> {
    fn encode(o: &'a OffsetRow) -> Self {
        Self {
            agent_id: &o.agent_id,
            topic: &o.topic,
            partition: o.partition,
            next_offset: o.next_offset,
            version: o.version as i64,
        }
    }

    fn decode(self) -> OffsetRow {
        OffsetRow {
            agent_id: self.agent_id.into(),
            topic: self.topic.into(),
            partition: self.partition,
            next_offset: self.next_offset,
            version: self.version as u64,
        }
    }
}

struct Prepared {
    insert_tally: PreparedStatement,
    insert_topic: PreparedStatement,
    insert_offset: PreparedStatement,
    select_bucket: PreparedStatement,
    insert_sketch: PreparedStatement,
    select_sketches: PreparedStatement,
    select_agent_row: PreparedStatement,
    select_agent_sketch: PreparedStatement,
    select_width: PreparedStatement,
    select_topics: PreparedStatement,
    select_offsets: PreparedStatement,
    insert_change: PreparedStatement,
    select_changes: PreparedStatement,
    records: records::Statements,
    progress: progress::Statements,
    cusum: cusum::Statements,
    owners: owners::Statements,
}

/// Tallies in a Scylla or Cassandra cluster.
#[derive(Clone)]
pub struct ScyllaStore {
    session: Arc<Session>,
    prepared: Arc<Prepared>,
    keyspace: String,
    /// Topics (and widths) this instance has registered: the registry row is written once per
    /// process, not on every flush.
    registered: Arc<Mutex<HashSet<(String, i64)>>>,
}

fn open_err(hosts: &[String], e: BoxError) -> StoreError {
    StoreError::Open { target: format!("scylla://{}", hosts.join(",")), source: e }
}

/// A session to `hosts` with `options`' timeouts, consistency, retries, auth and TLS.
pub async fn connect_session(hosts: &[String], options: &ScyllaOptions) -> Result<Session, StoreError> {
    let consistency = config::parse_consistency(&options.consistency)
        .ok_or_else(|| open_err(hosts, format!("unknown consistency {:?}", options.consistency).into()))?;
    let profile = ExecutionProfile::builder()
        .consistency(consistency)
        .request_timeout(Some(Duration::from_millis(options.request_timeout_ms)))
        .retry_policy(Arc::new(DefaultRetryPolicy::new()))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(hosts)
        .connection_timeout(Duration::from_millis(options.connection_timeout_ms))
        .auto_await_schema_agreement(options.await_schema_agreement)
        .default_execution_profile_handle(profile.into_handle());
    if let (Some(user), Some(password)) =
        (&options.username, options.resolve_password().map_err(|e| open_err(hosts, boxed(e)))?)
    {
        builder = builder.user(user, password.expose());
    }
    if let Some(tls) = &options.tls {
        builder = builder.tls_context(Some(tls::context(tls).map_err(|e| open_err(hosts, e))?));
    }
    builder.build().await.map_err(|e| open_err(hosts, boxed(e)))
}

impl ScyllaStore {
    /// Connect and check the keyspace is migrated (run `kaudit migrate` first).
    pub async fn connect(hosts: &[String], options: &ScyllaOptions) -> Result<Self, StoreError> {
        let session = connect_session(hosts, options).await?;
        Self::from_session(session, hosts, options).await
    }

    /// Use an existing session (tests, or a caller that shares one).
    pub async fn from_session(session: Session, hosts: &[String], options: &ScyllaOptions) -> Result<Self, StoreError> {
        session.use_keyspace(&options.keyspace, false).await.map_err(|e| open_err(hosts, boxed(e)))?;
        let have = migrate::applied_versions(&session).await.map_err(|e| open_err(hosts, boxed(e)))?;
        let need: Vec<u32> = migrate::MIGRATIONS.iter().map(|m| m.0).collect();
        if !need.iter().all(|v| have.contains(v)) {
            let msg =
                format!("keyspace {} has migrations {have:?}, needs {need:?}: run `kaudit migrate`", options.keyspace);
            return Err(open_err(hosts, msg.into()));
        }
        let prepare = |cql: &'static str| {
            let session = &session;
            async move { prepare_idempotent(session, cql).await.map_err(|e| open_err(hosts, boxed(e))) }
        };
        let prepared = Prepared {
            insert_tally: prepare(INSERT_TALLY).await?,
            insert_topic: prepare(INSERT_TOPIC).await?,
            insert_offset: prepare(INSERT_OFFSET).await?,
            select_bucket: prepare(SELECT_BUCKET).await?,
            insert_sketch: prepare(INSERT_SKETCH).await?,
            select_sketches: prepare(SELECT_SKETCHES).await?,
            select_agent_row: prepare(SELECT_AGENT_ROW).await?,
            select_agent_sketch: prepare(SELECT_AGENT_SKETCH).await?,
            select_width: prepare(SELECT_WIDTH).await?,
            select_topics: prepare(SELECT_TOPICS).await?,
            select_offsets: prepare(SELECT_OFFSETS).await?,
            insert_change: prepare(INSERT_CHANGE).await?,
            select_changes: prepare(SELECT_CHANGES).await?,
            records: records::Statements::prepare(&session).await.map_err(|e| open_err(hosts, boxed(e)))?,
            progress: progress::Statements::prepare(&session).await.map_err(|e| open_err(hosts, boxed(e)))?,
            cusum: cusum::Statements::prepare(&session).await.map_err(|e| open_err(hosts, boxed(e)))?,
            owners: owners::Statements::prepare(&session).await.map_err(|e| open_err(hosts, boxed(e)))?,
        };
        Ok(Self {
            session: Arc::new(session),
            prepared: Arc::new(prepared),
            keyspace: options.keyspace.clone(),
            registered: Arc::default(),
        })
    }

    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// One topic's reports (for [`Store::read_reports`]).
    async fn reports_of(&self, topic: &str) -> Result<TopicReports, StoreError> {
        let progress = self.progress_of(topic).await?;
        let heartbeats = self.heartbeats_of(topic).await?;
        Ok(TopicReports { topic: topic.to_string(), progress, heartbeats })
    }

    /// The batch's change-index rows, stamped with this host's clock.
    async fn write_changes(&self, batch: &FlushBatch) -> Result<(), scylla::errors::ExecutionError> {
        let written_ms = crate::clock::SystemClock.now_ms();
        let slot_ms = written_ms - written_ms.rem_euclid(CHANGE_SLOT_MS);
        let keys = batch.change_keys();
        let mut writes = Vec::with_capacity(keys.len());
        for (topic, bucket, tier, agent) in keys {
            let values = (slot_ms, change_part(topic), written_ms, topic, bucket, tier, agent);
            writes.push(self.session.execute_unpaged(&self.prepared.insert_change, values));
        }
        stream::iter(writes).buffer_unordered(READ_CONCURRENCY).try_collect::<Vec<_>>().await?;
        Ok(())
    }

    /// The change rows of one partition of the index from `since_ms` on (a partition holds 10 s
    /// of writes: read whole, filtered here).
    async fn changes_in(&self, slot_ms: i64, part: i32, since_ms: i64) -> Result<Vec<Change>, StoreError> {
        let read = |source| StoreError::ReadChanges { since_ms, source };
        let result = self
            .session
            .execute_unpaged(&self.prepared.select_changes, (slot_ms, part))
            .await
            .map_err(|e| read(boxed(e)))?;
        let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
        let mut out = Vec::new();
        for row in rows.rows::<(i64, String, i64, String, String)>().map_err(|e| read(boxed(e)))? {
            let (written_ms, topic, bucket_start_ms, tier, agent_id) = row.map_err(|e| read(boxed(e)))?;
            if written_ms >= since_ms {
                out.push(Change { written_ms, topic, bucket_start_ms, tier, agent_id });
            }
        }
        Ok(out)
    }

    async fn write_group(
        &self,
        version: u64,
        rows: &[&TallyRow],
        offsets: &[&OffsetRow],
    ) -> Result<(), scylla::errors::ExecutionError> {
        let ts = Some(version.min(i64::MAX as u64) as i64);
        if !offsets.is_empty() {
            // A tap's tallies and offsets: all or nothing, so a restart resumes exactly.
            let mut batch = Batch::new(BatchType::Logged);
            batch.set_timestamp(ts);
            batch.set_is_idempotent(true);
            let mut values: Vec<Box<dyn scylla::serialize::row::SerializeRow + Send + Sync + '_>> = Vec::new();
            for row in rows {
                batch.append_statement(self.prepared.insert_tally.clone());
                values.push(Box::new(TallyColumns::encode(row)));
                if let Some(sketch) = sketch_values(row) {
                    batch.append_statement(self.prepared.insert_sketch.clone());
                    values.push(Box::new(sketch));
                }
            }
            for o in offsets {
                batch.append_statement(self.prepared.insert_offset.clone());
                values.push(Box::new(OffsetColumns::encode(o)));
            }
            self.session.batch(&batch, values).await?;
            return Ok(());
        }
        // Otherwise one unlogged batch per partition (atomic there), partitions in parallel.
        let mut partitions: BTreeMap<(&str, i64), Vec<&TallyRow>> = BTreeMap::new();
        for row in rows {
            partitions.entry((&row.key.topic, row.key.bucket_start_ms)).or_default().push(row);
        }
        let mut writes = Vec::with_capacity(partitions.len());
        for rows in partitions.into_values() {
            writes.push(self.write_partition(ts, rows));
        }
        stream::iter(writes).buffer_unordered(READ_CONCURRENCY).try_collect::<Vec<()>>().await?;
        Ok(())
    }

    async fn write_partition(
        &self,
        ts: Option<i64>,
        rows: Vec<&TallyRow>,
    ) -> Result<(), scylla::errors::ExecutionError> {
        if let [row] = rows.as_slice()
            && row.tally.sketch.is_none()
        {
            let mut stmt = self.prepared.insert_tally.clone();
            stmt.set_timestamp(ts);
            self.session.execute_unpaged(&stmt, TallyColumns::encode(row)).await?;
            return Ok(());
        }
        // The rows and their sketches (same partition key, two tables) in one unlogged batch.
        let mut batch = Batch::new(BatchType::Unlogged);
        batch.set_timestamp(ts);
        batch.set_is_idempotent(true);
        let mut values: Vec<Box<dyn scylla::serialize::row::SerializeRow + Send + Sync + '_>> = Vec::new();
        for row in rows {
            batch.append_statement(self.prepared.insert_tally.clone());
            values.push(Box::new(TallyColumns::encode(row)));
            if let Some(sketch) = sketch_values(row) {
                batch.append_statement(self.prepared.insert_sketch.clone());
                values.push(Box::new(sketch));
            }
        }
        self.session.batch(&batch, values).await?;
        Ok(())
    }

    async fn register_topics(&self, batch: &FlushBatch) -> Result<(), scylla::errors::ExecutionError> {
        let new: Vec<(String, i64)> = {
            let known = self.registered.lock().expect("topic cache poisoned");
            let mut new: Vec<(String, i64)> = batch
                .rows
                .iter()
                .map(|r| (r.key.topic.clone(), r.bucket_width_ms))
                .filter(|t| !known.contains(t))
                .collect();
            new.sort_unstable();
            new.dedup();
            new
        };
        let mut writes = Vec::with_capacity(new.len());
        for (topic, width) in &new {
            writes.push(self.session.execute_unpaged(&self.prepared.insert_topic, (topic.as_str(), *width)));
        }
        stream::iter(writes).buffer_unordered(READ_CONCURRENCY).try_collect::<Vec<_>>().await?;
        self.registered.lock().expect("topic cache poisoned").extend(new);
        Ok(())
    }

    /// Starts of the buckets of `topic` in `[from_ms, to_ms)`, by the width its agents registered.
    async fn buckets_in(
        &self,
        topic: &str,
        from_ms: EpochMillis,
        to_ms: EpochMillis,
    ) -> Result<Vec<EpochMillis>, StoreError> {
        let read = |source| StoreError::ReadBucketWidth { topic: topic.into(), source };
        let result =
            self.session.execute_unpaged(&self.prepared.select_width, (topic,)).await.map_err(|e| read(boxed(e)))?;
        let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
        let Some((width,)) = rows.maybe_first_row::<(i64,)>().map_err(|e| read(boxed(e)))? else {
            return Ok(Vec::new()); // a topic nobody has written
        };
        let width = BucketWidth::from_millis(width as u64)
            .ok_or_else(|| StoreError::Corrupt { topic: topic.into(), reason: format!("bucket width {width}") })?;
        let first = width.start_of(from_ms);
        let count = (to_ms.saturating_sub(first)).max(0) / width.as_millis() + 1;
        if count > MAX_BUCKETS_PER_READ {
            return Err(StoreError::RangeTooLarge { topic: topic.into(), buckets: count, max: MAX_BUCKETS_PER_READ });
        }
        Ok((0..count).map(|i| first + i * width.as_millis()).filter(|b| *b >= from_ms && *b < to_ms).collect())
    }

    async fn read_bucket(&self, topic: &str, bucket: EpochMillis) -> Result<Vec<TallyRow>, StoreError> {
        // One after the other: buckets are read concurrently already, and two requests in flight
        // at once per bucket made the single-threaded test server 3× slower, not faster.
        let tallies = self.session.execute_unpaged(&self.prepared.select_bucket, (topic, bucket)).await;
        let sketches = self.session.execute_unpaged(&self.prepared.select_sketches, (topic, bucket)).await;
        join_sketches(topic, tallies, sketches)
    }

    /// One agent's row of (topic, tier) in one bucket, if stored.
    async fn read_agent_bucket(
        &self,
        (topic, tier, agent_id): (&str, &str, &str),
        bucket: EpochMillis,
    ) -> Result<Vec<TallyRow>, StoreError> {
        let key = (topic, bucket, tier, agent_id);
        let tallies = self.session.execute_unpaged(&self.prepared.select_agent_row, key).await;
        let sketches = self.session.execute_unpaged(&self.prepared.select_agent_sketch, key).await;
        join_sketches(topic, tallies, sketches)
    }
}

/// Tally rows with the sketch stored with each one's very version.
fn join_sketches(
    topic: &str,
    tallies: Result<scylla::response::query_result::QueryResult, scylla::errors::ExecutionError>,
    sketches: Result<scylla::response::query_result::QueryResult, scylla::errors::ExecutionError>,
) -> Result<Vec<TallyRow>, StoreError> {
    let read = |source| StoreError::ReadTallies { topic: topic.into(), source };
    let sketches = sketches.map_err(|e| read(boxed(e)))?.into_rows_result().map_err(|e| read(boxed(e)))?;
    let mut by_key: HashMap<(String, String), (i64, Vec<u8>)> = HashMap::new();
    for row in sketches.rows::<(String, String, i64, Vec<u8>)>().map_err(|e| read(boxed(e)))? {
        let (tier, agent_id, version, sketch) = row.map_err(|e| read(boxed(e)))?;
        by_key.insert((tier, agent_id), (version, sketch));
    }
    let rows = tallies.map_err(|e| read(boxed(e)))?.into_rows_result().map_err(|e| read(boxed(e)))?;
    let mut out = Vec::new();
    for row in rows.rows::<TallyColumns<'_>>().map_err(|e| read(boxed(e)))? {
        let mut row = row.map_err(|e| read(boxed(e)))?.decode()?;
        // Only the sketch written with this very version of the row (a newer write may have
        // reached one table and not yet the other).
        let sketch = by_key
            .get(&(row.key.tier.clone(), row.key.agent_id.clone()))
            .filter(|(version, _)| *version == row.version as i64)
            .map(|(_, bytes)| bytes.as_slice());
        row.tally.sketch = crate::columns::decode_sketch(&row.key.topic, sketch)?;
        out.push(row);
    }
    Ok(out)
}

#[async_trait]
impl Store for ScyllaStore {
    async fn write(&self, batch: &FlushBatch) -> Result<(), StoreError> {
        let fail = |e| StoreError::WriteTallies { rows: batch.rows.len(), source: boxed(e) };
        // Group by version: a fresh snapshot is one group; a compacted spool batch may be several.
        let mut groups: BTreeMap<u64, (Vec<&TallyRow>, Vec<&OffsetRow>)> = BTreeMap::new();
        for row in &batch.rows {
            groups.entry(row.version).or_default().0.push(row);
        }
        for o in &batch.offsets {
            groups.entry(o.version).or_default().1.push(o);
        }
        self.register_topics(batch).await.map_err(fail)?;
        for (version, (rows, offsets)) in groups {
            self.write_group(version, &rows, &offsets).await.map_err(fail)?;
        }

        self.write_progress(&batch.progress, &batch.heartbeats).await.map_err(fail)?;
        // After the tallies and reports, never before: a change read means what it points at is
        // stored. A failure fails the batch, which is retried whole.
        self.write_changes(batch).await.map_err(fail)?;
        Ok(())
    }

    async fn read_range(
        &self,
        topic: &str,
        from_ms: EpochMillis,
        to_ms: EpochMillis,
    ) -> Result<Vec<TallyRow>, StoreError> {
        let mut reads = Vec::new();
        for bucket in self.buckets_in(topic, from_ms, to_ms).await? {
            reads.push(self.read_bucket(topic, bucket));
        }
        let mut out: Vec<TallyRow> = stream::iter(reads).buffered(READ_CONCURRENCY).try_concat().await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn read_agent_range(
        &self,
        topic: &str,
        tier: &str,
        agent_id: &str,
        from_ms: EpochMillis,
        to_ms: EpochMillis,
    ) -> Result<Vec<TallyRow>, StoreError> {
        let mut reads = Vec::new();
        for bucket in self.buckets_in(topic, from_ms, to_ms).await? {
            reads.push(self.read_agent_bucket((topic, tier, agent_id), bucket));
        }
        let mut out: Vec<TallyRow> = stream::iter(reads).buffered(READ_CONCURRENCY).try_concat().await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn list_topics(&self) -> Result<Vec<String>, StoreError> {
        let read = |source| StoreError::ReadTopics { source };
        let result =
            self.session.execute_unpaged(&self.prepared.select_topics, ()).await.map_err(|e| read(boxed(e)))?;
        let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
        let mut topics = Vec::new();
        for row in rows.rows::<(String,)>().map_err(|e| read(boxed(e)))? {
            topics.push(row.map_err(|e| read(boxed(e)))?.0);
        }
        topics.sort();
        Ok(topics)
    }

    async fn read_progress(&self, topic: &str) -> Result<Vec<ProgressRow>, StoreError> {
        self.progress_of(topic).await
    }

    async fn read_changes(&self, since_ms: EpochMillis) -> Result<Changes, StoreError> {
        let until_ms = crate::clock::SystemClock.now_ms();
        let since_ms = since_ms.max(until_ms - crate::store::CHANGE_RETENTION_MS);
        let first_slot = since_ms - since_ms.rem_euclid(CHANGE_SLOT_MS);
        let mut reads = Vec::new();
        for slot_ms in (first_slot..=until_ms).step_by(CHANGE_SLOT_MS as usize) {
            for part in 0..CHANGE_PARTS {
                reads.push(self.changes_in(slot_ms, part, since_ms));
            }
        }
        // Each (topic, bucket) once, with its latest write: agents rewrite open rows and reports
        // every flush, so the slots hold many writes of few keys.
        let mut partitions = stream::iter(reads).buffer_unordered(READ_CONCURRENCY);
        let mut fold = crate::store::ChangeFold::default();
        while let Some(partition) = partitions.next().await {
            partition?.iter().for_each(|c| fold.add(&c.topic, c.bucket_start_ms, c.written_ms));
        }
        Ok(fold.finish(until_ms))
    }

    async fn read_heartbeats(&self, topic: &str) -> Result<Vec<HeartbeatRow>, StoreError> {
        self.heartbeats_of(topic).await
    }

    /// The topics' partitions read concurrently.
    async fn read_reports(&self, topics: &[String]) -> Result<Vec<TopicReports>, StoreError> {
        let mut reads = Vec::with_capacity(topics.len());
        for topic in topics {
            reads.push(self.reports_of(topic));
        }
        stream::iter(reads).buffered(READ_CONCURRENCY).try_collect().await
    }

    async fn load_offsets(&self, agent_id: &str) -> Result<Vec<OffsetRow>, StoreError> {
        let read = |source| StoreError::ReadOffsets { agent_id: agent_id.into(), source };
        let result = self
            .session
            .execute_unpaged(&self.prepared.select_offsets, (agent_id,))
            .await
            .map_err(|e| read(boxed(e)))?;
        let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
        let mut out = Vec::new();
        for row in rows.rows::<OffsetColumns<'_>>().map_err(|e| read(boxed(e)))? {
            out.push(row.map_err(|e| read(boxed(e)))?.decode());
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    async fn write_verdicts(&self, rows: &[VerdictRow]) -> Result<(), StoreError> {
        self.write_verdict_rows(rows).await
    }

    async fn read_verdicts(
        &self,
        topic: &str,
        from_ms: EpochMillis,
        to_ms: EpochMillis,
    ) -> Result<Vec<VerdictRow>, StoreError> {
        let mut reads = Vec::new();
        for bucket in self.buckets_in(topic, from_ms, to_ms).await? {
            reads.push(self.read_verdict_bucket(topic, bucket));
        }
        let mut out: Vec<VerdictRow> = stream::iter(reads).buffered(READ_CONCURRENCY).try_concat().await?;
        out.sort_by(|a, b| (a.bucket_start_ms, &a.tier).cmp(&(b.bucket_start_ms, &b.tier)));
        Ok(out)
    }

    async fn record_alert(&self, alert: &AlertRecord, notifications: &[OutboxEntry]) -> Result<(), StoreError> {
        self.record_alert_batch(alert, notifications).await
    }

    async fn list_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.all_alerts().await
    }

    async fn outbox(&self, sink: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_entries(sink, limit).await
    }

    async fn ack_notification(&self, sink: &str, seq: i64) -> Result<(), StoreError> {
        self.delete_notification(sink, seq).await
    }

    async fn trim_outbox(&self, sink: &str, max: usize) -> Result<usize, StoreError> {
        self.trim_sink(sink, max).await
    }

    async fn record_attempt(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        self.put_notification(entry).await
    }

    async fn write_cusum_states(&self, rows: &[CusumStateRow]) -> Result<(), StoreError> {
        self.write_cusum_rows(rows).await
    }

    async fn read_cusum_states(&self, topic: Option<&str>) -> Result<Vec<CusumStateRow>, StoreError> {
        self.read_cusum_rows(topic).await
    }

    async fn write_verdict_owners(&self, rows: &[VerdictOwnerRow]) -> Result<(), StoreError> {
        self.write_owner_rows(rows).await
    }

    async fn read_verdict_owners(&self, topic: Option<&str>) -> Result<Vec<VerdictOwnerRow>, StoreError> {
        self.read_owner_rows(topic).await
    }
}

/// Prepare `cql` as idempotent: every statement kaudit sends is an upsert or a read, safe for the
/// driver to retry.
pub(super) async fn prepare_idempotent(
    session: &Session,
    cql: impl Into<String>,
) -> Result<PreparedStatement, scylla::errors::PrepareError> {
    let mut statement = session.prepare(cql.into()).await?;
    statement.set_is_idempotent(true);
    Ok(statement)
}

/// A write timestamp (µs, what CQL keeps) from a time in ms.
pub(super) fn micros(ms: EpochMillis) -> i64 {
    ms.saturating_mul(1_000)
}
