use super::*;
use proptest::prelude::*;

fn msg(payload: &str) -> OwnedMessage {
    OwnedMessage {
        key: Some(b"k1".to_vec()),
        payload: payload.as_bytes().to_vec(),
        timestamp_ms: Some(1_700_000_000_123),
        headers: vec![("et".into(), b"1700000001".to_vec()), ("id".into(), b"h-7".to_vec())],
    }
}

fn rule(id: &str, time: &str) -> ExtractRule {
    ExtractRule { business_id: id.parse().unwrap(), event_time: time.parse().unwrap() }
}

#[test]
fn defaults_read_key_and_kafka_timestamp() {
    let m = msg("x");
    let e = ExtractRule::default().extract(&m);
    assert_eq!(&*e.business_id, b"k1");
    assert_eq!(e.event_time, EventTime::Valid(1_700_000_000_123));
    assert!(!e.malformed_id);
}

#[test]
fn headers_and_json_pointers() {
    let m = msg(r#"{"order":{"id":"o-9","n":5},"ts":1700000002500,"ts_s":1700000003,"ts_f":1700000004.25}"#);
    let e = rule("header:id", "header:et").extract(&m);
    assert_eq!((&*e.business_id, e.event_time), (&b"h-7"[..], EventTime::Valid(1_700_000_001_000)));
    assert_eq!(rule("json:/order/id", "json:/ts").extract(&m).event_time, EventTime::Valid(1_700_000_002_500));
    assert_eq!(&*rule("json:/order/id", "json:/ts").extract(&m).business_id, b"o-9");
    assert_eq!(&*rule("json:/order/n", "json:/ts_s").extract(&m).business_id, b"5");
    assert_eq!(rule("key", "json:/ts_s").extract(&m).event_time, EventTime::Valid(1_700_000_003_000));
    assert_eq!(rule("key", "json:/ts_f").extract(&m).event_time, EventTime::Valid(1_700_000_004_250));
}

#[test]
fn missing_and_malformed_times_are_told_apart() {
    let m = msg(r#"{"ts":"yesterday","neg":-5,"obj":{}}"#);
    assert_eq!(rule("key", "header:absent").extract(&m).event_time, EventTime::Missing);
    assert_eq!(rule("key", "json:/absent").extract(&m).event_time, EventTime::Missing);
    assert_eq!(rule("key", "json:/ts").extract(&m).event_time, EventTime::Malformed);
    assert_eq!(rule("key", "json:/neg").extract(&m).event_time, EventTime::Malformed);
    assert_eq!(rule("key", "json:/obj").extract(&m).event_time, EventTime::Malformed);
    let not_json = msg("not json at all");
    let e = rule("json:/id", "json:/ts").extract(&not_json);
    assert_eq!((e.event_time, e.malformed_id, e.business_id.is_empty()), (EventTime::Malformed, true, true));
    let mut no_ts = msg("x");
    no_ts.timestamp_ms = None;
    assert_eq!(ExtractRule::default().extract(&no_ts).event_time, EventTime::Missing);
}

#[test]
fn seconds_and_milliseconds_by_magnitude() {
    assert_eq!(from_epoch_number(MILLIS_THRESHOLD), EventTime::Valid(MILLIS_THRESHOLD * 1000));
    assert_eq!(from_epoch_number(MILLIS_THRESHOLD + 1), EventTime::Valid(MILLIS_THRESHOLD + 1));
    assert_eq!(from_epoch_number(0), EventTime::Malformed);
    assert_eq!(from_epoch_number(99_999_999_999_999_999), EventTime::Malformed, "past year 9999");
    assert_eq!(from_epoch_number(MAX_EVENT_TIME_MS), EventTime::Valid(MAX_EVENT_TIME_MS));
}

#[test]
fn source_specs_round_trip_and_explain_errors() {
    for s in ["key", "header:x-id", "json:/a/b"] {
        assert_eq!(s.parse::<BusinessIdSource>().unwrap().to_string(), s);
    }
    for s in ["kafka_timestamp", "header:et", "json:/ts"] {
        assert_eq!(s.parse::<EventTimeSource>().unwrap().to_string(), s);
    }
    assert!("value".parse::<BusinessIdSource>().unwrap_err().to_string().contains("header:NAME"));
    assert!("json:ts".parse::<EventTimeSource>().unwrap_err().to_string().contains("must start with '/'"));
    assert!("header:".parse::<EventTimeSource>().unwrap_err().to_string().contains("empty"));
}

proptest! {
    /// Invariant: extraction never panics on arbitrary bytes, whatever the rule.
    #[test]
    fn arbitrary_bytes_never_panic(payload in prop::collection::vec(any::<u8>(), 0..256),
                                   header in prop::collection::vec(any::<u8>(), 0..32),
                                   ts in prop::option::of(any::<i64>()),
                                   which in 0usize..9) {
        let m = OwnedMessage { key: None, payload, timestamp_ms: ts, headers: vec![("h".into(), header)] };
        let ids = ["key", "header:h", "json:/a"];
        let times = ["kafka_timestamp", "header:h", "json:/a"];
        let e = rule(ids[which % 3], times[which / 3]).extract(&m);
        if let EventTime::Valid(t) = e.event_time { prop_assert!(t > 0); }
    }

    /// Invariant: JSON-shaped payloads with arbitrary values never panic either.
    #[test]
    fn arbitrary_json_values_never_panic(v in "[-0-9a-z.eE\"{}\\[\\]:,]{0,40}") {
        let m = OwnedMessage { payload: format!("{{\"a\":{v}}}").into_bytes(), ..Default::default() };
        let e = rule("json:/a", "json:/a").extract(&m);
        // Either the document parsed (id present or absent) or the message is flagged malformed.
        prop_assert!(e.malformed_id == (e.event_time == EventTime::Malformed && serde_json::from_slice::<serde_json::Value>(&m.payload).is_err()));
    }
}
