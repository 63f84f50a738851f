//! The shapes a request body is read into before validation: borrowed where the JSON allows,
//! lenient (a field of the wrong type is kept as a [`Scalar`] to be reported, not a parse error),
//! and never a whole-document tree. Only malformed JSON fails deserialisation.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Any JSON value, kept only as far as validation needs: strings and numbers as they are,
/// objects and arrays as their kind (their contents are skipped, not stored).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar<'a> {
    Str(Cow<'a, str>),
    Uint(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    Object,
    Array,
}

/// At most this many characters of a client's string are echoed in a problem.
const SHOWN_CHARS: usize = 64;

/// `s` quoted, cut to [`SHOWN_CHARS`] characters.
pub(crate) fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

impl fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Str(s) => f.write_str(&shown(s)),
            Scalar::Uint(n) => write!(f, "{n}"),
            Scalar::Int(n) => write!(f, "{n}"),
            Scalar::Float(n) => write!(f, "{n}"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Null => f.write_str("null"),
            Scalar::Object => f.write_str("an object"),
            Scalar::Array => f.write_str("an array"),
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Uint(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Object)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Array)
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// A key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Scalar::deserialize(d)? {
            Scalar::Str(s) => Ok(Key(s)),
            _ => Err(de::Error::custom("object keys are strings")),
        }
    }
}

/// What a field problem found besides values: the first unknown or repeated key.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct KeyProblems {
    pub unknown: Option<String>,
    pub duplicate: Option<&'static str>,
}

impl KeyProblems {
    fn set<'a>(&mut self, slot: &mut Option<Scalar<'a>>, name: &'static str, value: Scalar<'a>) {
        if slot.is_some() && self.duplicate.is_none() {
            self.duplicate = Some(name);
        }
        *slot = Some(value);
    }

    fn unknown(&mut self, key: &str) {
        if self.unknown.is_none() {
            self.unknown = Some(key.chars().take(SHOWN_CHARS).collect());
        }
    }
}

/// The fields of a record object (`progress` apart).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct RawRecord<'a> {
    pub topic: Option<Scalar<'a>>,
    pub tier: Option<Scalar<'a>>,
    pub business_id: Option<Scalar<'a>>,
    pub payload_xxh64: Option<Scalar<'a>>,
    pub fingerprint: Option<Scalar<'a>>,
    pub bytes: Option<Scalar<'a>>,
    pub event_time: Option<Scalar<'a>>,
    pub partition: Option<Scalar<'a>>,
    pub offset: Option<Scalar<'a>>,
    pub keys: KeyProblems,
    /// The first known record field seen, for "a progress record has no key but progress".
    pub other_key: Option<&'static str>,
}

/// The fields of a progress record's inner object.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct RawProgress<'a> {
    pub topic: Option<Scalar<'a>>,
    pub tier: Option<Scalar<'a>>,
    pub event_time: Option<Scalar<'a>>,
    pub keys: KeyProblems,
}

/// One element of a body: a record, a progress record, or something that is not an object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawItem<'a> {
    Record(RawRecord<'a>),
    /// `{"progress": …}` with, if any, the first other key of the outer object.
    Progress(Result<RawProgress<'a>, Scalar<'a>>, RawRecord<'a>),
    NotAnObject(Scalar<'a>),
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = RawItem<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a record object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut r = RawRecord::default();
        let mut progress: Option<Result<RawProgress<'de>, Scalar<'de>>> = None;
        while let Some(Key(key)) = map.next_key()? {
            let name: &'static str = match &*key {
                "progress" => {
                    if progress.is_some() && r.keys.duplicate.is_none() {
                        r.keys.duplicate = Some("progress");
                    }
                    progress = Some(map.next_value::<ProgressValue>()?.0);
                    continue;
                }
                "topic" => "topic",
                "tier" => "tier",
                "business_id" => "business_id",
                "payload_xxh64" => "payload_xxh64",
                "fingerprint" => "fingerprint",
                "bytes" => "bytes",
                "event_time" => "event_time",
                "partition" => "partition",
                "offset" => "offset",
                other => {
                    r.keys.unknown(other);
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value: Scalar<'de> = map.next_value()?;
            r.other_key.get_or_insert(name);
            let slot = match name {
                "topic" => &mut r.topic,
                "tier" => &mut r.tier,
                "business_id" => &mut r.business_id,
                "payload_xxh64" => &mut r.payload_xxh64,
                "fingerprint" => &mut r.fingerprint,
                "bytes" => &mut r.bytes,
                "partition" => &mut r.partition,
                "offset" => &mut r.offset,
                _ => &mut r.event_time,
            };
            r.keys.set(slot, name, value);
        }
        Ok(match progress {
            Some(p) => RawItem::Progress(p, r),
            None => RawItem::Record(r),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_seq(seq).map(RawItem::NotAnObject)
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(RawItem::NotAnObject(Scalar::Str(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(RawItem::NotAnObject(Scalar::Str(Cow::Owned(v.to_owned()))))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(RawItem::NotAnObject(Scalar::Uint(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(RawItem::NotAnObject(Scalar::Int(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(RawItem::NotAnObject(Scalar::Float(v)))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(RawItem::NotAnObject(Scalar::Bool(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(RawItem::NotAnObject(Scalar::Null))
    }
}

impl<'de> Deserialize<'de> for RawItem<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

/// The value of `progress`: its object's fields, or the scalar it was instead.
struct ProgressValue<'a>(Result<RawProgress<'a>, Scalar<'a>>);

struct ProgressVisitor;

impl<'de> Visitor<'de> for ProgressVisitor {
    type Value = ProgressValue<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a progress object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut p = RawProgress::default();
        while let Some(Key(key)) = map.next_key()? {
            let (slot, name) = match &*key {
                "topic" => (&mut p.topic, "topic"),
                "tier" => (&mut p.tier, "tier"),
                "event_time" => (&mut p.event_time, "event_time"),
                other => {
                    p.keys.unknown(other);
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value: Scalar<'de> = map.next_value()?;
            p.keys.set(slot, name, value);
        }
        Ok(ProgressValue(Ok(p)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_seq(seq).map(|s| ProgressValue(Err(s)))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(ProgressValue(Err(Scalar::Str(Cow::Borrowed(v)))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(ProgressValue(Err(Scalar::Str(Cow::Owned(v.to_owned())))))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(ProgressValue(Err(Scalar::Uint(v))))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(ProgressValue(Err(Scalar::Int(v))))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(ProgressValue(Err(Scalar::Float(v))))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(ProgressValue(Err(Scalar::Bool(v))))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(ProgressValue(Err(Scalar::Null)))
    }
}

impl<'de> Deserialize<'de> for ProgressValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ProgressVisitor)
    }
}
