//! The bounded on-disk spool: flush batches waiting for the store, one file each, replayed in order.
//!
//! A segment is written to a temporary name, fsynced, renamed, and the directory fsynced, so a
//! crash leaves whole, durable segments only (an appended batch survives `kill -9` and power loss:
//! durable ingest acknowledgements rest on it); a restarted agent replays what its predecessor left
//! (its rows keep their old agent id and version, so replay is harmless if they had landed after
//! all).
//!
//! When appending would pass `max_bytes`, the spool first *compacts*: every row is cumulative, so
//! of all the spooled versions of a key only the newest matters, and the whole spool collapses to
//! one segment with one row per key. Only if that is still too big are the oldest segments dropped
//! ([`Spool::append`]), which loses audit data: it is logged at ERROR and counted; or the batch is
//! refused ([`Spool::append_durable`], for durable acknowledgements, which must not drop what was
//! acknowledged). A single batch larger than `max_bytes` is refused either way
//! ([`SpoolError::TooLarge`]): no segment larger than the bound is ever written.
//!
//! An entry that cannot be read or decoded (a truncated file, a directory with a segment's name) is
//! moved to `<spool>/quarantine/`, logged once at ERROR and counted ([`Spool::take_quarantined`]),
//! never retried: the spool goes on with the next segment. If even the move fails, the entry is
//! forgotten until the next start.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use kaudit_schema::progress::{HeartbeatRow, ProgressRow, StreamId};
use kaudit_schema::{FlushBatch, OffsetRow, TallyKey, TallyRow};

/// A spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory or a segment could not be read or written.
    #[error("spool i/o on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A segment exists but cannot be decoded.
    #[error("spool segment {path} is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// One batch is larger than the whole spool may be.
    #[error("a flush batch of {bytes} bytes is larger than the spool's bound of {max_bytes} bytes")]
    TooLarge { bytes: u64, max_bytes: u64 },
    /// The spool is full even compacted, and may not drop older batches to make room.
    #[error("the spool is full ({bytes} of {max_bytes} bytes, compacted) and may not drop acknowledged batches")]
    Full { bytes: u64, max_bytes: u64 },
}

/// Name of the directory unreadable entries are moved to.
pub const QUARANTINE_DIR: &str = "quarantine";

/// What an append had to give up to stay within bounds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub compacted: bool,
    pub dropped_rows: usize,
}

/// Segments on disk, oldest first.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segments: BTreeMap<u64, u64>, // sequence -> size in bytes
    next_seq: u64,
    /// Entries quarantined since the last [`Spool::take_quarantined`].
    quarantined: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

impl Spool {
    /// Open the spool in `dir` (creating it), picking up segments left by a previous run. An entry
    /// with a segment's name that is not a file is quarantined.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut spool =
            Self { dir: dir.to_path_buf(), max_bytes, segments: BTreeMap::new(), next_seq: 0, quarantined: 0 };
        let mut odd = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(seq) = name.to_str().and_then(|n| n.strip_suffix(".batch")).and_then(|n| n.parse().ok()) else {
                continue; // temporary files of an interrupted write, the quarantine, or foreign files
            };
            spool.next_seq = spool.next_seq.max(seq + 1);
            match entry.metadata() {
                Ok(meta) if meta.is_file() => {
                    spool.segments.insert(seq, meta.len());
                }
                Ok(_) => odd.push((seq, "not a regular file".to_string())),
                Err(e) => odd.push((seq, e.to_string())),
            }
        }
        for (seq, why) in odd {
            spool.quarantine(seq, &why);
        }
        Ok(spool)
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.batch"))
    }

    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.values().sum()
    }

    /// The bound on [`Spool::bytes`].
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Entries moved to the quarantine since the last call.
    pub fn take_quarantined(&mut self) -> u64 {
        std::mem::take(&mut self.quarantined)
    }

    /// Append `batch` as the newest segment, compacting or dropping the oldest to stay in bounds.
    pub fn append(&mut self, batch: &FlushBatch) -> Result<AppendOutcome, SpoolError> {
        let encoded = self.encode(batch)?;
        let mut outcome = AppendOutcome::default();
        if self.bytes() + encoded.len() as u64 > self.max_bytes && !self.is_empty() {
            self.compact()?;
            outcome.compacted = true;
        }
        while self.bytes() + encoded.len() as u64 > self.max_bytes && !self.is_empty() {
            let dropped = self.pop_front()?.map_or(0, |b| b.rows.len());
            outcome.dropped_rows += dropped;
        }
        self.write_segment(&encoded)?;
        Ok(outcome)
    }

    /// Append `batch` without dropping anything: compact if need be, and refuse
    /// ([`SpoolError::Full`]) if it still does not fit. Once this returns `Ok`, the batch is on disk
    /// (fsynced).
    pub fn append_durable(&mut self, batch: &FlushBatch) -> Result<AppendOutcome, SpoolError> {
        let encoded = self.encode(batch)?;
        let fits = |s: &Self| s.bytes() + encoded.len() as u64 <= s.max_bytes;
        let mut outcome = AppendOutcome::default();
        if !fits(self) && !self.is_empty() {
            self.compact()?;
            outcome.compacted = true;
        }
        if !fits(self) {
            return Err(SpoolError::Full { bytes: self.bytes(), max_bytes: self.max_bytes });
        }
        self.write_segment(&encoded)?;
        Ok(outcome)
    }

    fn encode(&self, batch: &FlushBatch) -> Result<Vec<u8>, SpoolError> {
        let encoded = serde_json::to_vec(batch).expect("flush batches always serialise");
        match encoded.len() as u64 {
            bytes if bytes > self.max_bytes => Err(SpoolError::TooLarge { bytes, max_bytes: self.max_bytes }),
            _ => Ok(encoded),
        }
    }

    /// Write, fsync, rename, fsync the directory: once this returns, the segment survives a crash.
    fn write_segment(&mut self, encoded: &[u8]) -> Result<(), SpoolError> {
        let seq = self.next_seq;
        let path = self.path(seq);
        let tmp = path.with_extension("tmp");
        let write = || -> io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            io::Write::write_all(&mut file, encoded)?;
            file.sync_all()
        };
        write().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        self.segments.insert(seq, encoded.len() as u64);
        self.next_seq += 1;
        Ok(())
    }

    /// Read and decode segment `seq`.
    fn read(&self, seq: u64) -> Result<FlushBatch, SpoolError> {
        let path = self.path(seq);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&bytes).map_err(|source| SpoolError::Corrupt { path, source })
    }

    /// Move segment `seq` to the quarantine (or, failing that, forget it until the next start),
    /// logged once and counted.
    fn quarantine(&mut self, seq: u64, why: &str) {
        let path = self.path(seq);
        let dir = self.dir.join(QUARANTINE_DIR);
        let target = dir.join(format!("{seq:020}.batch.{}", rand::random::<u32>()));
        let moved = fs::create_dir_all(&dir).and_then(|()| fs::rename(&path, &target));
        match moved {
            Ok(()) => tracing::error!(
                path = %path.display(),
                quarantined = %target.display(),
                why,
                "unreadable spool entry moved to the quarantine; its audit rows are not replayed"
            ),
            Err(error) => tracing::error!(
                path = %path.display(),
                why,
                %error,
                "unreadable spool entry cannot be moved to the quarantine; ignored until the next start"
            ),
        }
        self.segments.remove(&seq);
        self.quarantined += 1;
    }

    /// The oldest batch, without removing it. Entries that cannot be read or decoded are
    /// quarantined on the way; `Err` only if the spool's directory itself fails.
    pub fn front(&mut self) -> Result<Option<FlushBatch>, SpoolError> {
        while let Some(seq) = self.segments.keys().next().copied() {
            match self.read(seq) {
                Ok(batch) => return Ok(Some(batch)),
                Err(e) => self.quarantine(seq, &kaudit_schema::error_chain(&e)),
            }
        }
        Ok(None)
    }

    /// Remove and return the oldest batch.
    pub fn pop_front(&mut self) -> Result<Option<FlushBatch>, SpoolError> {
        let batch = self.front()?;
        if let Some(seq) = self.segments.keys().next().copied() {
            let path = self.path(seq);
            fs::remove_file(&path).map_err(io_err(&path))?;
            self.segments.remove(&seq);
        }
        Ok(batch)
    }

    /// Collapse every segment into one holding only the newest version of each row and offset.
    pub fn compact(&mut self) -> Result<(), SpoolError> {
        let mut batches = Vec::with_capacity(self.len());
        let seqs: Vec<u64> = self.segments.keys().copied().collect();
        for seq in seqs {
            match self.read(seq) {
                Ok(b) => batches.push(b),
                Err(e) => self.quarantine(seq, &kaudit_schema::error_chain(&e)),
            }
        }
        if batches.is_empty() {
            return Ok(());
        }
        let merged = compact_batches(batches);
        let encoded = serde_json::to_vec(&merged).expect("flush batches always serialise");
        let old: Vec<u64> = self.segments.keys().copied().collect();
        self.write_segment(&encoded)?;
        for seq in old {
            let path = self.path(seq);
            fs::remove_file(&path).map_err(io_err(&path))?;
            self.segments.remove(&seq);
        }
        Ok(())
    }
}

/// Make a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Newest version of every row, offset, progress report and heartbeat across `batches`: the same
/// store state, fewer writes.
pub fn compact_batches(batches: impl IntoIterator<Item = FlushBatch>) -> FlushBatch {
    let mut rows: HashMap<TallyKey, TallyRow> = HashMap::new();
    let mut offsets: HashMap<(String, String, i32), OffsetRow> = HashMap::new();
    let mut progress: HashMap<(String, String, StreamId), ProgressRow> = HashMap::new();
    let mut heartbeats: HashMap<(String, String, String), HeartbeatRow> = HashMap::new();
    for batch in batches {
        for row in batch.rows {
            keep_newest(&mut rows, row.key.clone(), row, |r| r.version);
        }
        for o in batch.offsets {
            keep_newest(&mut offsets, (o.agent_id.clone(), o.topic.clone(), o.partition), o, |o| o.version);
        }
        for p in batch.progress {
            keep_newest(&mut progress, (p.topic.clone(), p.tier.clone(), p.stream.clone()), p, |p| p.version);
        }
        for h in batch.heartbeats {
            keep_newest(&mut heartbeats, (h.topic.clone(), h.tier.clone(), h.agent_id.clone()), h, |h| h.version);
        }
    }
    let mut rows: Vec<TallyRow> = rows.into_values().collect();
    rows.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    let mut offsets: Vec<OffsetRow> = offsets.into_values().collect();
    offsets.sort_unstable_by(|a, b| (&a.agent_id, &a.topic, a.partition).cmp(&(&b.agent_id, &b.topic, b.partition)));
    let mut progress: Vec<ProgressRow> = progress.into_values().collect();
    progress.sort_unstable_by(|a, b| (&a.topic, &a.tier, &a.stream).cmp(&(&b.topic, &b.tier, &b.stream)));
    let mut heartbeats: Vec<HeartbeatRow> = heartbeats.into_values().collect();
    heartbeats.sort_unstable_by(|a, b| (&a.topic, &a.tier, &a.agent_id).cmp(&(&b.topic, &b.tier, &b.agent_id)));
    FlushBatch { rows, offsets, progress, heartbeats }
}

/// Insert `value` under `key` unless a newer version is there; equal versions: the later wins.
fn keep_newest<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V, version: impl Fn(&V) -> u64) {
    match map.get(&key) {
        Some(old) if version(old) > version(&value) => {}
        _ => {
            map.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests;
