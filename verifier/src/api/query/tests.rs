use proptest::prelude::*;

use super::*;

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn times_are_read_by_a_date_library() {
    assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
    assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
    assert_eq!(parse_time("2023-11-14T23:13:20+01:00"), Ok(1_700_000_000_000));
    assert_eq!(parse_time("2023-11-14T22:13:20.123Z"), Ok(1_700_000_000_123));
    assert_eq!(parse_time("2023-11-14"), Ok(1_699_920_000_000));
    assert_eq!(parse_time("2024-02-29"), Ok(1_709_164_800_000));
    let feb = time_param(&params(&[("from", "2026-02-31")]), "from").unwrap_err();
    assert_eq!(feb, "from=\"2026-02-31\" is not a time: February 2026 has 28 days");
    let feb = time_param(&params(&[("from", "2026-02-31T00:00:00Z")]), "from").unwrap_err();
    assert!(feb.starts_with("from=\"2026-02-31T00:00:00Z\" is not a time: "), "{feb}");
    for bad in ["", "2026-13-01", "2026-00-10", "yesterday", "2026-11-21T25:00:00Z", "2026-11-21T10:00:00"] {
        assert!(parse_time(bad).is_err(), "{bad:?} must be refused");
    }
    assert_eq!(time_param(&params(&[("to", "-5")]), "to").unwrap_err(), "to=\"-5\" is before 1970");
}

#[test]
fn pages_have_a_bounded_limit_and_a_cursor() {
    assert_eq!(page(&params(&[])), Ok(Page { limit: DEFAULT_LIMIT, after: None }));
    assert_eq!(page(&params(&[("limit", "5000"), ("after", "k")])), Ok(Page { limit: 5000, after: Some("k".into()) }));
    for bad in ["0", "5001", "-1", "ten", ""] {
        let why = page(&params(&[("limit", bad)])).unwrap_err();
        assert!(why.contains("is not a number from 1 to 5000"), "{why}");
    }
    let keys = ["a", "b", "c", "d", "e"];
    let p = |limit, after: Option<&str>| Page { limit, after: after.map(str::to_string) };
    assert_eq!(paginate(keys, &p(2, None), |k| k), (vec!["a", "b"], Some("b".into())));
    assert_eq!(paginate(keys, &p(2, Some("b")), |k| k), (vec!["c", "d"], Some("d".into())));
    assert_eq!(paginate(keys, &p(2, Some("d")), |k| k), (vec!["e"], None));
    assert_eq!(paginate(keys, &p(5, None), |k| k), (keys.to_vec(), None), "exactly a page: no next");
}

#[test]
fn each_endpoint_names_what_is_wrong() {
    let ok = buckets_query(&params(&[("topic", "orders"), ("from", "2026-01-01"), ("to", "2026-01-02")])).unwrap();
    assert_eq!((ok.to - ok.from, ok.limit), (86_400_000, DEFAULT_LIMIT));
    let long = buckets_query(&params(&[("topic", "t"), ("from", "2026-01-01"), ("to", "2026-01-09")])).unwrap_err();
    assert!(long.contains("over the 7-day limit"), "{long}");
    assert_eq!(buckets_query(&params(&[("from", "1"), ("to", "2")])).unwrap_err(), "missing parameter \"topic\"");
    assert_eq!(alerts_query(&params(&[("state", "on")])).unwrap_err(), "state=\"on\": expected firing or resolved");
    assert!(topics_query(&params(&[("x", "1")])).unwrap_err().starts_with("unknown parameter \"x\""));
}

#[test]
fn alerts_filter_by_kind_topic_and_tier() {
    let q = alerts_query(&params(&[("kind", "loss"), ("topic", "orders"), ("tier", "consumer/billing")])).unwrap();
    assert_eq!(q.kind, Some(kaudit_alerting::AlertKind::Loss));
    let alert = |kind: &str, topic: &str, tier: &str| serde_json::json!({ "kind": kind, "topic": topic, "tier": tier });
    assert!(q.matches(&alert("loss", "orders", "consumer/billing")));
    assert!(!q.matches(&alert("loss", "orders", "consumer/billing2")));
    assert!(!q.matches(&alert("duplicates", "orders", "consumer/billing")));
    assert!(!q.matches(&alert("loss", "payments", "consumer/billing")));
    let any = alerts_query(&params(&[])).unwrap();
    assert!(any.matches(&alert("flood", "", "")), "no filter: everything");
    let flood = alerts_query(&params(&[("kind", "flood")])).unwrap();
    assert!(flood.matches(&alert("flood", "", "")) && !flood.matches(&alert("loss", "orders", "broker")));
    for kind in kaudit_alerting::AlertKind::ALL {
        assert_eq!(alerts_query(&params(&[("kind", kind.as_str())])).unwrap().kind, Some(kind));
    }
    let why = alerts_query(&params(&[("kind", "lost")])).unwrap_err();
    assert!(why.starts_with("kind=\"lost\": expected one of loss, duplicates, "), "{why}");
    assert_eq!(alerts_query(&params(&[("tier", "")])).unwrap_err(), "tier=\"\": give a value or leave it out");
}

/// Every parser on `p`: a parsed buckets range is valid, a refusal has a reason.
fn check_all(p: &Params) -> Result<(), TestCaseError> {
    match buckets_query(p) {
        Ok(q) => prop_assert!(q.from >= 0 && q.from < q.to && q.to - q.from <= MAX_RANGE_MS, "{q:?}"),
        Err(why) => prop_assert!(!why.is_empty()),
    }
    if let Err(why) = alerts_query(p) {
        prop_assert!(!why.is_empty());
    }
    if let Err(why) = topics_query(p) {
        prop_assert!(!why.is_empty());
    }
    Ok(())
}

proptest! {
    /// Any query string, decoded as axum decodes it, parses or is refused with a reason (axum
    /// itself answers 400 to one it cannot decode): no panic, and a parsed range is valid.
    #[test]
    fn any_query_string_parses_or_says_why(query in "[a-z=&%0-9:TZ+. -]{0,60}") {
        if let Ok(uri) = format!("/x?{query}").parse::<axum::http::Uri>()
            && let Ok(decoded) = axum::extract::Query::<Params>::try_from_uri(&uri)
        {
            check_all(&decoded.0)?;
        }
    }

    /// The known parameters with arbitrary values: the same.
    #[test]
    fn any_values_of_known_parameters_parse_or_say_why(
        keys in proptest::sample::subsequence(vec!["topic", "from", "to", "limit", "after", "state", "kind", "tier"], 0..=8),
        values in proptest::collection::vec("(\\PC{0,24}|[0-9]{1,14}|[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)?)", 8),
    ) {
        check_all(&keys.iter().zip(&values).map(|(k, v)| (k.to_string(), v.clone())).collect())?;
    }

    /// Every date that exists parses to its midnight UTC.
    #[test]
    fn real_dates_round_trip(days in 0i64..100_000) {
        let ms = days * 86_400_000;
        let text = chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%d").to_string();
        prop_assert_eq!(parse_time(&text), Ok(ms));
    }
}
