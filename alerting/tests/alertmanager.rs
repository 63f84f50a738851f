//! A notification posted to a real Prometheus Alertmanager (Debian's `prometheus-alertmanager`,
//! started here on loopback), then read back from its API.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaudit_alerting::dispatch::Backoff;
use kaudit_alerting::sinks::AlertmanagerConfig;
use kaudit_alerting::{Alert, AlertKind, AlertMetrics, AlertNumbers, AlertState, Dispatcher, Severity, SinkConfig};
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
    let config = dir.join("alertmanager.yml");
    std::fs::write(&config, "route:\n  receiver: discard\nreceivers:\n  - name: discard\n").unwrap();
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
    let sink = SinkConfig::Alertmanager(AlertmanagerConfig { name: None, url: base.clone(), generator_url: None })
        .build()
        .unwrap();
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
}
