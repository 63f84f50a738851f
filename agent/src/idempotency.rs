//! `Idempotency-Key` for `POST /v1/records`: a retried request counts once.
//!
//! A key (1–128 printable ASCII characters) is remembered with the SHA-256 of its body and the
//! answer, for a window (default 10 min) and up to a number of keys (default 100,000; the oldest
//! is forgotten first). Only SHA-256 digests are kept, about 200 bytes a key.
//!
//! * A key not seen: the request proceeds. If its records are counted, the key is remembered;
//!   if the request is refused (400, 422: nothing counted), the key is free again.
//! * The same key and body again: nothing is counted; the answer is the first one (200 with its
//!   counts and `Idempotent-Replayed: true`) once those records are durable. If the first attempt
//!   timed out waiting for durability (503), the retry waits again and answers 200 as soon as they
//!   are: a 503 never needs a new key.
//! * The same key with another body: 422. While the first request with a key is still being
//!   handled: 409 (retry later).
//!
//! ## Across a restart
//! With durable acknowledgements and a journal file, a key is appended to the journal (and the
//! journal fsynced) by the flusher *after* its records are durable and *before* its answer is
//! released ([`crate::ack::DurableHook`]); a restarted agent loads the journal (keys within the
//! window). So a client that got its answer and retries against a restarted agent is answered from
//! the journal and counts nothing. The one gap: a crash after the records became durable and
//! before the journal's fsync completed, i.e. before any answer was sent; a retry then counts the
//! records a second time (the first copy replays from the spool or is already in the store). The
//! reverse (a key persisted whose records were lost) cannot happen: the key is written after them.
//! Without durable acknowledgements, keys live in memory only and a restart forgets them.
//!
//! UDP has no idempotency: a datagram gets no answer, so a client has nothing to retry on, and a
//! key per line would cost a cache entry per record without making loss or duplication detectable.
//!
//! Lock order: `pending` (held while counting into the auditor, so the flusher cannot publish a
//! snapshot holding the records before their key is pending), then the auditor's table; `cache`
//! and `journal` are taken alone.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hashbrown::HashMap;
use kaudit_schema::EpochMillis;
use sha2::{Digest as _, Sha256};

use crate::ack::DurableHook;
use crate::clock::Clock;

/// Longest key accepted, bytes.
pub const MAX_KEY_LEN: usize = 128;

type Digest = [u8; 32];

fn sha256(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

/// Check an `Idempotency-Key` header value: 1–128 printable ASCII characters.
pub fn check_key(value: &[u8]) -> Result<(), String> {
    if (1..=MAX_KEY_LEN).contains(&value.len()) && value.iter().all(|b| (0x20..=0x7e).contains(b)) {
        Ok(())
    } else {
        Err(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters (got {} bytes)",
            value.len()
        ))
    }
}

/// What a counted request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Records and progress records counted.
    pub accepted: u64,
    /// Progress records among them.
    pub progress: u64,
    /// Snapshot sequence that must be durable before answering (0: durable already).
    pub needs: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: Digest,
    body: Digest,
    at_ms: EpochMillis,
    answer: Answer,
}

enum Slot {
    InProgress { at_ms: EpochMillis },
    Counted(Entry),
}

impl Slot {
    fn at_ms(&self) -> EpochMillis {
        match self {
            Slot::InProgress { at_ms, .. } => *at_ms,
            Slot::Counted(e) => e.at_ms,
        }
    }
}

#[derive(Default)]
struct Cache {
    map: HashMap<Digest, Slot>,
    /// Keys by time of first sight, oldest first (entries whose key was released since are
    /// skipped when they come up).
    order: VecDeque<(Digest, EpochMillis)>,
}

impl Cache {
    fn evict(&mut self, oldest_kept_ms: EpochMillis, max_keys: usize) {
        while let Some(&(key, at_ms)) = self.order.front() {
            let current = self.map.get(&key).map(Slot::at_ms);
            if current != Some(at_ms) {
                self.order.pop_front(); // released or replaced: a stale entry
            } else if at_ms < oldest_kept_ms || self.map.len() > max_keys {
                self.order.pop_front();
                self.map.remove(&key);
            } else {
                break;
            }
        }
    }

    fn insert(&mut self, key: Digest, slot: Slot) {
        let at_ms = slot.at_ms();
        if self.map.insert(key, slot).is_none_or(|old| old.at_ms() != at_ms) {
            self.order.push_back((key, at_ms));
        }
    }
}

/// How long and how many keys to remember, and where to persist them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyOptions {
    pub window_ms: u64,
    pub max_keys: usize,
    /// Journal of keys whose records are durable; `None`: memory only.
    pub journal: Option<PathBuf>,
}

impl Default for IdempotencyOptions {
    fn default() -> Self {
        Self { window_ms: 600_000, max_keys: 100_000, journal: None }
    }
}

/// The key cache. Cheap to clone.
#[derive(Clone)]
pub struct Idempotency {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    window_ms: i64,
    max_keys: usize,
    cache: Mutex<Cache>,
    /// Counted, not yet journaled (only with a journal).
    pending: Mutex<Vec<Entry>>,
    journal: Option<Mutex<Journal>>,
}

/// What [`Idempotency::begin`] found.
pub enum Begin {
    /// A new key: proceed, and count through the ticket.
    New(Ticket),
    /// Counted before with the same body: answer this (once `needs` is durable), count nothing.
    Replay(Answer),
    /// Counted before with another body.
    Conflict,
    /// A request with this key is being handled now.
    InProgress,
}

/// A key held by the request handling it; dropped without [`Ticket::count`] succeeding, the key
/// is free again.
pub struct Ticket {
    idem: Idempotency,
    key: Digest,
    body: Digest,
    at_ms: EpochMillis,
    counted: bool,
}

impl Idempotency {
    /// A cache with `options`, loading the journal (if any) left by a previous run.
    pub fn open(options: &IdempotencyOptions, clock: Arc<dyn Clock>) -> io::Result<Self> {
        let window_ms = options.window_ms.min(i64::MAX as u64) as i64;
        let oldest_kept = clock.now_ms().saturating_sub(window_ms);
        let mut cache = Cache::default();
        let journal = match &options.journal {
            Some(path) => {
                let loaded = Journal::load(path, oldest_kept, options.max_keys)?;
                for e in &loaded {
                    cache.insert(e.key, Slot::Counted(*e));
                }
                Some(Mutex::new(Journal::rewrite(path, &loaded)?))
            }
            None => None,
        };
        let inner = Inner {
            clock,
            window_ms,
            max_keys: options.max_keys,
            cache: Mutex::new(cache),
            pending: Mutex::default(),
            journal,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Keys remembered now (in progress or counted).
    pub fn len(&self) -> usize {
        self.cache().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.inner.cache.lock().expect("idempotency cache poisoned")
    }

    /// Look `key` up for a request with `body`.
    pub fn begin(&self, key: &[u8], body: &[u8]) -> Begin {
        let (key, body) = (sha256(key), sha256(body));
        let now = self.inner.clock.now_ms();
        let mut cache = self.cache();
        cache.evict(now.saturating_sub(self.inner.window_ms), self.inner.max_keys);
        match cache.map.get(&key) {
            Some(Slot::InProgress { .. }) => Begin::InProgress,
            Some(Slot::Counted(e)) if e.body != body => Begin::Conflict,
            Some(Slot::Counted(e)) => Begin::Replay(e.answer),
            None => {
                cache.insert(key, Slot::InProgress { at_ms: now });
                cache.evict(now.saturating_sub(self.inner.window_ms), self.inner.max_keys);
                Begin::New(Ticket { idem: self.clone(), key, body, at_ms: now, counted: false })
            }
        }
    }
}

impl Ticket {
    /// Count the request with `count` (which returns the answer, or refuses it). While it runs,
    /// the flusher cannot persist keys, so a snapshot holding these records is published only after
    /// this key is pending in the journal's queue.
    pub fn count<E>(mut self, count: impl FnOnce() -> Result<Answer, E>) -> Result<Answer, E> {
        let inner = Arc::clone(&self.idem.inner);
        let mut pending = inner.pending.lock().expect("idempotency queue poisoned");
        let answer = count()?;
        let entry = Entry { key: self.key, body: self.body, at_ms: self.at_ms, answer };
        if inner.journal.is_some() {
            pending.push(entry);
        }
        drop(pending);
        self.idem.cache().insert(self.key, Slot::Counted(entry));
        self.counted = true;
        Ok(answer)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.counted {
            let mut cache = self.idem.cache();
            if matches!(cache.map.get(&self.key), Some(Slot::InProgress { .. })) {
                cache.map.remove(&self.key);
            }
        }
    }
}

impl DurableHook for Idempotency {
    /// Journal (and fsync) the keys whose records are now durable, before their answers go out.
    fn before_publish(&self, durable: u64) {
        let Some(journal) = &self.inner.journal else { return };
        let ready: Vec<Entry> = {
            let mut pending = self.inner.pending.lock().expect("idempotency queue poisoned");
            let (ready, later) = pending.drain(..).partition(|e: &Entry| e.answer.needs <= durable);
            *pending = later;
            ready
        };
        if ready.is_empty() {
            return;
        }
        let mut journal = journal.lock().expect("idempotency journal poisoned");
        if let Err(error) = journal.append(&ready) {
            // The records are durable; only a retry across a crash could count them twice.
            tracing::warn!(%error, path = %journal.path.display(), keys = ready.len(),
                "cannot journal idempotency keys; a retry after a restart may count their records again");
        }
        if journal.appended > 2 * self.inner.max_keys.max(1024) {
            let oldest_kept = self.inner.clock.now_ms().saturating_sub(self.inner.window_ms);
            let live: Vec<Entry> = {
                let cache = self.cache();
                let mut live: Vec<Entry> = cache
                    .map
                    .values()
                    .filter_map(|s| match s {
                        Slot::Counted(e) if e.answer.needs <= durable && e.at_ms >= oldest_kept => Some(*e),
                        _ => None,
                    })
                    .collect();
                live.sort_by_key(|e| e.at_ms);
                live
            };
            match Journal::rewrite(&journal.path.clone(), &live) {
                Ok(compacted) => *journal = compacted,
                Err(error) => tracing::warn!(%error, "cannot compact the idempotency journal"),
            }
        }
    }
}

/// The append-only file of durable keys: `<key sha256> <body sha256> <at_ms> <accepted> <progress>`.
struct Journal {
    path: PathBuf,
    file: fs::File,
    /// Lines appended since the last rewrite.
    appended: usize,
}

fn hex(bytes: &Digest) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Digest> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn line(e: &Entry) -> String {
    format!("{} {} {} {} {}\n", hex(&e.key), hex(&e.body), e.at_ms, e.answer.accepted, e.answer.progress)
}

fn parse_line(line: &str) -> Option<Entry> {
    let mut parts = line.split(' ');
    let key = unhex(parts.next()?)?;
    let body = unhex(parts.next()?)?;
    let at_ms = parts.next()?.parse().ok()?;
    let accepted = parts.next()?.parse().ok()?;
    let progress = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(Entry { key, body, at_ms, answer: Answer { accepted, progress, needs: 0 } })
}

impl Journal {
    /// Entries within the window, the newest `max_keys`, oldest first. A torn last line (a crash
    /// mid-append) or any unreadable line is skipped.
    fn load(path: &Path, oldest_kept: EpochMillis, max_keys: usize) -> io::Result<Vec<Entry>> {
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut entries: Vec<Entry> = Vec::new();
        for line in io::BufReader::new(file).split(b'\n') {
            let line = line?;
            if let Some(e) = std::str::from_utf8(&line).ok().and_then(parse_line)
                && e.at_ms >= oldest_kept
            {
                entries.push(e);
            }
        }
        entries.sort_by_key(|e| e.at_ms);
        let skip = entries.len().saturating_sub(max_keys);
        Ok(entries.split_off(skip))
    }

    /// Replace the journal with `entries` (write, fsync, rename), opened for appending.
    fn rewrite(path: &Path, entries: &[Entry]) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        let mut out = io::BufWriter::new(fs::File::create(&tmp)?);
        for e in entries {
            out.write_all(line(e).as_bytes())?;
        }
        out.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
        fs::rename(&tmp, path)?;
        let file = fs::OpenOptions::new().append(true).open(path)?;
        Ok(Self { path: path.to_path_buf(), file, appended: 0 })
    }

    fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        let text: String = entries.iter().map(line).collect();
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()?;
        self.appended += entries.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn answer(accepted: u64, needs: u64) -> Answer {
        Answer { accepted, progress: 0, needs }
    }

    /// Begin and count `key`; whether it was new.
    fn count(idem: &Idempotency, key: &str, body: &str, accepted: u64) -> bool {
        match idem.begin(key.as_bytes(), body.as_bytes()) {
            Begin::New(ticket) => ticket.count(|| Ok::<_, ()>(answer(accepted, 1))).is_ok(),
            _ => false,
        }
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key(b"order-42 retry").is_ok());
        assert!(check_key(&[b'k'; 128]).is_ok());
        for bad in [&b""[..], &[b'k'; 129], b"tab\there", "é".as_bytes(), b"nl\n"] {
            assert!(check_key(bad).unwrap_err().contains("1 to 128 printable ASCII"), "{bad:?}");
        }
    }

    #[test]
    fn a_retry_replays_a_different_body_conflicts_and_a_refused_request_frees_its_key() {
        let idem = Idempotency::open(&IdempotencyOptions::default(), Arc::new(ManualClock::new(1_000))).unwrap();
        assert!(count(&idem, "k1", "body", 3));
        assert!(matches!(idem.begin(b"k1", b"body"), Begin::Replay(a) if a == answer(3, 1)));
        assert!(matches!(idem.begin(b"k1", b"other body"), Begin::Conflict));

        let Begin::New(ticket) = idem.begin(b"k2", b"bad") else { panic!("new key") };
        assert!(matches!(idem.begin(b"k2", b"bad"), Begin::InProgress));
        assert_eq!(ticket.count(|| Err::<Answer, _>("refused")), Err("refused"));
        assert!(matches!(idem.begin(b"k2", b"good"), Begin::New(_)), "nothing was counted: the key is free");
    }

    #[test]
    fn keys_expire_after_the_window_and_the_oldest_go_past_the_bound() {
        let clock = ManualClock::new(0);
        let options = IdempotencyOptions { window_ms: 1_000, max_keys: 3, journal: None };
        let idem = Idempotency::open(&options, Arc::new(clock.clone())).unwrap();
        for k in ["a", "b", "c", "d"] {
            assert!(count(&idem, k, "x", 1));
            clock.advance(10);
        }
        assert_eq!(idem.len(), 3);
        assert!(matches!(idem.begin(b"a", b"x"), Begin::New(_)), "the oldest was forgotten");
        clock.advance(1_000);
        assert!(matches!(idem.begin(b"d", b"x"), Begin::New(_)), "past the window");
        assert!(idem.len() <= 2, "{}", idem.len());
    }

    #[test]
    fn the_journal_keeps_durable_keys_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(50_000);
        let options = IdempotencyOptions { journal: Some(dir.path().join("keys")), ..IdempotencyOptions::default() };
        {
            let idem = Idempotency::open(&options, Arc::new(clock.clone())).unwrap();
            let Begin::New(t) = idem.begin(b"durable", b"b1") else { panic!() };
            t.count(|| Ok::<_, ()>(answer(2, 4))).unwrap();
            let Begin::New(t) = idem.begin(b"not yet", b"b2") else { panic!() };
            t.count(|| Ok::<_, ()>(answer(1, 5))).unwrap();
            idem.before_publish(4); // snapshot 4 durable; 5 is not
        } // crash
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("keys"))
            .unwrap()
            .write_all(b"0123 torn")
            .unwrap();
        let idem = Idempotency::open(&options, Arc::new(clock.clone())).unwrap();
        assert!(matches!(idem.begin(b"durable", b"b1"), Begin::Replay(a) if a == answer(2, 0)));
        assert!(matches!(idem.begin(b"durable", b"changed"), Begin::Conflict));
        assert!(matches!(idem.begin(b"not yet", b"b2"), Begin::New(_)), "its records were not durable");
        clock.advance(600_001);
        let idem = Idempotency::open(&options, Arc::new(clock)).unwrap();
        assert!(idem.is_empty(), "past the window");
    }
}
