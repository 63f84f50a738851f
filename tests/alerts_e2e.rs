//! Every piece in its own process: a mock Kafka cluster (helper binary), kcat as the producer, a
//! `kaudit agent` tapping the topic as tier `broker` and taking the producing app's reports over
//! `POST /v1/records` as tier `producer`, and `kaudit verifier` delivering alerts to a webhook
//! receiver in this test. The app reports one message it never produced: the receiver gets one
//! signed loss alert naming that message's fingerprint, and nothing else. Both processes' `/metrics`,
//! scraped over HTTP, pass `promtool check metrics`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use common::{free_port, http, kaudit, mock_cluster, now_ms, wait_ok};
use kaudit_agent::fingerprint;

const SECRET: &str = "e2e-secret";

/// Received notifications: (signature header, body).
type Inbox = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

async fn webhook_receiver() -> (u16, Inbox) {
    let inbox: Inbox = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(inbox): axum::extract::State<Inbox>,
                 headers: HeaderMap,
                 body: axum::body::Bytes| async move {
                    let signature =
                        headers.get("x-kaudit-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    inbox.lock().unwrap().push((signature, body.to_vec()));
                    "ok"
                },
            ),
        )
        .with_state(inbox.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, inbox)
}

fn promtool_ok(port: u16, who: &str) -> String {
    let (status, body) = http(port, "GET", "/metrics", "").unwrap();
    assert_eq!(status, 200, "{who} /metrics");
    let (ok, report) = kaudit_testkit::promtool_check(&body);
    assert!(ok && report.trim().is_empty(), "promtool on {who}: {report}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reported_but_never_produced_is_alerted_by_name_to_a_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, _cluster_stdin, bootstrap) = mock_cluster("orders:3");
    let (hook_port, inbox) = webhook_receiver().await;
    let (agent_port, verifier_port) = (free_port(), free_port());
    let db = dir.path().join("audit.db");
    let store = format!("store = \"sqlite://{}\"\ndata_dir = \"{}\"\n", db.display(), dir.path().display());

    let agent_config = dir.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "{store}agent_listen = \"127.0.0.1:{agent_port}\"\n\
             [agent]\nname = \"e2e\"\nbucket_width_ms = 5000\nflush_interval_ms = 100\n\
             [[agent.topics]]\npattern = \"orders\"\nbusiness_id = \"json:/order_id\"\nevent_time = \"json:/created_at\"\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             [tap]\ntier = \"broker\"\ntopics = [\"orders\"]\n\
             [ingest]\n"
        ),
    )
    .unwrap();
    let verifier_config = dir.path().join("verifier.toml");
    std::fs::write(
        &verifier_config,
        format!(
            "{store}[agent]\nflush_interval_ms = 100\n\
             [verifier]\nlisten = \"127.0.0.1:{verifier_port}\"\nevaluate_interval_ms = 200\ngrace_ms = 6000\n\
             [[verifier.pipelines]]\ntopics = [\"orders\"]\ntiers = [\"producer\", \"broker\"]\n\
             [alerting]\nretry_base_ms = 100\n\
             [[alerting.sinks]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();

    let mut agent = kaudit("agent", &agent_config, Some(&dir.path().join("agent.log")));
    wait_ok(agent_port, "/readyz", "agent (tap assigned)", Duration::from_secs(60));
    let mut verifier = kaudit("verifier", &verifier_config, Some(&dir.path().join("verifier.log")));
    wait_ok(verifier_port, "/readyz", "verifier", Duration::from_secs(60));

    // 300 orders, all with the same event time: kcat produces them; the app reports them and one
    // more, `order-lost`, that never reached Kafka.
    let event_time = now_ms();
    let order = |id: &str| format!(r#"{{"order_id":"{id}","amount_cents":1999,"created_at":{event_time}}}"#);
    let ids: Vec<String> = (0..300).map(|i| format!("order-{i}")).collect();
    let mut kcat = Command::new("kcat")
        .args(["-P", "-b", &bootstrap, "-t", "orders", "-K", "\t"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat must be installed (Debian package kcat; scripts/test.sh installs it)");
    let lines: String = ids.iter().map(|id| format!("{id}\t{}\n", order(id))).collect();
    kcat.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    assert!(kcat.wait().unwrap().success(), "kcat failed");

    let lost_fp = fingerprint(b"order-lost", order("order-lost").as_bytes());
    let report = |id: &str| {
        let payload = order(id);
        format!(
            r#"{{"topic":"orders","tier":"producer","business_id":"{id}","fingerprint":"{:016x}","bytes":{},"event_time":{event_time}}}"#,
            fingerprint(id.as_bytes(), payload.as_bytes()),
            payload.len()
        )
    };
    let ndjson: Vec<String> = ids.iter().map(|id| report(id)).chain([report("order-lost")]).collect();
    assert_eq!(
        http(agent_port, "POST", "/v1/records", &ndjson.join("\n")),
        Some((200, r#"{"accepted":301,"progress":0}"#.into()))
    );

    // The bucket closes within 5 s, the verifier waits 6 s of grace: the alert is due within ~12 s.
    let started = Instant::now();
    while inbox.lock().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no alert within 60 s; verifier log:\n{}",
            std::fs::read_to_string(dir.path().join("verifier.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waited = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await; // anything else would arrive by now
    let received = inbox.lock().unwrap().clone();
    assert_eq!(
        received.len(),
        1,
        "exactly one notification: {:?}",
        received.iter().map(|r| String::from_utf8_lossy(&r.1)).collect::<Vec<_>>()
    );
    let (signature, body) = &received[0];
    assert_eq!(signature, &kaudit_alerting::sinks::webhook_signature(SECRET.as_bytes(), body), "HMAC signature");
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    let alert = &json["alert"];
    assert_eq!(alert["dedup_key"], "loss/orders/broker", "{json}");
    assert_eq!(alert["state"], "firing", "{json}");
    assert_eq!((alert["upstream_tier"].as_str(), alert["tier"].as_str()), (Some("producer"), Some("broker")));
    assert_eq!(alert["numbers"]["upstream_count"], 301, "{json}");
    assert_eq!(alert["numbers"]["count"], 300, "{json}");
    assert_eq!(alert["numbers"]["missing"], 1, "{json}");
    assert_eq!(alert["numbers"]["lost_fingerprints"], serde_json::json!([format!("{lost_fp:016x}")]), "{json}");
    assert!(waited < Duration::from_secs(25), "alert took {waited:?}");

    let verifier_metrics = promtool_ok(verifier_port, "verifier");
    assert!(
        verifier_metrics.contains(r#"kaudit_verifier_notifications_sent_total{sink="webhook"} 1"#),
        "{verifier_metrics}"
    );
    let agent_metrics = promtool_ok(agent_port, "agent");
    assert!(
        agent_metrics.contains(r#"kaudit_agent_messages_total{tier="broker",topic="orders"} 300"#),
        "{agent_metrics}"
    );
    // Both processes say which build they are and how they fare.
    let build = format!("kaudit_build_info{{git_sha=\"{}\",", kaudit::support::process_metrics::GIT_SHA);
    for (who, text) in [("verifier", &verifier_metrics), ("agent", &agent_metrics)] {
        for family in [build.as_str(), "process_resident_memory_bytes ", "process_open_fds "] {
            assert!(text.lines().any(|l| l.starts_with(family)), "{who}: no {family:?} in\n{text}");
        }
    }
    let link = format!("http://127.0.0.1:{verifier_port}/api/v1/alerts?kind=loss&topic=orders&tier=broker");
    assert_eq!(json["url"], link.as_str(), "the webhook links to the alert in the verifier's API: {json}");

    let (status, alerts) = http(verifier_port, "GET", "/api/v1/alerts", "").unwrap();
    assert_eq!(status, 200);
    assert!(alerts.contains("loss/orders/broker"), "{alerts}");
    assert!(agent.terminate().success(), "agent exits 0 on SIGTERM");
    assert!(verifier.terminate().success(), "verifier exits 0 on SIGTERM");
}
