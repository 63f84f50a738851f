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
//!   (index and field), and nothing is counted.
//! * UDP, one record a line, fields separated by single spaces, business id last (it may contain
//!   spaces): `v1 <topic> <tier> xxh=<hex>|fp=<hex> <bytes> <event_time_ms|-> <business_id>`; a
//!   progress record: `v1p <topic> <tier> <event_time_ms>`. Invalid lines are counted and logged
//!   (rate-limited); valid lines of a datagram still count.

use kaudit_schema::EpochMillis;
use serde_json::Value;

use crate::extract::{EventTime, from_epoch_number};
use crate::fingerprint::fingerprint_from_xxh64;
use crate::table::Observation;

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
}

/// One valid UDP line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestLine {
    Record(IngestRecord),
    Progress(ProgressRecord),
}

/// Most records one HTTP request may carry.
pub const MAX_RECORDS: usize = 100_000;

fn hex_or_int(v: &Value, field: &str) -> Result<u64, String> {
    match v {
        Value::String(s) => {
            u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|_| format!("{field}: {s:?} is not a hex u64"))
        }
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("{field}: {n} is not a u64")),
        other => Err(format!("{field}: expected a hex string, got {other}")),
    }
}

fn string_field<'a>(obj: &'a serde_json::Map<String, Value>, field: &str) -> Result<&'a str, String> {
    match obj.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(format!("{field}: must not be empty")),
        Some(other) => Err(format!("{field}: expected a string, got {other}")),
        None => Err(format!("{field}: missing")),
    }
}

/// Seconds or milliseconds since the epoch, required.
fn required_time(obj: &serde_json::Map<String, Value>, field: &str) -> Result<EpochMillis, String> {
    match obj.get(field) {
        Some(Value::Number(n)) => match n.as_i64().map(from_epoch_number) {
            Some(EventTime::Valid(t)) => Ok(t),
            _ => Err(format!("{field}: {n} is not a positive integer of s or ms since the epoch")),
        },
        Some(other) => Err(format!("{field}: expected a number, got {other}")),
        None => Err(format!("{field}: missing")),
    }
}

/// Validate one JSON progress record, `{"progress": {"topic", "tier", "event_time"}}`.
pub fn progress_from_json(v: &Value) -> Result<ProgressRecord, String> {
    let obj = v.as_object().ok_or("expected an object")?;
    if let Some(other) = obj.keys().find(|k| *k != "progress") {
        return Err(format!("{other}: a progress record has no key but progress"));
    }
    let inner = match obj.get("progress") {
        Some(Value::Object(inner)) => inner,
        Some(other) => {
            return Err(format!("progress: expected an object with topic, tier and event_time, got {other}"));
        }
        None => return Err("progress: missing".into()),
    };
    const FIELDS: [&str; 3] = ["topic", "tier", "event_time"];
    if let Some(unknown) = inner.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("progress.{unknown}: unknown field; expected one of {}", FIELDS.join(", ")));
    }
    let within = |e: String| format!("progress.{e}");
    Ok(ProgressRecord {
        topic: string_field(inner, "topic").map_err(within)?.to_string(),
        tier: string_field(inner, "tier").map_err(within)?.to_string(),
        event_time_ms: required_time(inner, "event_time").map_err(within)?,
    })
}

/// Validate one JSON record.
pub fn record_from_json(v: &Value) -> Result<IngestRecord, String> {
    let obj = v.as_object().ok_or("expected an object")?;
    const FIELDS: [&str; 7] = ["topic", "tier", "business_id", "payload_xxh64", "fingerprint", "bytes", "event_time"];
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("{unknown}: unknown field; expected one of {}", FIELDS.join(", ")));
    }
    let topic = string_field(obj, "topic")?;
    let tier = string_field(obj, "tier")?;
    let business_id = match obj.get("business_id") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s,
        Some(other) => return Err(format!("business_id: expected a string, got {other}")),
    };
    let fingerprint = match (obj.get("payload_xxh64"), obj.get("fingerprint")) {
        (Some(x), None) => fingerprint_from_xxh64(business_id.as_bytes(), hex_or_int(x, "payload_xxh64")?),
        (None, Some(f)) => hex_or_int(f, "fingerprint")?,
        (Some(_), Some(_)) => return Err("give payload_xxh64 or fingerprint, not both".into()),
        (None, None) => return Err("payload_xxh64 or fingerprint: missing".into()),
    };
    let bytes = match obj.get("bytes") {
        None => 0,
        Some(b) => b.as_u64().ok_or_else(|| format!("bytes: expected a non-negative integer, got {b}"))?,
    };
    let event_time = match obj.get("event_time") {
        None | Some(Value::Null) => EventTime::Missing,
        Some(Value::Number(n)) => match n.as_i64().map(from_epoch_number) {
            Some(EventTime::Valid(t)) => EventTime::Valid(t),
            _ => return Err(format!("event_time: {n} is not a positive integer of s or ms since the epoch")),
        },
        Some(other) => return Err(format!("event_time: expected a number, got {other}")),
    };
    Ok(IngestRecord {
        topic: topic.to_string(),
        tier: tier.to_string(),
        observation: Observation { fingerprint, bytes, event_time, malformed_id: false },
    })
}

/// Parse a request body (JSON array or NDJSON): every record and progress record, or every problem.
pub fn parse_body(body: &[u8]) -> Result<IngestBatch, Vec<String>> {
    let text = std::str::from_utf8(body).map_err(|e| vec![format!("body is not UTF-8: {e}")])?;
    let trimmed = text.trim_start();
    let values: Vec<(String, Result<Value, String>)> = if trimmed.starts_with('[') {
        match serde_json::from_str::<Vec<Value>>(trimmed) {
            Ok(vs) if vs.is_empty() => return Ok(IngestBatch::default()),
            Ok(vs) => vs.into_iter().enumerate().map(|(i, v)| (format!("record {}", i + 1), Ok(v))).collect(),
            Err(e) => return Err(vec![format!("body is not valid JSON: {e}")]),
        }
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (format!("line {}", i + 1), serde_json::from_str(l).map_err(|e| format!("not JSON: {e}"))))
            .collect()
    };
    if values.is_empty() {
        return Err(vec!["no records".into()]);
    }
    if values.len() > MAX_RECORDS {
        return Err(vec![format!("{} records; at most {MAX_RECORDS} per request", values.len())]);
    }
    let mut batch = IngestBatch { records: Vec::with_capacity(values.len()), progress: Vec::new() };
    let mut problems = Vec::new();
    for (place, value) in values {
        let parsed = value.and_then(|v| match v.get("progress") {
            Some(_) => progress_from_json(&v).map(IngestLine::Progress),
            None => record_from_json(&v).map(IngestLine::Record),
        });
        match parsed {
            Ok(IngestLine::Record(r)) => batch.records.push(r),
            Ok(IngestLine::Progress(p)) => batch.progress.push(p),
            Err(e) => problems.push(format!("{place}: {e}")),
        }
    }
    if problems.is_empty() { Ok(batch) } else { Err(problems) }
}

/// Parse one UDP line: a record (`v1 …`) or a progress record (`v1p …`).
pub fn parse_line(line: &str) -> Result<IngestLine, String> {
    match line.split_once(' ').map_or(line, |(version, _)| version) {
        "v1" => parse_record_line(line).map(IngestLine::Record),
        "v1p" => parse_progress_line(line).map(IngestLine::Progress),
        "" => Err("missing version".into()),
        version => Err(format!("unknown version {version:?}; expected v1 or v1p")),
    }
}

/// `v1p <topic> <tier> <event_time_ms>`.
fn parse_progress_line(line: &str) -> Result<ProgressRecord, String> {
    let mut parts = line.split(' ').skip(1);
    let mut next = |what: &str| parts.next().filter(|p| !p.is_empty()).ok_or_else(|| format!("missing {what}"));
    let (topic, tier, time) = (next("topic")?, next("tier")?, next("event_time")?);
    if parts.next().is_some() {
        return Err("v1p takes 3 fields: <topic> <tier> <event_time_ms>".into());
    }
    match time.parse::<i64>().map(from_epoch_number) {
        Ok(EventTime::Valid(t)) => Ok(ProgressRecord { topic: topic.into(), tier: tier.into(), event_time_ms: t }),
        _ => Err(format!("event_time {time:?} is not a positive integer of s or ms")),
    }
}

/// `v1 <topic> <tier> xxh=<hex>|fp=<hex> <bytes> <event_time_ms|-> <business_id>`.
fn parse_record_line(line: &str) -> Result<IngestRecord, String> {
    let mut parts = line.splitn(7, ' ');
    let mut next = |what: &str| parts.next().filter(|p| !p.is_empty()).ok_or_else(|| format!("missing {what}"));
    next("version")?;
    let (topic, tier, hash, bytes, time) =
        (next("topic")?, next("tier")?, next("hash")?, next("bytes")?, next("event_time")?);
    let business_id = parts.next().unwrap_or("");
    let parse_hex = |h: &str| u64::from_str_radix(h, 16).map_err(|_| format!("{h:?} is not a hex u64"));
    let fingerprint = if let Some(h) = hash.strip_prefix("xxh=") {
        fingerprint_from_xxh64(business_id.as_bytes(), parse_hex(h)?)
    } else if let Some(h) = hash.strip_prefix("fp=") {
        parse_hex(h)?
    } else {
        return Err(format!("hash {hash:?} must be xxh=<hex> or fp=<hex>"));
    };
    let bytes: u64 = bytes.parse().map_err(|_| format!("bytes {bytes:?} is not a non-negative integer"))?;
    let event_time = match time {
        "-" => EventTime::Missing,
        t => match t.parse::<i64>().map(from_epoch_number) {
            Ok(EventTime::Valid(v)) => EventTime::Valid(v),
            _ => return Err(format!("event_time {t:?} is not a positive integer of s or ms, or -")),
        },
    };
    Ok(IngestRecord {
        topic: topic.into(),
        tier: tier.into(),
        observation: Observation { fingerprint, bytes, event_time, malformed_id: false },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::fingerprint;

    #[test]
    fn json_records_make_the_same_fingerprint_as_the_agent() {
        let xxh = xxhash_rust::xxh64::xxh64(b"{\"id\":\"order-42\",\"amount\":1999}", 0);
        let body = format!(
            r#"[{{"topic":"orders","tier":"producer/php","business_id":"order-42","payload_xxh64":"{xxh:016x}","bytes":31,"event_time":1700000000}}]"#
        );
        let records = parse_body(body.as_bytes()).unwrap().records;
        assert_eq!(
            records[0].observation.fingerprint,
            fingerprint(b"order-42", b"{\"id\":\"order-42\",\"amount\":1999}")
        );
        assert_eq!(records[0].observation.fingerprint, 0xc283aaa0f9f3f99e, "the shared vector");
        assert_eq!(records[0].observation.event_time, EventTime::Valid(1_700_000_000_000));
    }

    #[test]
    fn ndjson_and_every_problem_reported() {
        let ok = "{\"topic\":\"t\",\"tier\":\"p\",\"fingerprint\":\"ff\"}\n\n{\"topic\":\"t\",\"tier\":\"p\",\"fingerprint\":255,\"event_time\":null}\n";
        let records = parse_body(ok.as_bytes()).unwrap().records;
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].observation.event_time, EventTime::Missing);
        let bad = "{\"topic\":\"t\",\"tier\":\"p\"}\nnot json\n{\"topic\":\"\",\"tier\":\"p\",\"fingerprint\":\"zz\"}\n{\"topic\":\"t\",\"tier\":\"p\",\"fingerprint\":\"1\",\"event_time\":\"now\"}\n{\"topic\":\"t\",\"tier\":\"p\",\"fingerprint\":\"1\",\"extra\":1}";
        let problems = parse_body(bad.as_bytes()).unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].starts_with("line 1: payload_xxh64 or fingerprint: missing"));
        assert!(problems[1].starts_with("line 2: not JSON"));
        assert!(problems[2].starts_with("line 3: topic: must not be empty"));
        assert!(problems[3].contains("event_time: expected a number"));
        assert!(problems[4].contains("extra: unknown field"));
        assert_eq!(parse_body(b"[]").unwrap(), IngestBatch::default(), "an empty batch is fine");
        assert_eq!(parse_body(b"  ").unwrap_err(), vec!["no records".to_string()]);
        assert!(parse_body(b"[{").unwrap_err()[0].contains("not valid JSON"));
        assert!(parse_body(b"[{\"topic\":\"t\"}]").unwrap_err()[0].starts_with("record 1: "), "records count from 1");
    }

    fn record(line: &str) -> IngestRecord {
        match parse_line(line) {
            Ok(IngestLine::Record(r)) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn udp_lines() {
        let r = record("v1 orders consumer/go xxh=c28358e5d775f99e 31 1700000000000 order-42");
        assert_eq!(r.observation.fingerprint, 0xc283aaa0f9f3f99e);
        assert_eq!((r.topic.as_str(), r.tier.as_str(), r.observation.bytes), ("orders", "consumer/go", 31));
        let spaced = record("v1 t p fp=10 0 - id with spaces");
        assert_eq!((spaced.observation.fingerprint, spaced.observation.event_time), (16, EventTime::Missing));
        for (line, why) in [
            ("v2 t p fp=1 0 -", "unknown version"),
            ("v1 t p", "missing hash"),
            ("v1 t p md5=1 0 -", "must be xxh="),
            ("v1 t p fp=1 -3 -", "bytes"),
            ("v1 t p fp=1 0 yesterday", "event_time"),
            ("", "missing version"),
            ("v1p t p", "missing event_time"),
            ("v1p t p 1700000000000 extra", "3 fields"),
            ("v1p t p -5", "event_time"),
            ("v2p t p 1", "expected v1 or v1p"),
        ] {
            assert!(parse_line(line).unwrap_err().contains(why), "{line}");
        }
    }

    #[test]
    fn progress_records_in_bodies_and_lines() {
        let body = r#"[{"topic":"orders","tier":"consumer/php","fingerprint":"1","event_time":1700000000500},
                       {"progress":{"topic":"orders","tier":"consumer/php","event_time":1700000001}}]"#;
        let batch = parse_body(body.as_bytes()).unwrap();
        assert_eq!(batch.records.len(), 1);
        let declared =
            ProgressRecord { topic: "orders".into(), tier: "consumer/php".into(), event_time_ms: 1_700_000_001_000 };
        assert_eq!(batch.progress, vec![declared.clone()], "seconds by magnitude, like records");
        assert_eq!(batch.len(), 2);
        let ndjson = "{\"progress\":{\"topic\":\"orders\",\"tier\":\"consumer/php\",\"event_time\":1700000001000}}\n";
        assert_eq!(parse_body(ndjson.as_bytes()).unwrap().progress, vec![declared.clone()]);
        assert_eq!(parse_line("v1p orders consumer/php 1700000001000"), Ok(IngestLine::Progress(declared)));
    }

    /// A request with one bad progress record is refused whole, each problem named.
    #[test]
    fn progress_records_are_validated_like_records() {
        let good = r#"{"topic":"t","tier":"p","fingerprint":"1"}"#;
        let bad = [
            (r#"{"progress":{"topic":"t","tier":"p"}}"#, "progress.event_time: missing"),
            (r#"{"progress":{"topic":"t","tier":"p","event_time":-1}}"#, "progress.event_time: -1 is not a positive"),
            (r#"{"progress":{"topic":"t","tier":"p","event_time":"now"}}"#, "progress.event_time: expected a number"),
            (r#"{"progress":{"topic":"","tier":"p","event_time":1}}"#, "progress.topic: must not be empty"),
            (r#"{"progress":{"tier":"p","event_time":1}}"#, "progress.topic: missing"),
            (r#"{"progress":{"topic":"t","tier":"p","event_time":1,"at":2}}"#, "progress.at: unknown field"),
            (
                r#"{"progress":{"topic":"t","tier":"p","event_time":1},"topic":"t"}"#,
                "topic: a progress record has no key but progress",
            ),
            (r#"{"progress":1700000000000}"#, "progress: expected an object"),
        ];
        for (line, why) in bad {
            let body = format!("{good}\n{line}\n");
            let problems = parse_body(body.as_bytes()).unwrap_err();
            assert_eq!(problems.len(), 1, "{line}: {problems:?}");
            assert!(problems[0].starts_with(&format!("line 2: {why}")), "{line}: {}", problems[0]);
        }
    }
}
