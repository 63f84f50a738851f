//! Extraction of a message's business id and event time, configured per topic pattern.
//!
//! Nothing here panics or rejects a message: a missing event time is [`EventTime::Missing`], an
//! unparsable one [`EventTime::Malformed`], and the caller still counts the message (in the bucket
//! of its arrival time). A business id that cannot be extracted is empty and flags the message
//! malformed.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use kaudit_schema::EpochMillis;
use serde::{Deserialize, Serialize};

/// Event times above this are milliseconds, at or below it seconds (Chaperone's rule: the
/// boundary is the year 33658 in seconds and 2001-09-09 in milliseconds).
pub const MILLIS_THRESHOLD: i64 = 999_999_999_999;

/// What a message looks like to the auditor, whatever client delivered it.
pub trait AuditMessage {
    fn key(&self) -> Option<&[u8]>;
    fn payload(&self) -> &[u8];
    /// The Kafka timestamp in ms, if the message has one.
    fn timestamp_ms(&self) -> Option<EpochMillis>;
    /// The value of the first header called `name`.
    fn header(&self, name: &str) -> Option<&[u8]>;
}

/// Where the business id comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BusinessIdSource {
    /// The message key (absent key: empty id).
    #[default]
    Key,
    /// The value of a header.
    Header(String),
    /// A JSON pointer into the payload (a string's text, or any other value's JSON text).
    JsonPointer(String),
}

/// Where the event time comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EventTimeSource {
    /// The Kafka message timestamp.
    #[default]
    KafkaTimestamp,
    /// A header holding decimal seconds or milliseconds.
    Header(String),
    /// A JSON pointer to a number (or numeric string) of seconds or milliseconds.
    JsonPointer(String),
}

/// A message's event time, as far as it could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventTime {
    Valid(EpochMillis),
    Missing,
    Malformed,
}

/// What extraction found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted<'a> {
    pub business_id: Cow<'a, [u8]>,
    pub event_time: EventTime,
    /// The business id could not be read (e.g. the payload is not JSON); the id is empty.
    pub malformed_id: bool,
}

/// Extraction rule for the topics matching one pattern.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtractRule {
    pub business_id: BusinessIdSource,
    pub event_time: EventTimeSource,
}

impl ExtractRule {
    /// Extract from `msg`. Parses the payload as JSON at most once, and only when a pointer needs it.
    #[inline]
    pub fn extract<'m, M: AuditMessage + ?Sized>(&self, msg: &'m M) -> Extracted<'m> {
        if let (BusinessIdSource::Key, EventTimeSource::KafkaTimestamp) = (&self.business_id, &self.event_time) {
            // The default rule, and the hot path: no JSON, no header scan.
            return Extracted {
                business_id: Cow::Borrowed(msg.key().unwrap_or_default()),
                event_time: kafka_time(msg),
                malformed_id: false,
            };
        }
        let needs_json = matches!(self.business_id, BusinessIdSource::JsonPointer(_))
            || matches!(self.event_time, EventTimeSource::JsonPointer(_));
        let json: Option<serde_json::Value> =
            if needs_json { serde_json::from_slice(msg.payload()).ok() } else { None };

        let (business_id, malformed_id) = match &self.business_id {
            BusinessIdSource::Key => (Cow::Borrowed(msg.key().unwrap_or_default()), false),
            BusinessIdSource::Header(name) => (Cow::Borrowed(msg.header(name).unwrap_or_default()), false),
            BusinessIdSource::JsonPointer(ptr) => match &json {
                None => (Cow::Borrowed(&[][..]), true),
                Some(doc) => match doc.pointer(ptr) {
                    None | Some(serde_json::Value::Null) => (Cow::Borrowed(&[][..]), false),
                    Some(serde_json::Value::String(s)) => (Cow::Owned(s.as_bytes().to_vec()), false),
                    Some(other) => (Cow::Owned(other.to_string().into_bytes()), false),
                },
            },
        };
        let event_time = self.event_time_from(msg, json.as_ref());
        Extracted { business_id, event_time, malformed_id }
    }

    /// Only the event time of `msg` (a producer's hand-off needs its bucket, not its fingerprint).
    #[inline]
    pub fn event_time<M: AuditMessage + ?Sized>(&self, msg: &M) -> EventTime {
        let json: Option<serde_json::Value> = match self.event_time {
            EventTimeSource::JsonPointer(_) => serde_json::from_slice(msg.payload()).ok(),
            _ => None,
        };
        self.event_time_from(msg, json.as_ref())
    }

    fn event_time_from<M: AuditMessage + ?Sized>(&self, msg: &M, json: Option<&serde_json::Value>) -> EventTime {
        match &self.event_time {
            EventTimeSource::KafkaTimestamp => kafka_time(msg),
            EventTimeSource::Header(name) => match msg.header(name) {
                None => EventTime::Missing,
                Some(raw) => parse_time_text(raw),
            },
            EventTimeSource::JsonPointer(ptr) => match json {
                None => EventTime::Malformed,
                Some(doc) => match doc.pointer(ptr) {
                    None | Some(serde_json::Value::Null) => EventTime::Missing,
                    Some(serde_json::Value::Number(n)) => n
                        .as_i64()
                        .map(from_epoch_number)
                        .or_else(|| n.as_f64().map(from_epoch_float))
                        .unwrap_or(EventTime::Malformed),
                    Some(serde_json::Value::String(s)) => parse_time_text(s.as_bytes()),
                    Some(_) => EventTime::Malformed,
                },
            },
        }
    }
}

/// The Kafka timestamp: always milliseconds; absent is missing, non-positive malformed.
#[inline]
fn kafka_time<M: AuditMessage + ?Sized>(msg: &M) -> EventTime {
    match msg.timestamp_ms() {
        None => EventTime::Missing,
        Some(t) if t > 0 && t <= MAX_EVENT_TIME_MS => EventTime::Valid(t),
        Some(_) => EventTime::Malformed,
    }
}

/// Latest event time taken as real: the end of year 9999, in ms. Later values are malformed.
pub const MAX_EVENT_TIME_MS: i64 = 253_402_300_799_999;

/// Seconds or milliseconds since the epoch, told apart by magnitude; non-positive or past year
/// 9999 is malformed.
pub fn from_epoch_number(v: i64) -> EventTime {
    match v {
        v if v <= 0 || v > MAX_EVENT_TIME_MS => EventTime::Malformed,
        v if v > MILLIS_THRESHOLD => EventTime::Valid(v),
        v => EventTime::Valid(v * 1000),
    }
}

fn from_epoch_float(v: f64) -> EventTime {
    if !v.is_finite() || v <= 0.0 || v > MAX_EVENT_TIME_MS as f64 {
        return EventTime::Malformed;
    }
    if v > MILLIS_THRESHOLD as f64 { EventTime::Valid(v as i64) } else { EventTime::Valid((v * 1000.0) as i64) }
}

fn parse_time_text(raw: &[u8]) -> EventTime {
    let Ok(text) = std::str::from_utf8(raw) else {
        return EventTime::Malformed;
    };
    let text = text.trim();
    if let Ok(v) = text.parse::<i64>() {
        return from_epoch_number(v);
    }
    match text.parse::<f64>() {
        Ok(v) => from_epoch_float(v),
        Err(_) => EventTime::Malformed,
    }
}

/// A source spec that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceParseError(String);

fn parse_prefixed(s: &str, bare: &str) -> Result<Option<(bool, String)>, SourceParseError> {
    if s == bare {
        return Ok(None);
    }
    if let Some(name) = s.strip_prefix("header:") {
        if name.is_empty() {
            return Err(SourceParseError("header name is empty, e.g. \"header:event-time\"".into()));
        }
        return Ok(Some((true, name.to_string())));
    }
    if let Some(ptr) = s.strip_prefix("json:") {
        if !(ptr.is_empty() || ptr.starts_with('/')) {
            return Err(SourceParseError(format!("JSON pointer {ptr:?} must start with '/', e.g. \"json:/id\"")));
        }
        return Ok(Some((false, ptr.to_string())));
    }
    Err(SourceParseError(format!("{s:?} is not one of \"{bare}\", \"header:NAME\", \"json:/POINTER\"")))
}

impl FromStr for BusinessIdSource {
    type Err = SourceParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match parse_prefixed(s, "key")? {
            None => Self::Key,
            Some((true, name)) => Self::Header(name),
            Some((false, ptr)) => Self::JsonPointer(ptr),
        })
    }
}

impl FromStr for EventTimeSource {
    type Err = SourceParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match parse_prefixed(s, "kafka_timestamp")? {
            None => Self::KafkaTimestamp,
            Some((true, name)) => Self::Header(name),
            Some((false, ptr)) => Self::JsonPointer(ptr),
        })
    }
}

impl fmt::Display for BusinessIdSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key => f.write_str("key"),
            Self::Header(n) => write!(f, "header:{n}"),
            Self::JsonPointer(p) => write!(f, "json:{p}"),
        }
    }
}

impl fmt::Display for EventTimeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KafkaTimestamp => f.write_str("kafka_timestamp"),
            Self::Header(n) => write!(f, "header:{n}"),
            Self::JsonPointer(p) => write!(f, "json:{p}"),
        }
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(BusinessIdSource);
serde_via_str!(EventTimeSource);

/// A message held by value, for the `record` API, tests and the ingest path.
#[derive(Debug, Clone, Default)]
pub struct OwnedMessage {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub timestamp_ms: Option<EpochMillis>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl AuditMessage for OwnedMessage {
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn timestamp_ms(&self) -> Option<EpochMillis> {
        self.timestamp_ms
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
}

#[cfg(test)]
mod tests;
