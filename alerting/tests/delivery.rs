//! Notifications delivered to real HTTP receivers on loopback (an axum server), through the durable
//! outbox in SQLite: outages are retried, restarts resume, nothing is dropped or repeated.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use kaudit_alerting::dispatch::Backoff;
use kaudit_alerting::sinks::WebhookConfig;
use kaudit_alerting::{Alert, AlertKind, AlertMetrics, AlertNumbers, AlertState, Dispatcher, Severity, SinkConfig};
use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{SqliteStore, Store};

#[derive(Default)]
struct Receiver {
    /// Requests to refuse with 503 before accepting.
    fail_first: AtomicUsize,
    accepted: Mutex<Vec<(HeaderMap, serde_json::Value)>>,
    refused: AtomicUsize,
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if r.fail_first.load(Ordering::SeqCst) > 0 {
        r.fail_first.fetch_sub(1, Ordering::SeqCst);
        r.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.accepted.lock().unwrap().push((headers, serde_json::from_slice(&body).unwrap()));
    StatusCode::OK
}

/// A receiver on a loopback port; dropping the returned handle's task stops it.
async fn serve(receiver: Arc<Receiver>, addr: &str) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/hook", post(hook)).with_state(receiver);
    (addr, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }))
}

fn alert(topic: &str, state: AlertState) -> Alert {
    Alert {
        dedup_key: Alert::dedup_key(AlertKind::Loss, topic, "consumer"),
        kind: AlertKind::Loss,
        state,
        severity: Severity::Critical,
        topic: topic.into(),
        upstream_tier: "producer".into(),
        tier: "consumer".into(),
        first_bucket_ms: 0,
        last_bucket_ms: 60_000,
        numbers: AlertNumbers { missing: 3, ..AlertNumbers::default() },
        detected_by: vec!["threshold".into()],
        starts_at_ms: 1,
        ends_at_ms: None,
        resolution: None,
    }
}

fn dispatcher(store: &SqliteStore, url: String, registry: &prometheus::Registry) -> Dispatcher {
    let sink = SinkConfig::Webhook(WebhookConfig { name: None, url, secret: Some("k".into()), secret_env: None })
        .build()
        .unwrap();
    let backoff =
        Backoff { base: Duration::from_millis(20), max: Duration::from_millis(200), poll: Duration::from_millis(20) };
    Dispatcher::new(Arc::new(store.clone()), vec![sink], AlertMetrics::register(registry).unwrap(), backoff)
}

async fn until(deadline: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_retried_and_each_notification_accepted_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("a.db"), &SqliteOptions::default()).unwrap();
    let receiver = Arc::new(Receiver { fail_first: AtomicUsize::new(4), ..Receiver::default() });
    let (addr, _server) = serve(receiver.clone(), "127.0.0.1:0").await;
    let registry = prometheus::Registry::new();
    let d = dispatcher(&store, format!("http://{addr}/hook"), &registry);
    d.record(&alert("orders", AlertState::Firing), 1_000).await.unwrap();
    d.record(&alert("payments", AlertState::Firing), 1_500).await.unwrap();
    // Coalesced: the receiver, down, will hear of `orders` once, in its latest state.
    d.record(&alert("orders", AlertState::Resolved), 2_000).await.unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(d.clone().run(async { stopped.await.unwrap_or(()) }));
    until(Duration::from_secs(20), || receiver.accepted.lock().unwrap().len() == 2).await;
    stop.send(()).unwrap();
    run.await.unwrap();

    assert_eq!(receiver.refused.load(Ordering::SeqCst), 4);
    let accepted = receiver.accepted.lock().unwrap().clone();
    let states: Vec<(&str, &str)> = accepted
        .iter()
        .map(|(_, b)| (b["alert"]["topic"].as_str().unwrap(), b["alert"]["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("payments", "firing"), ("orders", "resolved")], "in order, each once");
    for (headers, body) in accepted.iter() {
        let sig = headers["x-kaudit-signature"].to_str().unwrap();
        let raw = serde_json::to_vec(body).unwrap();
        assert_eq!(sig, kaudit_alerting::sinks::webhook_signature(b"k", &raw));
    }
    assert!(store.outbox("webhook", 10).await.unwrap().is_empty());
    let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
    assert!(text.contains("kaudit_verifier_notifications_sent_total{sink=\"webhook\"} 2"), "{text}");
    assert!(
        text.contains("kaudit_verifier_notifications_failed_total{outcome=\"retry\",sink=\"webhook\"} 4"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_dispatcher_resumes_the_outbox_without_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("a.db"), &SqliteOptions::default()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/hook");
    {
        // The receiver is down: nothing listens on the port.
        let d = dispatcher(&store, url.clone(), &prometheus::Registry::new());
        for topic in ["a", "b", "c"] {
            d.record(&alert(topic, AlertState::Firing), 1_000).await.unwrap();
        }
        let sink = d.sinks()[0].clone();
        assert_eq!(d.deliver_pending(&sink).await.unwrap(), (0, Some(1)));
        assert_eq!(d.deliver_pending(&sink).await.unwrap(), (0, Some(2)));
    } // the verifier stops here
    assert_eq!(store.outbox("webhook", 10).await.unwrap()[0].attempts, 2, "attempts survive the restart");

    let receiver = Arc::new(Receiver::default());
    let (_addr, _server) = serve(receiver.clone(), &format!("127.0.0.1:{port}")).await;
    let d = dispatcher(&store, url, &prometheus::Registry::new());
    let sink = d.sinks()[0].clone();
    assert_eq!(d.deliver_pending(&sink).await.unwrap(), (3, None));
    assert_eq!(d.deliver_pending(&sink).await.unwrap(), (0, None), "nothing left to send again");
    let topics: Vec<String> = receiver
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b["alert"]["topic"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(topics, ["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_and_pagerduty_receive_their_own_formats() {
    use kaudit_alerting::sinks::{PagerDutyConfig, SlackConfig};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("a.db"), &SqliteOptions::default()).unwrap();
    let receiver = Arc::new(Receiver::default());
    let (addr, _server) = serve(receiver.clone(), "127.0.0.1:0").await;
    let sinks = vec![
        SinkConfig::Slack(SlackConfig { name: None, url: format!("http://{addr}/hook") }).build().unwrap(),
        SinkConfig::Pagerduty(PagerDutyConfig {
            name: None,
            url: format!("http://{addr}/hook"),
            routing_key: Some("rk-1".into()),
            routing_key_env: None,
        })
        .build()
        .unwrap(),
    ];
    let d = Dispatcher::new(
        Arc::new(store),
        sinks.clone(),
        AlertMetrics::register(&prometheus::Registry::new()).unwrap(),
        Backoff::default(),
    );
    d.record(&alert("orders", AlertState::Firing), 1_000).await.unwrap();
    for sink in &sinks {
        assert_eq!(d.deliver_pending(sink).await.unwrap(), (1, None), "{}", sink.name);
    }
    let mut resolved = alert("orders", AlertState::Resolved);
    resolved.ends_at_ms = Some(9_000);
    d.record(&resolved, 9_000).await.unwrap();
    for sink in &sinks {
        assert_eq!(d.deliver_pending(sink).await.unwrap(), (1, None), "{}", sink.name);
    }
    let got = receiver.accepted.lock().unwrap().clone();
    let slack: Vec<&str> = got.iter().filter_map(|(_, b)| b["text"].as_str()).collect();
    assert_eq!(slack.len(), 2);
    assert!(slack[0].contains("[FIRING]") && slack[1].contains("[RESOLVED]"), "{slack:?}");
    let pd: Vec<(&str, &str)> = got
        .iter()
        .filter(|(_, b)| b.get("routing_key").is_some())
        .map(|(_, b)| (b["event_action"].as_str().unwrap(), b["dedup_key"].as_str().unwrap()))
        .collect();
    assert_eq!(pd, [("trigger", "loss/orders/consumer"), ("resolve", "loss/orders/consumer")]);
}
