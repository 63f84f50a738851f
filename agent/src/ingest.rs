//! Ingest mode: records from apps in other languages, which hash their own payloads.
//!
//! A record: `{"topic", "tier", "business_id", "payload_xxh64" | "fingerprint", "bytes",
//! "event_time"}`. `payload_xxh64` is the hex (or integer) xxh64 of the payload with seed 0, from
//! which the agent makes the fingerprint with the business id; `fingerprint` is the finished
//! fingerprint. `event_time` is ms or s since the epoch (by magnitude) and may be absent.
//!
//! A progress record: `{"progress": {"topic", "tier", "event_time"}}` says "this app has reported
//! everything of (topic, tier) with an event time before `event_time`" (ms or s, by magnitude, as
//! in records). Ingest's progress for a (topic, tier) is the largest event time seen in its records
//! or declared by progress records. An app that never sends one and goes quiet for a flush interval
//! counts as caught up (judged by the verifier's time grace, as before progress existed); one that
//! does is held exactly where its records say, quiet or not. So an app should send one after each batch it
//! reports, with the event time up to which that batch completes its reports (e.g. a PHP worker
//! after each job: the event time of the job's oldest message still to be reported, or of the job
//! itself once all its messages are reported; a Go service from a ticker: the event time up to
//! which its send buffer is flushed), and keep sending it while idle, so that an idle app does
//! not look behind.
//!
//! * HTTP `POST /v1/records`: a JSON array, or NDJSON (one object a line), of records and progress
//!   records. A request is all or nothing: any invalid record answers 400 with every problem
//!   (index and field; the first [`MAX_PROBLEMS`], then how many more), and nothing is counted.
//!
//! Names: a topic is 1–249 characters of `[A-Za-z0-9._-]`, not `.` or `..` (Kafka's rule); a
//! tier 1–128 characters of `[A-Za-z0-9._/-]`. Hashes are strict hex: 1–16 hex digits (in JSON
//! strings optionally after `0x`), no sign, no spaces.
//!
//! ## Bounded parsing
//! A body is never parsed into a document tree: each element is read straight into borrowed,
//! lenient fields (module `raw`) and validated at once into an [`IngestRecord`] (or a problem), and the
//! parse stops with an error at the first element past [`MAX_RECORDS`]. Memory is therefore
//! proportional to the record limit (the validated records, at most [`MAX_PROBLEMS`] problem
//! texts), not to the body: a 16 MiB body of `0` lines stops at line 100,001 with a handful of
//! strings allocated.
//! * UDP, one record a line, fields separated by single spaces, business id last (it may contain
//!   spaces): `v1 <topic> <tier> xxh=<hex>|fp=<hex> <bytes> <event_time_ms|-> <business_id>`; a
//!   progress record: `v1p <topic> <tier> <event_time_ms>`. Invalid lines are counted and logged
//!   (rate-limited); valid lines of a datagram still count.

use kaudit_schema::difference::Locator;
use std::borrow::Cow;

use kaudit_schema::EpochMillis;
pub use kaudit_schema::names::{MAX_TIER_LEN, MAX_TOPIC_LEN, check_tier, check_topic};
use serde::de::{self, Deserializer as _, SeqAccess, Visitor};

use crate::extract::{EventTime, from_epoch_number};
use crate::fingerprint::fingerprint_from_xxh64;
use crate::table::Observation;

mod raw;

use raw::{KeyProblems, RawItem, RawProgress, RawRecord, Scalar, shown};

/// One validated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRecord {
    pub topic: String,
    pub tier: String,
    pub observation: Observation,
}

impl PartialEq for Observation {
    fn eq(&self, o: &Self) -> bool {
        self.fingerprint == o.fingerprint
            && self.bytes == o.bytes
            && self.event_time == o.event_time
            && self.malformed_id == o.malformed_id
            && self.locator == o.locator
    }
}

impl Eq for Observation {}

/// An app's statement that it has reported everything of (topic, tier) with an event time before
/// `event_time_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressRecord {
    pub topic: String,
    pub tier: String,
    pub event_time_ms: EpochMillis,
}

/// A validated request body: its records and its progress records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestBatch {
    pub records: Vec<IngestRecord>,
    pub progress: Vec<ProgressRecord>,
}

impl IngestBatch {
    /// Records and progress records together.
    pub fn len(&self) -> usize {
        self.records.len() + self.progress.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The (topic, tier) of every record and progress record, repeats included.
    pub fn streams(&self) -> impl Iterator<Item = (&str, &str)> {
        let records = self.records.iter().map(|r| (r.topic.as_str(), r.tier.as_str()));
        records.chain(self.progress.iter().map(|p| (p.topic.as_str(), p.tier.as_str())))
    }
}

/// One valid UDP line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestLine {
    Record(IngestRecord),
    Progress(ProgressRecord),
}

impl IngestLine {
    /// The line's (topic, tier).
    pub fn stream(&self) -> (&str, &str) {
        match self {
            IngestLine::Record(r) => (&r.topic, &r.tier),
            IngestLine::Progress(p) => (&p.topic, &p.tier),
        }
    }
}

/// Most records (and progress records) one HTTP request may carry.
pub const MAX_RECORDS: usize = 100_000;
/// Most problems a rejection lists; past them it says how many more there were.
pub const MAX_PROBLEMS: usize = 100;
/// A refused request body: what was wrong, bounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejection {
    /// The first [`MAX_PROBLEMS`] problems, each naming its record (or the body) and field.
    pub problems: Vec<String>,
    /// Problems past those listed.
    pub more: usize,
    /// Records (elements or non-empty lines) read before the body was refused.
    pub records: usize,
}

impl Rejection {
    fn body(problem: String, records: usize) -> Self {
        Self { problems: vec![problem], more: 0, records }
    }

    fn push(&mut self, problem: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        } else {
            self.more += 1;
        }
    }

    /// Every problem counted, listed or not.
    pub fn total(&self) -> usize {
        self.problems.len() + self.more
    }

    /// One line: the first problem and how many others.
    pub fn summary(&self) -> String {
        match (self.problems.first(), self.total()) {
            (None, _) => "invalid request".into(),
            (Some(first), 1) => first.clone(),
            (Some(first), n) => format!("{first} (and {} more problems)", n - 1),
        }
    }

    /// The listed problems, and a last line "and N more problems" if some were left out.
    pub fn listed(&self) -> Vec<String> {
        let mut out = self.problems.clone();
        if self.more > 0 {
            out.push(format!("and {} more problems", self.more));
        }
        out
    }
}

/// Strict hex: 1–16 hex digits, nothing else.
pub fn parse_hex_u64(text: &str) -> Option<u64> {
    let ok = (1..=16).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit());
    if ok { u64::from_str_radix(text, 16).ok() } else { None }
}

fn hex_or_int(v: &Scalar<'_>, field: &str) -> Result<u64, String> {
    match v {
        Scalar::Str(s) => parse_hex_u64(s.strip_prefix("0x").unwrap_or(s))
            .ok_or_else(|| format!("{field}: {v} is not 1 to 16 hex digits")),
        Scalar::Uint(n) => Ok(*n),
        Scalar::Int(_) | Scalar::Float(_) => Err(format!("{field}: {v} is not a u64")),
        other => Err(format!("{field}: expected a hex string, got {other}")),
    }
}

fn string_field<'s, 'a>(v: &'s Option<Scalar<'a>>, field: &str) -> Result<&'s str, String> {
    match v {
        Some(Scalar::Str(s)) if !s.is_empty() => Ok(s),
        Some(Scalar::Str(_)) => Err(format!("{field}: must not be empty")),
        Some(other) => Err(format!("{field}: expected a string, got {other}")),
        None => Err(format!("{field}: missing")),
    }
}

fn name_field<'s>(
    v: &'s Option<Scalar<'_>>,
    field: &str,
    check: fn(&str) -> Result<(), String>,
) -> Result<&'s str, String> {
    let name = string_field(v, field)?;
    check(name).map_err(|e| format!("{field}: {e}"))?;
    Ok(name)
}

/// An integer of seconds or milliseconds since the epoch, by magnitude.
fn epoch_time(v: &Scalar<'_>) -> Option<EventTime> {
    match v {
        Scalar::Uint(n) => Some(i64::try_from(*n).map_or(EventTime::Malformed, from_epoch_number)),
        Scalar::Int(n) => Some(from_epoch_number(*n)),
        _ => None,
    }
}

/// Seconds or milliseconds since the epoch, required.
fn required_time(v: &Option<Scalar<'_>>, field: &str) -> Result<EpochMillis, String> {
    match v {
        Some(n @ (Scalar::Uint(_) | Scalar::Int(_) | Scalar::Float(_))) => match epoch_time(n) {
            Some(EventTime::Valid(t)) => Ok(t),
            _ => Err(format!("{field}: {n} is not a positive integer of s or ms since the epoch")),
        },
        Some(other) => Err(format!("{field}: expected a number, got {other}")),
        None => Err(format!("{field}: missing")),
    }
}

fn key_problems(keys: &KeyProblems, fields: &[&str], prefix: &str) -> Result<(), String> {
    if let Some(unknown) = &keys.unknown {
        return Err(format!("{prefix}{unknown}: unknown field; expected one of {}", fields.join(", ")));
    }
    match keys.duplicate {
        Some(name) => Err(format!("{prefix}{name}: given twice")),
        None => Ok(()),
    }
}

/// Validate one progress record, `{"progress": {"topic", "tier", "event_time"}}`.
fn progress_from_raw(
    inner: &Result<RawProgress<'_>, Scalar<'_>>,
    outer: &RawRecord<'_>,
) -> Result<ProgressRecord, String> {
    if let Some(other) = outer.keys.unknown.as_deref().or(outer.other_key) {
        return Err(format!("{other}: a progress record has no key but progress"));
    }
    if outer.keys.duplicate.is_some() {
        return Err("progress: given twice".into());
    }
    let inner = match inner {
        Ok(inner) => inner,
        Err(other) => return Err(format!("progress: expected an object with topic, tier and event_time, got {other}")),
    };
    key_problems(&inner.keys, &["topic", "tier", "event_time"], "progress.")?;
    let within = |e: String| format!("progress.{e}");
    Ok(ProgressRecord {
        topic: name_field(&inner.topic, "topic", check_topic).map_err(within)?.to_string(),
        tier: name_field(&inner.tier, "tier", check_tier).map_err(within)?.to_string(),
        event_time_ms: required_time(&inner.event_time, "event_time").map_err(within)?,
    })
}

const RECORD_FIELDS: [&str; 9] =
    ["topic", "tier", "business_id", "payload_xxh64", "fingerprint", "bytes", "event_time", "partition", "offset"];

/// Validate one record.
fn record_from_raw(r: &RawRecord<'_>) -> Result<IngestRecord, String> {
    key_problems(&r.keys, &RECORD_FIELDS, "")?;
    let topic = name_field(&r.topic, "topic", check_topic)?;
    let tier = name_field(&r.tier, "tier", check_tier)?;
    let business_id: &str = match &r.business_id {
        None | Some(Scalar::Null) => "",
        Some(Scalar::Str(s)) => s,
        Some(other) => return Err(format!("business_id: expected a string, got {other}")),
    };
    let fingerprint = match (&r.payload_xxh64, &r.fingerprint) {
        (Some(x), None) => fingerprint_from_xxh64(business_id.as_bytes(), hex_or_int(x, "payload_xxh64")?),
        (None, Some(f)) => hex_or_int(f, "fingerprint")?,
        (Some(_), Some(_)) => return Err("give payload_xxh64 or fingerprint, not both".into()),
        (None, None) => return Err("payload_xxh64 or fingerprint: missing".into()),
    };
    let bytes = match &r.bytes {
        None => 0,
        Some(Scalar::Uint(n)) => *n,
        Some(b) => return Err(format!("bytes: expected a non-negative integer, got {b}")),
    };
    let event_time = match &r.event_time {
        None | Some(Scalar::Null) => EventTime::Missing,
        Some(n @ (Scalar::Uint(_) | Scalar::Int(_) | Scalar::Float(_))) => match epoch_time(n) {
            Some(EventTime::Valid(t)) => EventTime::Valid(t),
            _ => return Err(format!("event_time: {n} is not a positive integer of s or ms since the epoch")),
        },
        Some(other) => return Err(format!("event_time: expected a number, got {other}")),
    };
    let locator = locator(&r.partition, &r.offset)?;
    Ok(IngestRecord {
        topic: topic.to_string(),
        tier: tier.to_string(),
        observation: Observation { fingerprint, bytes, event_time, malformed_id: false, locator },
    })
}

/// The optional `partition` and `offset` of a record: where the app's message lives in Kafka
/// (both or neither), so that a loss can be named with it.
fn locator(partition: &Option<Scalar<'_>>, offset: &Option<Scalar<'_>>) -> Result<Option<Locator>, String> {
    let number = |v: &Scalar<'_>, name: &str, max: u64| match v {
        Scalar::Uint(n) if *n <= max => Ok(*n),
        other => Err(format!("{name}: expected an integer from 0 to {max}, got {other}")),
    };
    match (partition, offset) {
        (None | Some(Scalar::Null), None | Some(Scalar::Null)) => Ok(None),
        (Some(p), Some(o)) if !matches!(p, Scalar::Null) && !matches!(o, Scalar::Null) => {
            let partition = number(p, "partition", i32::MAX as u64)? as i32;
            let offset = number(o, "offset", i64::MAX as u64)? as i64;
            Ok(Some(Locator { partition, offset }))
        }
        (Some(p), _) if !matches!(p, Scalar::Null) => {
            Err("offset: missing (give partition and offset together)".into())
        }
        _ => Err("partition: missing (give partition and offset together)".into()),
    }
}

fn validate(item: &RawItem<'_>) -> Result<IngestLine, String> {
    match item {
        RawItem::Record(r) => record_from_raw(r).map(IngestLine::Record),
        RawItem::Progress(inner, outer) => progress_from_raw(inner, outer).map(IngestLine::Progress),
        RawItem::NotAnObject(other) => Err(format!("expected an object, got {other}")),
    }
}

/// Validated records and the problems so far, bounded.
#[derive(Default)]
struct Collected {
    batch: IngestBatch,
    rejection: Rejection,
    /// Elements or non-empty lines seen.
    seen: usize,
}

impl Collected {
    /// Take the next element (at `place`); `Err` once past [`MAX_RECORDS`].
    fn take(&mut self, item: Result<RawItem<'_>, String>, place: impl FnOnce() -> String) -> Result<(), String> {
        self.seen += 1;
        if self.seen > MAX_RECORDS {
            return Err(format!(
                "more than {MAX_RECORDS} records ({} is past the limit); at most {MAX_RECORDS} per request",
                place()
            ));
        }
        match item.and_then(|item| validate(&item)) {
            // Once a problem is found nothing will be counted: stop keeping records.
            Ok(_) if self.rejection.total() > 0 => {}
            Ok(IngestLine::Record(r)) => self.batch.records.push(r),
            Ok(IngestLine::Progress(p)) => self.batch.progress.push(p),
            Err(e) => {
                self.batch = IngestBatch::default();
                self.rejection.push(format!("{}: {e}", place()));
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<IngestBatch, Rejection> {
        self.rejection.records = self.seen;
        if self.rejection.total() == 0 { Ok(self.batch) } else { Err(self.rejection) }
    }
}

/// Reads a JSON array element by element into a [`Collected`].
struct ArrayVisitor<'c> {
    collected: &'c mut Collected,
    /// Set when the record limit ended the parse (rather than a JSON error).
    limit: &'c mut Option<String>,
}

impl<'de> Visitor<'de> for ArrayVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<RawItem<'de>>()? {
            let n = self.collected.seen + 1;
            if let Err(e) = self.collected.take(Ok(item), || format!("record {n}")) {
                *self.limit = Some(e);
                return Err(de::Error::custom("record limit"));
            }
        }
        Ok(())
    }
}

fn parse_array(body: &[u8]) -> Result<IngestBatch, Rejection> {
    let mut collected = Collected::default();
    let mut limit = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed =
        de.deserialize_seq(ArrayVisitor { collected: &mut collected, limit: &mut limit }).and_then(|()| de.end());
    if let Some(e) = limit {
        return Err(Rejection::body(e, collected.seen));
    }
    if let Err(e) = parsed {
        return Err(Rejection::body(format!("body is not valid JSON: {e}"), collected.seen));
    }
    collected.finish()
}

fn parse_ndjson(body: &[u8]) -> Result<IngestBatch, Rejection> {
    let mut collected = Collected::default();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let item = serde_json::from_slice::<RawItem<'_>>(line).map_err(|e| format!("not JSON: {e}"));
        if let Err(e) = collected.take(item, || format!("line {}", i + 1)) {
            return Err(Rejection::body(e, collected.seen));
        }
    }
    if collected.seen == 0 {
        return Err(Rejection::body("no records".into(), 0));
    }
    collected.finish()
}

/// Parse a request body (JSON array or NDJSON): every record and progress record, or the problems
/// (at most [`MAX_PROBLEMS`] listed). Stops at the first record past [`MAX_RECORDS`].
pub fn parse_body(body: &[u8]) -> Result<IngestBatch, Rejection> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(Rejection::body(format!("body is not UTF-8: {e}"), 0));
    }
    if body.trim_ascii_start().starts_with(b"[") { parse_array(body) } else { parse_ndjson(body) }
}

/// Parse one UDP line: a record (`v1 …`) or a progress record (`v1p …`).
pub fn parse_line(line: &str) -> Result<IngestLine, String> {
    match line.split_once(' ').map_or(line, |(version, _)| version) {
        "v1" => parse_record_line(line).map(IngestLine::Record),
        "v1p" => parse_progress_line(line).map(IngestLine::Progress),
        "" => Err("missing version".into()),
        version => Err(format!("unknown version {}; expected v1 or v1p", shown(version))),
    }
}

fn line_names<'a>(topic: &'a str, tier: &'a str) -> Result<(String, String), String> {
    check_topic(topic).map_err(|e| format!("topic: {e}"))?;
    check_tier(tier).map_err(|e| format!("tier: {e}"))?;
    Ok((topic.into(), tier.into()))
}

/// `v1p <topic> <tier> <event_time_ms>`.
fn parse_progress_line(line: &str) -> Result<ProgressRecord, String> {
    let mut parts = line.split(' ').skip(1);
    let mut next = |what: &str| parts.next().filter(|p| !p.is_empty()).ok_or_else(|| format!("missing {what}"));
    let (topic, tier, time) = (next("topic")?, next("tier")?, next("event_time")?);
    if parts.next().is_some() {
        return Err("v1p takes 3 fields: <topic> <tier> <event_time_ms>".into());
    }
    let (topic, tier) = line_names(topic, tier)?;
    match strict_i64(time).map(from_epoch_number) {
        Some(EventTime::Valid(t)) => Ok(ProgressRecord { topic, tier, event_time_ms: t }),
        _ => Err(format!("event_time {} is not a positive integer of s or ms", shown(time))),
    }
}

/// Decimal digits only (no sign), as an i64.
fn strict_i64(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `v1 <topic> <tier> xxh=<hex>|fp=<hex> <bytes> <event_time_ms|-> <business_id>`.
fn parse_record_line(line: &str) -> Result<IngestRecord, String> {
    let mut parts = line.splitn(7, ' ');
    let mut next = |what: &str| parts.next().filter(|p| !p.is_empty()).ok_or_else(|| format!("missing {what}"));
    next("version")?;
    let (topic, tier, hash, bytes, time) =
        (next("topic")?, next("tier")?, next("hash")?, next("bytes")?, next("event_time")?);
    let business_id = parts.next().unwrap_or("");
    let (topic, tier) = line_names(topic, tier)?;
    let parse_hex = |h: &str| parse_hex_u64(h).ok_or_else(|| format!("{} is not 1 to 16 hex digits", shown(h)));
    let fingerprint = if let Some(h) = hash.strip_prefix("xxh=") {
        fingerprint_from_xxh64(business_id.as_bytes(), parse_hex(h)?)
    } else if let Some(h) = hash.strip_prefix("fp=") {
        parse_hex(h)?
    } else {
        return Err(format!("hash {} must be xxh=<hex> or fp=<hex>", shown(hash)));
    };
    let digits = bytes.bytes().all(|b| b.is_ascii_digit());
    let bytes = digits
        .then(|| bytes.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| format!("bytes {} is not a non-negative integer", shown(bytes)))?;
    let event_time = match time {
        "-" => EventTime::Missing,
        t => match strict_i64(t).map(from_epoch_number) {
            Some(EventTime::Valid(v)) => EventTime::Valid(v),
            _ => return Err(format!("event_time {} is not a positive integer of s or ms, or -", shown(t))),
        },
    };
    let observation = Observation { fingerprint, bytes, event_time, malformed_id: false, locator: None };
    Ok(IngestRecord { topic, tier, observation })
}

/// A record as one UDP line (for clients and tests): the inverse of [`parse_line`] for records
/// given by fingerprint.
pub fn record_line(
    topic: &str,
    tier: &str,
    fingerprint: u64,
    bytes: u64,
    event_time: Option<EpochMillis>,
    business_id: &str,
) -> String {
    let time: Cow<'_, str> = event_time.map_or(Cow::Borrowed("-"), |t| Cow::Owned(t.to_string()));
    format!("v1 {topic} {tier} fp={fingerprint:x} {bytes} {time} {business_id}")
}

#[cfg(test)]
mod tests;
