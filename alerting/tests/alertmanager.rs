//! A notification posted to a real Prometheus Alertmanager (Debian's `prometheus-alertmanager`,
//! started here on loopback), then read back from its API.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaudit_alerting::dispatch::Backoff;
use kaudit_alerting::sinks::AlertmanagerConfig;
use kaudit_alerting::{
    Alert, AlertKind, AlertMetrics, AlertNumbers, AlertState, Dispatcher, PublicUrl, Severity, SinkConfig,
};
use kaudit_schema::SqliteStore;
use kaudit_schema::sqlite::SqliteOptions;

struct Alertmanager(Child);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_alertmanager(dir: &std::path::Path, port: u16) -> Alertmanager {
    start_alertmanager_with(dir, port, "")
}

/// Alertmanager with `global` settings (`global:\n  resolve_timeout: 2s\n`) before its route.
fn start_alertmanager_with(dir: &std::path::Path, port: u16, global: &str) -> Alertmanager {
    let config = dir.join("alertmanager.yml");
    std::fs::write(&config, format!("{global}route:\n  receiver: discard\nreceivers:\n  - name: discard\n")).unwrap();
    let child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager must be installed (scripts/test.sh installs it)");
    Alertmanager(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_receives_and_lists_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _am = start_alertmanager(dir.path(), port);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while !client.get(format!("{base}/-/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(started.elapsed() < Duration::from_secs(30), "alertmanager did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let store = SqliteStore::open(&dir.path().join("a.db"), &SqliteOptions::default()).unwrap();
    let sink = SinkConfig::Alertmanager(AlertmanagerConfig {
        name: None,
        url: base.clone(),
        generator_url: None,
        repost_interval_ms: 60_000,
    })
    .build()
    .unwrap()
    .with_public_url(PublicUrl::parse("http://verifier.example:9464").unwrap());
    let d = Dispatcher::new(
        Arc::new(store),
        vec![sink.clone()],
        AlertMetrics::register(&prometheus::Registry::new()).unwrap(),
        Backoff::default(),
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let alert = Alert {
        dedup_key: Alert::dedup_key(AlertKind::Duplicates, "orders", "consumer/billing"),
        kind: AlertKind::Duplicates,
        state: AlertState::Firing,
        severity: Severity::Warning,
        topic: "orders".into(),
        upstream_tier: "broker".into(),
        tier: "consumer/billing".into(),
        first_bucket_ms: now - 120_000,
        last_bucket_ms: now - 60_000,
        numbers: AlertNumbers {
            extra: 30,
            upstream_count: 20_000,
            count: 20_030,
            duplicate_ratio: 0.0015,
            ..AlertNumbers::default()
        },
        detected_by: vec!["threshold".into()],
        starts_at_ms: now - 1_000,
        ends_at_ms: None,
        resolution: None,
    };
    d.record(&alert, now).await.unwrap();
    assert_eq!(d.deliver_pending(&sink).await.unwrap(), (1, None));

    let listed: serde_json::Value =
        client.get(format!("{base}/api/v2/alerts")).send().await.unwrap().json().await.unwrap();
    let alerts = listed.as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{listed}");
    let labels = &alerts[0]["labels"];
    assert_eq!(labels["alertname"], "KauditDuplicates");
    assert_eq!(labels["topic"], "orders");
    assert_eq!(labels["tier"], "consumer/billing");
    assert_eq!(labels["severity"], "warning");
    assert_eq!(alerts[0]["status"]["state"], "active");
    assert!(alerts[0]["annotations"]["summary"].as_str().unwrap().contains("30 duplicate messages"));
    assert_eq!(
        alerts[0]["generatorURL"],
        "http://verifier.example:9464/api/v1/alerts?kind=duplicates&topic=orders&tier=consumer%2Fbilling",
        "Alertmanager keeps the link to exactly this alert in the verifier's API"
    );
}

/// Alertmanager's listed alerts (resolved ones are not listed).
async fn listed(client: &reqwest::Client, base: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = client.get(format!("{base}/api/v2/alerts")).send().await.unwrap().json().await.unwrap();
    v.as_array().unwrap().clone()
}

/// With `resolve_timeout: 2s` and a re-post every 500 ms (so `endsAt` 1.5 s ahead each time), a
/// firing alert is still listed long after both would have ended it without re-posts, and is gone
/// once the resolve is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firing_alerts_are_reposted_and_stay_listed_until_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _am = start_alertmanager_with(dir.path(), port, "global:\n  resolve_timeout: 2s\n");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while !client.get(format!("{base}/-/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(started.elapsed() < Duration::from_secs(30), "alertmanager did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let store = SqliteStore::open(&dir.path().join("a.db"), &SqliteOptions::default()).unwrap();
    let sink = SinkConfig::Alertmanager(AlertmanagerConfig {
        name: None,
        url: base.clone(),
        generator_url: None,
        repost_interval_ms: 500,
    })
    .build()
    .unwrap();
    let backoff = Backoff { poll: Duration::from_millis(100), ..Backoff::default() };
    let d = Dispatcher::new(
        Arc::new(store),
        vec![sink],
        AlertMetrics::register(&prometheus::Registry::new()).unwrap(),
        backoff,
    );
    let now = kaudit_alerting::time::now_ms();
    let mut alert = Alert {
        dedup_key: Alert::dedup_key(AlertKind::Loss, "orders", "consumer/billing"),
        kind: AlertKind::Loss,
        state: AlertState::Firing,
        severity: Severity::Critical,
        topic: "orders".into(),
        upstream_tier: "broker".into(),
        tier: "consumer/billing".into(),
        first_bucket_ms: now - 120_000,
        last_bucket_ms: now - 60_000,
        numbers: AlertNumbers {
            missing: 2,
            upstream_count: 20_000,
            count: 19_998,
            loss_ratio: 1e-4,
            ..AlertNumbers::default()
        },
        detected_by: vec!["threshold".into()],
        starts_at_ms: now - 1_000,
        ends_at_ms: None,
        resolution: None,
    };
    d.record(&alert, now).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(d.clone().run(async move {
        let _ = stopped.await;
    }));

    // Well past resolve_timeout (2 s) and three re-post intervals (1.5 s).
    let firing_since = Instant::now();
    while firing_since.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if firing_since.elapsed() > Duration::from_secs(1) {
            let alerts = listed(&client, &base).await;
            assert_eq!(alerts.len(), 1, "still firing after {:?}: {alerts:?}", firing_since.elapsed());
            assert_eq!(alerts[0]["status"]["state"], "active");
        }
    }
    let alerts = listed(&client, &base).await;
    let description = alerts[0]["annotations"]["description"].as_str().unwrap();
    assert!(
        description.starts_with("consumer/billing counted 19998 of the 20000 messages broker counted"),
        "{description}"
    );

    alert.state = AlertState::Resolved;
    alert.ends_at_ms = Some(kaudit_alerting::time::now_ms());
    alert.resolution = Some("3 clean buckets".into());
    d.record(&alert, kaudit_alerting::time::now_ms()).await.unwrap();
    let resolving = Instant::now();
    while !listed(&client, &base).await.is_empty() {
        assert!(resolving.elapsed() < Duration::from_secs(10), "the resolved alert is still listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And re-posts do not bring it back.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(listed(&client, &base).await.is_empty());
    stop.send(()).unwrap();
    running.await.unwrap();
}
