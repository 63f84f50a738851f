use super::*;
use crate::alert::{AlertKind, AlertNumbers, AlertState, Severity};

pub(crate) fn alert(state: AlertState) -> Alert {
    Alert {
        dedup_key: Alert::dedup_key(AlertKind::Loss, "orders", "consumer/billing"),
        kind: AlertKind::Loss,
        state,
        severity: Severity::Critical,
        topic: "orders".into(),
        upstream_tier: "broker".into(),
        tier: "consumer/billing".into(),
        first_bucket_ms: 1_700_000_040_000,
        last_bucket_ms: 1_700_000_100_000,
        numbers: AlertNumbers {
            upstream_count: 20_000,
            count: 19_998,
            missing: 2,
            loss_ratio: 1e-4,
            ..AlertNumbers::default()
        },
        detected_by: vec!["cusum".into()],
        starts_at_ms: 1_700_000_190_000,
        ends_at_ms: (state == AlertState::Resolved).then_some(1_700_000_400_000),
        resolution: (state == AlertState::Resolved).then(|| "revised to complete by late tallies".into()),
    }
}

fn body(req: &HttpRequest) -> serde_json::Value {
    serde_json::from_slice(&req.body).unwrap()
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn webhook_is_signed_and_idempotent() {
    let sink = SinkConfig::Webhook(WebhookConfig {
        name: None,
        url: "http://127.0.0.1:1/hook".into(),
        secret: Some("s3cret".into()),
        secret_env: None,
    })
    .build()
    .unwrap();
    let req = sink.request(&alert(AlertState::Firing), 42);
    assert_eq!(header(&req, "idempotency-key"), Some("loss/orders/consumer/billing:42"));
    assert_eq!(header(&req, "x-kaudit-signature"), Some(webhook::signature(b"s3cret", &req.body).as_str()));
    assert!(webhook::signature(b"other", &req.body) != webhook::signature(b"s3cret", &req.body));
    let b = body(&req);
    assert_eq!((b["version"].as_i64(), b["seq"].as_i64()), (Some(1), Some(42)));
    assert_eq!(b["alert"]["numbers"]["missing"], 2);
    assert_eq!(sink.name, "webhook");
}

#[test]
fn pagerduty_triggers_and_resolves_one_dedup_key() {
    let config = SinkConfig::Pagerduty(PagerDutyConfig {
        name: None,
        url: "http://127.0.0.1:1/v2/enqueue".into(),
        routing_key: Some("R0UT1NG".into()),
        routing_key_env: None,
    });
    let sink = config.build().unwrap();
    let fire = body(&sink.request(&alert(AlertState::Firing), 1));
    let resolve = body(&sink.request(&alert(AlertState::Resolved), 2));
    assert_eq!((fire["event_action"].as_str(), resolve["event_action"].as_str()), (Some("trigger"), Some("resolve")));
    assert_eq!(fire["dedup_key"], resolve["dedup_key"]);
    assert_eq!(fire["routing_key"], "R0UT1NG");
    assert_eq!(fire["payload"]["severity"], "critical");
    assert!(fire["payload"]["summary"].as_str().unwrap().contains("2 messages lost"));
}

#[test]
fn alertmanager_gets_labels_and_an_end_when_resolved() {
    let sink = SinkConfig::Alertmanager(AlertmanagerConfig {
        name: None,
        url: "http://127.0.0.1:9093/".into(),
        generator_url: None,
        repost_interval_ms: 60_000,
    })
    .build()
    .unwrap();
    let fire = sink.request_at(&alert(AlertState::Firing), 1, 1_700_000_200_000);
    assert_eq!(fire.url, "http://127.0.0.1:9093/api/v2/alerts");
    let b = body(&fire);
    assert_eq!(b[0]["labels"]["alertname"], "KauditLoss");
    assert_eq!(b[0]["startsAt"], "2023-11-14T22:16:30.000Z");
    assert_eq!(b[0]["endsAt"], "2023-11-14T22:19:40.000Z", "firing: three repost intervals from now");
    assert_eq!(
        b[0]["annotations"]["description"],
        "consumer/billing counted 19998 of the 20000 messages broker counted in buckets \
         2023-11-14T22:14:00.000Z to 2023-11-14T22:15:00.000Z: 2 missing (0.0100 %), 0 extra (0.0000 %). \
         Detected by cusum."
    );
    let resolved = body(&sink.request_at(&alert(AlertState::Resolved), 2, 1_700_000_500_000));
    assert_eq!(resolved[0]["endsAt"], "2023-11-14T22:20:00.000Z", "resolved: its own end");
    assert_eq!(sink.repost_interval(), Some(std::time::Duration::from_secs(60)));
}

#[test]
fn slack_text_carries_state_and_numbers() {
    let sink = SinkConfig::Slack(SlackConfig { name: Some("ops".into()), url: "http://127.0.0.1:1/s".into() })
        .build()
        .unwrap();
    let text = body(&sink.request(&alert(AlertState::Firing), 1))["text"].as_str().unwrap().to_string();
    assert!(text.starts_with(":red_circle: [FIRING] kaudit loss on orders broker → consumer/billing"), "{text}");
    assert!(text.contains("missing 2"), "{text}");
    assert_eq!(sink.name, "ops");
}

#[test]
fn config_problems_and_missing_secrets_are_reported() {
    let bad = SinkConfig::Slack(SlackConfig { name: None, url: "hooks.slack.com/x".into() });
    let issues = bad.validate("alerting.sinks[0]");
    assert_eq!(issues[0].path, "alerting.sinks[0].url");
    assert!(issues[0].message.contains("must start with http"));
    let pd = SinkConfig::Pagerduty(PagerDutyConfig {
        name: None,
        url: "https://x".into(),
        routing_key: None,
        routing_key_env: None,
    });
    let issues = pd.validate("alerting.sinks[3]");
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].path, "alerting.sinks[3].routing_key");
    assert_eq!(issues[0].message, "set routing_key or routing_key_env");
    let env = SinkConfig::Webhook(WebhookConfig {
        name: None,
        url: "https://x".into(),
        secret: None,
        secret_env: Some("KAUDIT_TEST_SURELY_UNSET_VAR".into()),
    });
    assert!(env.build().unwrap_err().contains("KAUDIT_TEST_SURELY_UNSET_VAR"));
}

#[test]
fn summaries_count_in_words() {
    let mut a = alert(AlertState::Firing);
    assert!(a.summary().ends_with("2 messages lost (0.0100 %)"), "{}", a.summary());
    a.numbers.missing = 1;
    assert!(a.summary().contains(": 1 message lost ("), "{}", a.summary());
    a.kind = AlertKind::Duplicates;
    a.numbers.extra = 1;
    assert!(a.summary().contains(": 1 duplicate message ("), "{}", a.summary());
    a.numbers.extra = 3;
    assert!(a.summary().contains(": 3 duplicate messages ("), "{}", a.summary());
}

fn lag_alert(state: AlertState) -> Alert {
    let mut a = alert(state);
    a.kind = AlertKind::Lag;
    a.severity = Severity::Warning;
    a.dedup_key = Alert::dedup_key(AlertKind::Lag, "orders", "consumer/billing");
    a.numbers =
        AlertNumbers { lag_ms: Some(372_000), behind_since_ms: Some(1_700_000_040_000), ..AlertNumbers::default() };
    a.resolution = (state == AlertState::Resolved).then(|| "caught up (lag 0 s)".into());
    a
}

#[test]
fn resolved_texts_say_what_resolved_them_on_every_sink() {
    let resolved = alert(AlertState::Resolved);
    assert!(
        resolved.summary().ends_with("2 messages lost (0.0100 %); resolved: revised to complete by late tallies"),
        "{}",
        resolved.summary()
    );
    assert!(!alert(AlertState::Firing).summary().contains("resolved:"));
    let slack = SinkConfig::Slack(SlackConfig { name: None, url: "http://127.0.0.1:1/s".into() }).build().unwrap();
    let text = body(&slack.request(&resolved, 2))["text"].as_str().unwrap().to_string();
    assert!(text.starts_with(":large_green_circle: [RESOLVED]") && text.contains("resolved: revised"), "{text}");
    let pd = SinkConfig::Pagerduty(PagerDutyConfig {
        name: None,
        url: "http://127.0.0.1:1/v2/enqueue".into(),
        routing_key: Some("k".into()),
        routing_key_env: None,
    })
    .build()
    .unwrap();
    let b = body(&pd.request(&resolved, 2));
    assert!(b["payload"]["summary"].as_str().unwrap().contains("resolved: revised to complete"), "{b}");
    assert_eq!(b["payload"]["custom_details"]["resolution"], "revised to complete by late tallies");
    let am = SinkConfig::Alertmanager(AlertmanagerConfig {
        name: None,
        url: "http://am".into(),
        generator_url: None,
        repost_interval_ms: 60_000,
    })
    .build()
    .unwrap();
    let b = body(&am.request(&resolved, 2));
    assert_eq!(b[0]["annotations"]["resolution"], "revised to complete by late tallies");
    assert!(b[0]["annotations"]["summary"].as_str().unwrap().contains("resolved: revised"));
    assert!(body(&am.request(&alert(AlertState::Firing), 1))[0]["annotations"].get("resolution").is_none());
}

#[test]
fn lag_and_tier_down_read_as_what_they_are() {
    let lag = lag_alert(AlertState::Firing);
    assert_eq!(
        lag.summary(),
        "[FIRING] kaudit lag on orders broker → consumer/billing: 6 min 12 s behind (counted up to \
         2023-11-14T22:14:00.000Z)"
    );
    let resolved = lag_alert(AlertState::Resolved);
    assert!(resolved.summary().ends_with("; resolved: caught up (lag 0 s)"), "{}", resolved.summary());
    let mut down = alert(AlertState::Firing);
    down.kind = AlertKind::TierDown;
    down.numbers = AlertNumbers { last_heartbeat_ms: Some(1_700_000_100_000), ..AlertNumbers::default() };
    assert_eq!(
        down.summary(),
        "[FIRING] kaudit tier_down on orders consumer/billing: no live agent; the last vanished without a clean \
         stop after its heartbeat at 2023-11-14T22:15:00.000Z"
    );

    let am = SinkConfig::Alertmanager(AlertmanagerConfig {
        name: None,
        url: "http://am".into(),
        generator_url: None,
        repost_interval_ms: 60_000,
    })
    .build()
    .unwrap();
    let labels = |a: &Alert| body(&am.request(a, 1))[0]["labels"].clone();
    assert_eq!(labels(&lag)["alertname"], "KauditLag");
    assert_eq!(labels(&lag)["severity"], "warning");
    assert_eq!(labels(&down)["alertname"], "KauditTierDown");
    let keys = |v: serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(labels(&lag)), keys(labels(&alert(AlertState::Firing))), "the same label set for every kind");

    let slack = SinkConfig::Slack(SlackConfig { name: None, url: "http://127.0.0.1:1/s".into() }).build().unwrap();
    let text = body(&slack.request(&lag, 1))["text"].as_str().unwrap().to_string();
    assert!(text.contains("lag 6 min 12 s · counted up to 2023-11-14T22:14:00.000Z"), "{text}");
    let text = body(&slack.request(&down, 1))["text"].as_str().unwrap().to_string();
    assert!(text.contains("tier `consumer/billing`\nlast heartbeat 2023-11-14T22:15:00.000Z"), "{text}");
}

#[test]
fn alerts_stored_before_resolutions_existed_still_load() {
    let mut json = serde_json::to_value(alert(AlertState::Firing)).unwrap();
    assert!(json.get("resolution").is_none() && json["numbers"].get("lag_ms").is_none(), "{json}");
    json.as_object_mut().unwrap().remove("resolution");
    let back: Alert = serde_json::from_value(json).unwrap();
    assert_eq!(back, alert(AlertState::Firing));
    assert_eq!(crate::alert::duration_text(59_999), "59 s");
    assert_eq!(crate::alert::duration_text(7_500_000), "2 h 5 min");
}

#[test]
fn every_sink_links_the_alert_in_the_verifier_api() {
    let base = crate::link::PublicUrl::parse("https://kaudit.example/ops").unwrap();
    let link = "https://kaudit.example/ops/api/v1/alerts?kind=loss&topic=orders&tier=consumer%2Fbilling";
    let am = |generator_url: Option<&str>| {
        SinkConfig::Alertmanager(AlertmanagerConfig {
            name: None,
            url: "http://am".into(),
            generator_url: generator_url.map(str::to_string),
            repost_interval_ms: 60_000,
        })
        .build()
        .unwrap()
    };
    let firing = alert(AlertState::Firing);
    assert!(body(&am(None).request(&firing, 1))[0].get("generatorURL").is_none(), "no public URL, no link");
    assert_eq!(body(&am(None).with_public_url(base.clone()).request(&firing, 1))[0]["generatorURL"], link);
    let fixed = am(Some("http://dashboards.example/kaudit")).with_public_url(base.clone());
    assert_eq!(body(&fixed.request(&firing, 1))[0]["generatorURL"], "http://dashboards.example/kaudit");

    let webhook = SinkConfig::Webhook(WebhookConfig {
        name: None,
        url: "http://127.0.0.1:1/hook".into(),
        secret: Some("s".into()),
        secret_env: None,
    })
    .build()
    .unwrap();
    assert!(body(&webhook.request(&firing, 1)).get("url").is_none());
    let req = webhook.with_public_url(base.clone()).request(&firing, 1);
    assert_eq!(body(&req)["url"], link);
    assert_eq!(header(&req, "x-kaudit-signature"), Some(webhook::signature(b"s", &req.body).as_str()));

    let slack = SinkConfig::Slack(SlackConfig { name: None, url: "http://127.0.0.1:1/s".into() }).build().unwrap();
    let text = body(&slack.with_public_url(base.clone()).request(&firing, 1))["text"].as_str().unwrap().to_string();
    let escaped = link.replace('&', "&amp;");
    assert!(text.ends_with(&format!("\n<{escaped}|this alert in the kaudit API>")), "{text}");

    let pd = SinkConfig::Pagerduty(PagerDutyConfig {
        name: None,
        url: "http://127.0.0.1:1/v2/enqueue".into(),
        routing_key: Some("k".into()),
        routing_key_env: None,
    })
    .build()
    .unwrap();
    assert!(body(&pd.request(&firing, 1)).get("links").is_none());
    let b = body(&pd.with_public_url(base).request(&firing, 1));
    assert_eq!(b["links"], serde_json::json!([{ "href": link, "text": "this alert in the kaudit API" }]));
}

/// Named messages reach every sink: in the webhook's and PagerDuty's JSON as they are, and as a
/// line of text in Slack and in Alertmanager's description.
#[test]
fn named_messages_reach_every_sink() {
    let mut named = alert(AlertState::Firing);
    let lost = kaudit_schema::NamedMessage {
        kind: kaudit_schema::NamedKind::Lost,
        fingerprint: "00000000000003ed".into(),
        copies: 1,
        partition: Some(1),
        offset: Some(2),
        replaced_by: None,
    };
    named.numbers.named = vec![lost];
    named.numbers.named_total = 3;
    assert_eq!(
        named.named_text().as_deref(),
        Some("Named messages: lost 00000000000003ed partition 1 offset 2 and 2 more.")
    );
    let slack = SinkConfig::Slack(SlackConfig { name: None, url: "http://127.0.0.1:1/s".into() }).build().unwrap();
    let text = body(&slack.request(&named, 1))["text"].as_str().unwrap().to_string();
    assert!(text.contains("lost 00000000000003ed partition 1 offset 2"), "{text}");
    assert!(super::alertmanager::description(&named).contains("Named messages: lost 00000000000003ed"));
    let webhook = serde_json::to_value(&named).unwrap();
    assert_eq!(webhook["numbers"]["named"][0]["offset"], 2);
    assert!(alert(AlertState::Firing).named_text().is_none());
    assert!(serde_json::to_value(alert(AlertState::Firing)).unwrap()["numbers"].get("named").is_none());
}
