//! Secrets stay secret: sinks whose URL, key or secret are planted with a marker fail in every
//! way they can (refused with the request echoed back, unreachable, misconfigured, unset
//! variables), and no log line, error, validation message or `Debug` output shows the marker.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use axum::routing::post;
use kaudit_alerting::dispatch::Backoff;
use kaudit_alerting::sinks::{PagerDutyConfig, SlackConfig, WebhookConfig};
use kaudit_alerting::{Alert, AlertKind, AlertMetrics, AlertNumbers, AlertState, Dispatcher, Severity, SinkConfig};
use kaudit_schema::SqliteStore;
use kaudit_schema::sqlite::SqliteOptions;

const MARK: &str = "PLANTED";

/// Every log line, as the binary would print it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A receiver that refuses everything and echoes the request line and body back, as some do.
async fn echo(uri: Uri, body: Bytes) -> (StatusCode, String) {
    (StatusCode::FORBIDDEN, format!("forbidden: {uri} {}", String::from_utf8_lossy(&body)))
}

fn alert() -> Alert {
    Alert {
        dedup_key: Alert::dedup_key(AlertKind::Loss, "orders", "consumer"),
        kind: AlertKind::Loss,
        state: AlertState::Firing,
        severity: Severity::Critical,
        topic: "orders".into(),
        upstream_tier: "producer".into(),
        tier: "consumer".into(),
        first_bucket_ms: 0,
        last_bucket_ms: 0,
        numbers: AlertNumbers::default(),
        detected_by: vec!["threshold".into()],
        starts_at_ms: 0,
        ends_at_ms: None,
        resolution: None,
    }
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_an_error_or_debug() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(post(echo));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();

    let configs = [
        SinkConfig::Webhook(WebhookConfig {
            name: Some("refusing".into()),
            url: format!("http://{addr}/hook?token=TOKEN-{MARK}"),
            secret: Some(format!("HMAC-{MARK}")),
            secret_env: None,
        }),
        SinkConfig::Webhook(WebhookConfig {
            name: Some("unreachable".into()),
            url: format!("http://user:PASS-{MARK}@127.0.0.1:{closed}/hook?token=TOKEN-{MARK}"),
            secret: None,
            secret_env: None,
        }),
        SinkConfig::Slack(SlackConfig {
            name: Some("slack".into()),
            url: format!("http://127.0.0.1:{closed}/services/T0/B0/SLACK-{MARK}"),
        }),
        SinkConfig::Pagerduty(PagerDutyConfig {
            name: Some("pd".into()),
            url: format!("http://{addr}/v2/enqueue"),
            routing_key: Some(format!("ROUTING-{MARK}")),
            routing_key_env: None,
        }),
    ];
    let mut seen = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        seen.push(format!("{c:?}"));
        seen.extend(c.validate(&format!("alerting.sinks[{i}]")).iter().map(|i| i.to_string()));
    }
    let sinks: Vec<_> = configs.iter().map(|c| c.build().unwrap()).collect();
    seen.extend(sinks.iter().map(|s| format!("{s:?} {:?}", s.request(&alert(), 1))));

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("a.db"), &SqliteOptions::default()).unwrap();
    let metrics = AlertMetrics::register(&prometheus::Registry::new()).unwrap();
    let d = Dispatcher::new(Arc::new(store), sinks.clone(), metrics, Backoff::default());
    d.record(&alert(), 1_000).await.unwrap();
    for sink in &sinks {
        let outcome = d.deliver_pending(sink).await.unwrap();
        seen.push(format!("{outcome:?}"));
    }

    // Misconfigured: no scheme, and variables that are not set.
    let bad = [
        SinkConfig::Slack(SlackConfig { name: None, url: format!("hooks.slack.com/services/T0/B0/SLACK-{MARK}") }),
        SinkConfig::Webhook(WebhookConfig {
            name: None,
            url: format!("https://h/x?token={MARK}"),
            secret: None,
            secret_env: Some("KAUDIT_TEST_UNSET_WEBHOOK_SECRET".into()),
        }),
        SinkConfig::Pagerduty(PagerDutyConfig {
            name: None,
            url: format!("https://h/{MARK}"),
            routing_key: None,
            routing_key_env: Some("KAUDIT_TEST_UNSET_ROUTING_KEY".into()),
        }),
    ];
    let issues: Vec<String> = bad
        .iter()
        .enumerate()
        .flat_map(|(i, c)| c.validate(&format!("alerting.sinks[{i}]")))
        .map(|i| i.to_string())
        .collect();
    assert_eq!(
        issues,
        [
            "alerting.sinks[0].url: must start with http:// or https://",
            "alerting.sinks[1].secret_env: environment variable KAUDIT_TEST_UNSET_WEBHOOK_SECRET is not set",
            "alerting.sinks[2].routing_key_env: environment variable KAUDIT_TEST_UNSET_ROUTING_KEY is not set",
        ]
    );
    seen.extend(issues);
    seen.extend(bad.iter().map(|c| format!("{c:?} {}", c.build().map_or_else(|e| e, |s| format!("{s:?}")))));
    assert!(bad[1].build().unwrap_err().contains("KAUDIT_TEST_UNSET_WEBHOOK_SECRET"));

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("receiver refused the notification") && logs.contains("will retry"), "{logs}");
    assert!(logs.contains("127.0.0.1"), "the receiver is still named: {logs}");
    for (i, text) in seen.iter().chain([&logs]).enumerate() {
        assert!(!text.contains(MARK), "secret in output {i}: {text}");
    }
}
