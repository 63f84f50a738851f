use super::*;
use crate::fingerprint::fingerprint;

#[test]
fn json_records_make_the_same_fingerprint_as_the_agent() {
    let xxh = xxhash_rust::xxh64::xxh64(b"{\"id\":\"order-42\",\"amount\":1999}", 0);
    let body = format!(
        r#"[{{"topic":"orders","tier":"producer/php","business_id":"order-42","payload_xxh64":"{xxh:016x}","bytes":31,"event_time":1700000000}}]"#
    );
    let records = parse_body(body.as_bytes()).unwrap().records;
    assert_eq!(records[0].observation.fingerprint, fingerprint(b"order-42", b"{\"id\":\"order-42\",\"amount\":1999}"));
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
    let problems = parse_body(bad.as_bytes()).unwrap_err().problems;
    assert_eq!(problems.len(), 5, "{problems:#?}");
    assert!(problems[0].starts_with("line 1: payload_xxh64 or fingerprint: missing"));
    assert!(problems[1].starts_with("line 2: not JSON"));
    assert!(problems[2].starts_with("line 3: topic: must not be empty"));
    assert!(problems[3].contains("event_time: expected a number"));
    assert!(problems[4].contains("extra: unknown field"));
    assert_eq!(parse_body(b"[]").unwrap(), IngestBatch::default(), "an empty batch is fine");
    assert_eq!(parse_body(b"  ").unwrap_err().problems, vec!["no records".to_string()]);
    assert!(parse_body(b"[{").unwrap_err().problems[0].contains("not valid JSON"));
    assert!(
        parse_body(b"[{\"topic\":\"t\"}]").unwrap_err().problems[0].starts_with("record 1: "),
        "records count from 1"
    );
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
        let problems = parse_body(body.as_bytes()).unwrap_err().problems;
        assert_eq!(problems.len(), 1, "{line}: {problems:?}");
        assert!(problems[0].starts_with(&format!("line 2: {why}")), "{line}: {}", problems[0]);
    }
}

/// The issue's 16 MiB body of `0` lines: the parse stops at the first record past the limit,
/// saying so, whatever follows.
#[test]
fn the_record_limit_is_enforced_while_parsing() {
    let zeros = "0\n".repeat(MAX_RECORDS + 50_000);
    let r = parse_body(zeros.as_bytes()).unwrap_err();
    assert_eq!(r.records, MAX_RECORDS + 1);
    assert_eq!(r.problems.len(), 1, "{:?}", &r.problems[..3.min(r.problems.len())]);
    assert!(r.problems[0].starts_with("more than 100000 records (line 100001 is past the limit)"), "{}", r.problems[0]);

    let array = format!("[{}]", vec!["0"; MAX_RECORDS + 10].join(","));
    let r = parse_body(array.as_bytes()).unwrap_err();
    assert!(
        r.problems[0].starts_with("more than 100000 records (record 100001 is past the limit)"),
        "{}",
        r.problems[0]
    );

    let ok = format!("[{}]", vec![r#"{"topic":"t","tier":"p","fingerprint":"1"}"#; MAX_RECORDS].join(","));
    assert_eq!(parse_body(ok.as_bytes()).unwrap().records.len(), MAX_RECORDS, "exactly the limit is fine");
}

#[test]
fn problems_are_bounded_and_say_how_many_more() {
    let body = "{}\n".repeat(MAX_PROBLEMS + 50);
    let r = parse_body(body.as_bytes()).unwrap_err();
    assert_eq!((r.problems.len(), r.more, r.total(), r.records), (MAX_PROBLEMS, 50, 150, 150));
    assert_eq!(r.listed().last().unwrap(), "and 50 more problems");
    assert!(r.summary().ends_with("(and 149 more problems)"), "{}", r.summary());
}

#[test]
fn names_follow_kafka_and_tier_rules() {
    let rec = |topic: &str, tier: &str| format!(r#"{{"topic":"{topic}","tier":"{tier}","fingerprint":"1"}}"#);
    let long_topic = "t".repeat(249);
    let long_tier = "p".repeat(128);
    for (topic, tier) in [("orders.v2_x-1", "consumer/php.v1_a-b"), (long_topic.as_str(), long_tier.as_str())] {
        assert!(parse_body(rec(topic, tier).as_bytes()).is_ok(), "{topic} {tier}");
        assert!(parse_line(&format!("v1 {topic} {tier} fp=1 0 -")).is_ok());
    }
    let too_long_topic = "t".repeat(250);
    let too_long_tier = "p".repeat(129);
    for (topic, tier, why) in [
        ("a/b", "p", "topic: \"a/b\" is not a Kafka topic name"),
        (too_long_topic.as_str(), "p", "topic: "),
        ("..", "p", "is not a Kafka topic name"),
        ("t", "p q", "tier: \"p q\" is not a tier name"),
        ("t", too_long_tier.as_str(), "1 to 128 characters"),
        ("t", "ü", "is not a tier name"),
    ] {
        let problems = parse_body(rec(topic, tier).as_bytes()).unwrap_err().problems;
        assert!(problems[0].contains(why), "{topic} {tier}: {problems:?}");
        let progress = format!(r#"{{"progress":{{"topic":"{topic}","tier":"{tier}","event_time":1}}}}"#);
        assert!(parse_body(progress.as_bytes()).unwrap_err().problems[0].starts_with("line 1: progress."));
        if !tier.contains(' ') {
            assert!(
                parse_line(&format!("v1 {topic} {tier} fp=1 0 -"))
                    .unwrap_err()
                    .contains(why.split(':').next().unwrap())
            );
        }
    }
    let shown = parse_body(rec(&"x y".repeat(100), "p").as_bytes()).unwrap_err().problems[0].clone();
    assert!(shown.len() < 300, "a client's string is echoed cut: {shown}");
}

#[test]
fn hashes_are_strict_hex() {
    for bad in ["+1", "-1", "", " 1", "1 ", "0x", "12345678901234567", "g"] {
        let body = format!(r#"{{"topic":"t","tier":"p","fingerprint":"{bad}"}}"#);
        assert!(parse_body(body.as_bytes()).unwrap_err().problems[0].contains("fingerprint: "), "{bad:?}");
    }
    assert_eq!(
        parse_body(br#"{"topic":"t","tier":"p","fingerprint":"0xff"}"#).unwrap().records[0].observation.fingerprint,
        255
    );
    for bad in ["fp=+1", "xxh=+1", "fp=0x1", "fp=", "fp=12345678901234567"] {
        let why = parse_line(&format!("v1 t p {bad} 0 -")).unwrap_err();
        assert!(why.contains("hex digits") || why.contains("missing"), "{bad}: {why}");
    }
    assert!(parse_line("v1 t p fp=1 +5 -").unwrap_err().contains("bytes"));
    assert!(parse_line("v1 t p fp=1 0 +1700000000000").unwrap_err().contains("event_time"));
}

#[test]
fn duplicate_fields_and_non_objects_are_named() {
    let problems = parse_body(b"{\"topic\":\"t\",\"topic\":\"u\",\"tier\":\"p\",\"fingerprint\":\"1\"}\n[1,2]\n\"s\"")
        .unwrap_err()
        .problems;
    assert_eq!(
        problems,
        vec![
            "line 1: topic: given twice",
            "line 2: expected an object, got an array",
            "line 3: expected an object, got \"s\""
        ]
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn name(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(alphabet.as_bytes().to_vec()), 1..max)
            .prop_map(|b| String::from_utf8(b).unwrap())
            .prop_filter("not . or ..", |s| s != "." && s != "..")
    }

    const TOPIC: &str = "abcXYZ019._-";
    const TIER: &str = "abcXYZ019._/-";

    fn record() -> impl Strategy<Value = IngestRecord> {
        (
            name(TOPIC, 40),
            name(TIER, 40),
            any::<u64>(),
            any::<u64>(),
            prop::option::of(1_000_000_000_000i64..=253_402_300_799_999),
        )
            .prop_map(|(topic, tier, fingerprint, bytes, time)| {
                // Milliseconds past the magnitude threshold: the canonical form of an event time.
                let event_time = time.map_or(EventTime::Missing, from_epoch_number);
                IngestRecord {
                    topic,
                    tier,
                    observation: Observation { fingerprint, bytes, event_time, malformed_id: false, locator: None },
                }
            })
    }

    fn json(r: &IngestRecord) -> String {
        let time = match r.observation.event_time {
            EventTime::Valid(t) => t.to_string(),
            _ => "null".into(),
        };
        format!(
            r#"{{"topic":"{}","tier":"{}","fingerprint":"{:x}","bytes":{},"event_time":{time}}}"#,
            r.topic, r.tier, r.observation.fingerprint, r.observation.bytes
        )
    }

    /// JSON-ish fragments, so that arbitrary inputs reach past the first byte.
    fn fragments() -> impl Strategy<Value = String> {
        let parts = prop::sample::select(vec![
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            "\n",
            "\"topic\"",
            "\"tier\"",
            "\"fingerprint\"",
            "\"progress\"",
            "\"event_time\"",
            "\"bytes\"",
            "\"t\"",
            "\"ff\"",
            "0",
            "-1",
            "1.5",
            "null",
            "true",
            "\"\\u00e9\"",
            " ",
        ]);
        prop::collection::vec(parts, 0..40).prop_map(|p| p.concat())
    }

    proptest! {
        /// Invariant: any body parses without panicking, and a rejection lists at least one
        /// problem, each saying something.
        #[test]
        fn any_body_is_parsed_or_rejected_with_reasons(body in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Err(r) = parse_body(&body) {
                prop_assert!(!r.problems.is_empty());
                prop_assert!(r.problems.iter().all(|p| !p.is_empty()));
            }
        }

        #[test]
        fn json_like_bodies_are_parsed_or_rejected_with_reasons(body in fragments()) {
            if let Err(r) = parse_body(body.as_bytes()) {
                prop_assert!(!r.problems.is_empty() && r.problems.iter().all(|p| !p.is_empty()));
            }
        }

        /// Invariant: valid records round-trip through a JSON array and through NDJSON.
        #[test]
        fn valid_records_round_trip(records in prop::collection::vec(record(), 1..20)) {
            let lines: Vec<String> = records.iter().map(json).collect();
            let array = format!("[{}]", lines.join(","));
            prop_assert_eq!(&parse_body(array.as_bytes()).unwrap().records, &records);
            prop_assert_eq!(&parse_body(lines.join("\n").as_bytes()).unwrap().records, &records);
        }

        /// Invariant: any line parses without panicking, and a rejection says why.
        #[test]
        fn any_line_is_parsed_or_rejected_with_a_reason(line in ".{0,120}") {
            if let Err(why) = parse_line(&line) {
                prop_assert!(!why.is_empty());
            }
        }

        #[test]
        fn line_like_strings_are_parsed_or_rejected_with_a_reason(
            parts in prop::collection::vec(prop::sample::select(vec!["v1", "v1p", "t", "p/q", "fp=1f", "xxh=+1", "fp=", "12", "-", "+3", "", "id x"]), 0..9)
        ) {
            if let Err(why) = parse_line(&parts.join(" ")) {
                prop_assert!(!why.is_empty());
            }
        }

        /// Invariant: a valid record round-trips through its UDP line.
        #[test]
        fn valid_lines_round_trip(r in record(), id in "[a-z0-9 ]{0,20}") {
            let time = match r.observation.event_time { EventTime::Valid(t) => Some(t), _ => None };
            let line = record_line(&r.topic, &r.tier, r.observation.fingerprint, r.observation.bytes, time, &id);
            prop_assert_eq!(parse_line(&line), Ok(IngestLine::Record(r)));
        }
    }
}

/// A record may say where its message lives (partition and offset, both or neither): its row's
/// sketch keeps it, so a loss can be named with it. Anything else is a 4xx naming the field.
#[test]
fn partition_and_offset_are_taken_together_or_refused() {
    let located = "{\"topic\":\"t\",\"tier\":\"p\",\"fingerprint\":\"ff\",\"partition\":2,\"offset\":41}";
    let r = &parse_body(located.as_bytes()).unwrap().records[0];
    assert_eq!(r.observation.locator, Some(kaudit_schema::difference::Locator { partition: 2, offset: 41 }));
    let bare = "{\"topic\":\"t\",\"tier\":\"p\",\"fingerprint\":\"ff\",\"partition\":null,\"offset\":null}";
    assert_eq!(parse_body(bare.as_bytes()).unwrap().records[0].observation.locator, None);
    for (extra, says) in [
        ("\"partition\":2", "offset: missing"),
        ("\"offset\":2", "partition: missing"),
        ("\"partition\":-1,\"offset\":2", "partition: expected an integer from 0 to 2147483647"),
        ("\"partition\":1,\"offset\":\"x\"", "offset: expected an integer"),
        ("\"partition\":4294967296,\"offset\":1", "partition: expected an integer"),
    ] {
        let body = format!("{{\"topic\":\"t\",\"tier\":\"p\",\"fingerprint\":\"ff\",{extra}}}");
        let problems = parse_body(body.as_bytes()).unwrap_err().problems;
        assert!(problems[0].contains(says), "{extra}: {problems:?}");
    }
}
