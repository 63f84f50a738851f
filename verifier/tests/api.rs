//! The verifier service over HTTP on loopback: the query API, its 400s, readiness, and `/metrics`
//! checked by `promtool`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kaudit_alerting::dispatch::Backoff;
use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{
    FlushBatch, HeartbeatRow, ManualClock, ProgressRow, SqliteStore, Store, StreamId, Tally, TallyKey, TallyRow,
};
use kaudit_verifier::service::{ServiceParts, serve};
use kaudit_verifier::{PipelineConfig, VerifierConfig};
use serde_json::Value;

const W: i64 = 60_000;
const T0: i64 = 1_700_000_000_000 / W * W;

async fn seed(store: &SqliteStore) {
    let mut rows = Vec::new();
    for (tier, n) in [("producer", 500u64), ("consumer", 497)] {
        let mut t = Tally::default();
        (0..n).for_each(|i| {
            t.add(i + 1, 10);
            t.latency.record(30);
        });
        let key =
            TallyKey { topic: "orders".into(), bucket_start_ms: T0, tier: tier.into(), agent_id: format!("{tier}-a") };
        rows.push(TallyRow { key, bucket_width_ms: W, version: 1, tally: t });
    }
    store.write(&FlushBatch { rows, offsets: vec![], progress: vec![], heartbeats: vec![] }).await.unwrap();
}

/// Stops a service started by [`start`].
type Stop = tokio::sync::oneshot::Sender<()>;
/// The task of a service started by [`start`].
type Server = tokio::task::JoinHandle<Result<(), Box<dyn std::error::Error + Send + Sync>>>;

/// The verifier service (pipeline `orders`: producer, then consumer) over `store` on a loopback
/// port, its clock at `now_ms`: its base URL, the sender that stops it, and its task.
async fn start(store: &SqliteStore, now_ms: i64, http: kaudit_net::HttpOptions) -> (String, Stop, Server) {
    start_with(store, now_ms, http, &["consumer"], |_| vec![]).await
}

/// [`start`] with `consumers` compared with `producer`, and the sinks `sinks` makes for the API's
/// address.
async fn start_with(
    store: &SqliteStore,
    now_ms: i64,
    http: kaudit_net::HttpOptions,
    consumers: &[&str],
    sinks: impl FnOnce(std::net::SocketAddr) -> Vec<kaudit_alerting::Sink>,
) -> (String, Stop, Server) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = VerifierConfig {
        pipelines: vec![PipelineConfig {
            topics: vec!["orders".into()],
            tiers: vec!["producer".into()],
            consumers: consumers.iter().map(|c| c.to_string()).collect(),
        }],
        evaluate_interval_ms: 50,
        ..VerifierConfig::default()
    };
    let parts = ServiceParts {
        store: Arc::new(store.clone()),
        config,
        sinks: sinks(listener.local_addr().unwrap()),
        backoff: Backoff::default(),
        limits: Default::default(),
        flush_interval_ms: 5_000,
        registry: prometheus::Registry::new(),
        clock: Arc::new(ManualClock::new(now_ms)),
        http,
        ownership: kaudit_alerting::Ownership::sole("api-test"),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, parts, async { stopped.await.unwrap_or(()) }));
    (base, stop, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_api_answers_and_rejects_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("v.db"), &SqliteOptions::default()).unwrap();
    seed(&store).await;
    let (base, stop, server) = start(&store, T0 + 2 * W, kaudit_net::HttpOptions::default()).await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move { http.get(url).send().await.unwrap() }
    };

    assert_eq!(get("/healthz".into()).await.status(), 200);
    let started = Instant::now();
    while get("/readyz".into()).await.status() != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let topics: Value = get("/api/v1/topics".into()).await.json().await.unwrap();
    assert_eq!(topics["topics"][0]["name"], "orders");
    assert_eq!(topics["topics"][0]["tiers"], serde_json::json!(["producer", "consumer"]));

    let buckets: Value =
        get(format!("/api/v1/buckets?topic=orders&from={T0}&to={}", T0 + W)).await.json().await.unwrap();
    let b = &buckets["buckets"][0];
    assert_eq!(b["bucket_start"], "2023-11-14T22:13:00.000Z");
    assert_eq!(b["tiers"][0]["tier"], "consumer");
    assert_eq!(b["tiers"][0]["count"], 497);
    assert_eq!(b["tiers"][0]["latency_ms"]["p99"], 30);
    assert_eq!(b["verdicts"][0]["kind"], "loss");
    let rfc: Value = get("/api/v1/buckets?topic=orders&from=2023-11-14T22:13:00Z&to=2023-11-14T22:14:00Z".into())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rfc["buckets"], buckets["buckets"]);

    let alerts: Value = get("/api/v1/alerts?state=firing".into()).await.json().await.unwrap();
    assert_eq!(alerts["alerts"][0]["dedup_key"], "loss/orders/consumer");
    assert_eq!(alerts["alerts"][0]["numbers"]["missing"], 3);
    assert_eq!(alerts["next"], Value::Null, "one page");

    // Lists come in pages: `next` is the `after` of the following one.
    let more = |topic: &str| TallyRow {
        key: TallyKey { topic: topic.into(), ..tally(T0, "producer", "p", 1).key },
        ..tally(T0, "producer", "p", 1)
    };
    store.write(&FlushBatch { rows: vec![more("zz1"), more("zz2")], ..FlushBatch::default() }).await.unwrap();
    let page: Value = get("/api/v1/topics?limit=2".into()).await.json().await.unwrap();
    let names = |v: &Value| {
        v["topics"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!((names(&page), page["next"].as_str()), (vec!["orders".to_string(), "zz1".into()], Some("zz1")));
    let last: Value = get("/api/v1/topics?limit=2&after=zz1".into()).await.json().await.unwrap();
    assert_eq!((names(&last), &last["next"]), (vec!["zz2".to_string()], &Value::Null));
    let one: Value =
        get(format!("/api/v1/buckets?topic=orders&from={}&to={}&limit=1", T0 - W, T0 + W)).await.json().await.unwrap();
    assert_eq!(one["buckets"].as_array().unwrap().len(), 1);

    for (path, reason) in [
        ("/api/v1/buckets?from=0&to=1".to_string(), "missing parameter \"topic\""),
        ("/api/v1/buckets?topic=orders&from=soon&to=1".to_string(), "from=\"soon\" is not a time: "),
        ("/api/v1/buckets?topic=orders&from=2026-02-31&to=2026-03-02".to_string(), "February 2026 has 28 days"),
        ("/api/v1/buckets?topic=orders&from=5&to=5".to_string(), "must be before"),
        ("/api/v1/buckets?topic=orders&from=-1&to=5".to_string(), "before 1970"),
        (format!("/api/v1/buckets?topic=orders&from=0&to={}", 8 * 86_400_000), "7-day limit"),
        ("/api/v1/buckets?topic=orders&from=0&to=1&page=3".to_string(), "unknown parameter \"page\""),
        ("/api/v1/alerts?state=burning".to_string(), "expected firing or resolved"),
        ("/api/v1/alerts?limit=5001".to_string(), "not a number from 1 to 5000"),
        ("/api/v1/topics?limit=0".to_string(), "not a number from 1 to 5000"),
    ] {
        let resp = get(path.clone()).await;
        assert_eq!(resp.status(), 400, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(reason), "{path}: {body}");
    }

    let metrics = get("/metrics".into()).await.text().await.unwrap();
    assert!(metrics.contains("kaudit_verifier_buckets_evaluated_total 1"), "{metrics}");
    assert!(metrics.contains("kaudit_verifier_alerts_firing 1"), "{metrics}");
    let (ok, report) = kaudit_testkit::promtool_check(&metrics);
    assert!(ok && report.trim().is_empty(), "promtool: {report}");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

fn tally(bucket: i64, tier: &str, agent: &str, n: u64) -> TallyRow {
    let mut t = Tally::default();
    (0..n).for_each(|i| t.add(i + 1, 10));
    let key = TallyKey { topic: "orders".into(), bucket_start_ms: bucket, tier: tier.into(), agent_id: agent.into() };
    TallyRow { key, bucket_width_ms: W, version: 1, tally: t }
}

/// A producer instance that crashed holding the first bucket open, and a consumer 50 s short of
/// the third bucket's end: the API serves `indeterminate` and `pending` with what they rest on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_verdicts_are_served_with_their_detail() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("v.db"), &SqliteOptions::default()).unwrap();
    let now = T0 + 3 * W + 41_000;
    let rows = vec![
        tally(T0, "producer", "producer-a", 500),
        tally(T0, "consumer", "consumer-a", 497),
        tally(T0 + W, "producer", "producer-a", 100),
        tally(T0 + W, "consumer", "consumer-a", 100),
        tally(T0 + 2 * W, "producer", "producer-a", 100),
        tally(T0 + 2 * W, "consumer", "consumer-a", 50),
    ];
    let progress = vec![ProgressRow {
        topic: "orders".into(),
        tier: "consumer".into(),
        stream: StreamId::Partition(0),
        agent_id: "consumer-a".into(),
        watermark_ms: T0 + 2 * W + 10_000,
        caught_up: false,
        reported_at_ms: now,
        version: 1,
    }];
    let heartbeats = vec![HeartbeatRow {
        topic: "orders".into(),
        tier: "producer".into(),
        agent_id: "producer-a".into(),
        started_at_ms: T0 - W,
        heartbeat_ms: T0 + 30_000,
        open_from_ms: Some(T0),
        stopped: false,
        resumes: false,
        version: 1,
    }];
    store.write(&FlushBatch { rows, offsets: vec![], progress, heartbeats }).await.unwrap();
    let (base, stop, server) = start(&store, now, kaudit_net::HttpOptions::default()).await;
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http.get(format!("{base}/readyz")).send().await.unwrap().status() != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let url = format!("{base}/api/v1/buckets?topic=orders&from={T0}&to={}", T0 + 3 * W);
    let buckets: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    let verdict = |i: usize| buckets["buckets"][i]["verdicts"][0].clone();
    assert_eq!(verdict(0)["kind"], "indeterminate", "{buckets}");
    assert_eq!((verdict(0)["upstream_count"].as_u64(), verdict(0)["count"].as_u64()), (Some(500), Some(497)));
    let vanished = &verdict(0)["detail"]["vanished"][0];
    assert_eq!((vanished["agent_id"].as_str(), vanished["tier"].as_str()), (Some("producer-a"), Some("producer")));
    assert_eq!(vanished["last_heartbeat_ms"].as_i64(), Some(T0 + 30_000));
    assert_eq!(verdict(1)["kind"], "complete");
    assert!(verdict(1)["detail"].is_null());
    assert_eq!(verdict(2)["kind"], "pending");
    assert_eq!(verdict(2)["detail"], serde_json::json!({ "behind_tier": "consumer", "lag_ms": 50_000 }));

    let alerts: Value =
        http.get(format!("{base}/api/v1/alerts?state=firing")).send().await.unwrap().json().await.unwrap();
    let keys: Vec<&str> =
        alerts["alerts"].as_array().unwrap().iter().map(|a| a["dedup_key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["tier_down/orders/producer"], "no loss alert for an indeterminate or pending bucket");

    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        r#"kaudit_verifier_agents_live{tier="producer",topic="orders"} 0"#,
        r#"kaudit_verifier_tier_lag_seconds{tier="consumer",topic="orders"} 91"#,
        r#"kaudit_verifier_verdicts_total{kind="indeterminate"} 1"#,
        r#"kaudit_verifier_verdicts_total{kind="pending"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let (ok, report) = kaudit_testkit::promtool_check(&metrics);
    assert!(ok && report.trim().is_empty(), "promtool: {report}");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// The API behind read tokens (two, for rotation): 401 without, 403 for a write token, 200 with
/// either read token or an admin one; probes stay open. Over TLS nothing changes but the scheme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_needs_a_read_token_and_probes_stay_open() {
    use kaudit_net::{HttpOptions, Role};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("v.db"), &SqliteOptions::default()).unwrap();
    seed(&store).await;
    let (read_a, read_b) = ("read-token-aaaaaaaaaaaaaa", "read-token-bbbbbbbbbbbbbb");
    let (write, admin) = ("write-token-cccccccccccc", "admin-token-dddddddddddd");
    let http_options = HttpOptions::default()
        .with_token(Role::Read, read_a)
        .with_token(Role::Read, read_b)
        .with_token(Role::Write, write)
        .with_token(Role::Admin, admin);
    let (base, stop, server) = start(&store, T0 + 2 * W, http_options).await;
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap() }
    };
    let unauthorized = get("/api/v1/topics", None).await;
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(unauthorized.headers()["www-authenticate"], "Bearer realm=\"kaudit\"");
    assert_eq!(get("/api/v1/topics", Some("read-token-not-configured")).await.status(), 401);
    assert_eq!(get("/api/v1/topics", Some(write)).await.status(), 403);
    for token in [read_a, read_b, admin] {
        let answer = get("/api/v1/topics", Some(token)).await;
        assert_eq!(answer.status(), 200);
        let topics: Value = answer.json().await.unwrap();
        assert_eq!(topics["topics"][0]["name"], "orders");
    }
    for probe in ["/healthz", "/metrics"] {
        assert_eq!(get(probe, None).await.status(), 200, "{probe}");
    }
    let metrics = get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains(r#"kaudit_http_requests_refused_total{reason="wrong_role"} 1"#), "{metrics}");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
}

/// Two alerts (a loss, and duplicates on a tier whose name has a slash) posted to an Alertmanager
/// stand-in: each `generatorURL` is the API's own address with the alert's kind, topic and tier,
/// and following it returns exactly that alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_notification_links_to_exactly_its_alert() {
    use kaudit_alerting::sinks::AlertmanagerConfig;
    use kaudit_alerting::{PublicUrl, SinkConfig};
    type Inbox = Arc<std::sync::Mutex<Vec<Value>>>;

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("v.db"), &SqliteOptions::default()).unwrap();
    let rows = vec![
        tally(T0, "producer", "producer-a", 500),
        tally(T0, "consumer", "consumer-a", 497),
        tally(T0, "consumer/billing", "billing-a", 500),
        tally(T0, "consumer/billing", "billing-b", 3),
    ];
    store.write(&FlushBatch { rows, ..FlushBatch::default() }).await.unwrap();
    let inbox: Inbox = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let alertmanager = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/api/v2/alerts",
            axum::routing::post(
                |axum::extract::State(inbox): axum::extract::State<Inbox>, body: axum::Json<Value>| async move {
                    inbox.lock().unwrap().extend(body.0.as_array().unwrap().iter().cloned());
                    "ok"
                },
            ),
        )
        .with_state(inbox.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let sink = SinkConfig::Alertmanager(AlertmanagerConfig {
        name: None,
        url: alertmanager,
        generator_url: None,
        repost_interval_ms: 60_000,
    });
    let sinks = |api| vec![sink.build().unwrap().with_public_url(PublicUrl::from_listen(api, false))];
    let (base, stop, server) =
        start_with(&store, T0 + 2 * W, kaudit_net::HttpOptions::default(), &["consumer", "consumer/billing"], sinks)
            .await;

    let started = Instant::now();
    while inbox.lock().unwrap().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(20), "two alerts expected: {:?}", inbox.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let posted = inbox.lock().unwrap().clone();
    let mut links: Vec<(String, String)> = posted
        .iter()
        .map(|a| (a["labels"]["dedup_key"].as_str().unwrap().into(), a["generatorURL"].as_str().unwrap().into()))
        .collect();
    links.sort();
    links.dedup();
    assert_eq!(
        links,
        [
            (
                "duplicates/orders/consumer/billing".to_string(),
                format!("{base}/api/v1/alerts?kind=duplicates&topic=orders&tier=consumer%2Fbilling")
            ),
            ("loss/orders/consumer".to_string(), format!("{base}/api/v1/alerts?kind=loss&topic=orders&tier=consumer")),
        ]
    );
    let http = reqwest::Client::new();
    for (key, link) in &links {
        let answer: Value = http.get(link).send().await.unwrap().json().await.unwrap();
        let alerts = answer["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1, "{link}: {answer}");
        assert_eq!(alerts[0]["dedup_key"], key.as_str(), "{link}: {answer}");
    }
    let all: Value = http.get(format!("{base}/api/v1/alerts")).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["alerts"].as_array().unwrap().len(), 2, "unfiltered: both");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// Rows whose sketches name 3 lost messages and 2 extra copies in one bucket: the diff endpoint
/// lists each with its partition and offset, bad requests get their 400 or 422, and the loss
/// alert carries the named messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diff_endpoint_and_the_alerts_name_the_messages() {
    use kaudit_schema::difference::{DEFAULT_GEOMETRY, DifferenceSketch, Locator};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("v.db"), &SqliteOptions::default()).unwrap();
    let sketched = |tier: &str, offsets: &[i64]| {
        let mut t = Tally { sketch: Some(DifferenceSketch::new(DEFAULT_GEOMETRY)), ..Tally::default() };
        // A duplicate sits at its own offset but has its original's fingerprint (offset mod 100).
        offsets
            .iter()
            .for_each(|o| t.add_at(1_000 + (*o % 100) as u64, 10, Some(Locator { partition: 0, offset: *o })));
        let key =
            TallyKey { topic: "orders".into(), bucket_start_ms: T0, tier: tier.into(), agent_id: format!("{tier}-a") };
        TallyRow { key, bucket_width_ms: W, version: 1, tally: t }
    };
    let up: Vec<i64> = (0..100).collect();
    let down: Vec<i64> = (0..100).filter(|o| !(5..8).contains(o)).chain([110, 111]).collect();
    let rows = vec![sketched("producer", &up), sketched("consumer", &down)];
    store.write(&FlushBatch { rows, ..FlushBatch::default() }).await.unwrap();
    let (base, stop, server) = start(&store, T0 + 2 * W, kaudit_net::HttpOptions::default()).await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move { http.get(url).send().await.unwrap() }
    };

    let diff = get(format!("/api/v1/buckets/orders/{T0}/diff?tier=consumer")).await;
    assert_eq!(diff.status(), 200);
    let diff: Value = diff.json().await.unwrap();
    assert_eq!(
        (diff["upstream_tier"].as_str(), diff["upstream_count"].as_u64(), diff["count"].as_u64()),
        (Some("producer"), Some(100), Some(99))
    );
    let named = &diff["named"];
    assert_eq!(
        (named["complete"].as_bool(), named["lost"].as_u64(), named["extra"].as_u64()),
        (Some(true), Some(3), Some(2))
    );
    let at = |kind: &str| -> Vec<i64> {
        named["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["kind"] == kind)
            .map(|m| m["offset"].as_i64().unwrap())
            .collect()
    };
    assert_eq!((at("lost"), at("extra")), (vec![5, 6, 7], vec![110, 111]));
    assert_eq!(named["messages"][0]["fingerprint"], format!("{:016x}", 1_005));
    let rfc: Value =
        get("/api/v1/buckets/orders/2023-11-14T22:13:00Z/diff?tier=consumer".into()).await.json().await.unwrap();
    assert_eq!(rfc["named"], diff["named"], "the bucket as RFC 3339");

    for (path, status, says) in [
        (format!("/api/v1/buckets/orders/{T0}/diff"), 400, "`tier` is required"),
        (format!("/api/v1/buckets/orders/{T0}/diff?tier=producer"), 400, "no upstream tier"),
        (format!("/api/v1/buckets/orders/{}/diff?tier=consumer", T0 + W), 400, "no tally rows"),
        ("/api/v1/buckets/orders/yesterday/diff?tier=consumer".to_string(), 400, "bucket"),
        (format!("/api/v1/buckets/orders/{T0}/diff?tier=consumer&x=1"), 400, "x"),
    ] {
        let r = get(path.clone()).await;
        assert_eq!(r.status(), status, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(says), "{path}: {body}");
    }

    // The loss alert names them (and the duplicates are an alert of their own).
    let started = Instant::now();
    let alerts = loop {
        let alerts: Value = get("/api/v1/alerts?state=firing".into()).await.json().await.unwrap();
        if alerts["alerts"].as_array().unwrap().len() >= 2 {
            break alerts;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "alerts: {alerts}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let kinds: Vec<&str> = alerts["alerts"].as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["duplicates", "loss"]);
    let loss = &alerts["alerts"][1]["numbers"];
    assert_eq!(
        (loss["missing"].as_u64(), loss["extra"].as_u64(), loss["named_total"].as_u64()),
        (Some(3), Some(2), Some(5))
    );
    assert_eq!(loss["named"][0]["offset"], 5);
    assert_eq!(loss["named"][0]["kind"], "lost");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
