//! The agent and the verifier against hostile or careless clients, each a real process on
//! loopback: a flood of fake topic names, idle and half-sent connections, secrets in failing
//! sinks, and services racing to create a new store. Every case is a row of the hostile trial
//! that found the problem; each asserts the bound that now holds.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Proc, free_port, http, kaudit, now_ms, wait_ok};

/// Peak resident memory of a process, from `/proc/<pid>/status` (`VmHWM`), in MiB.
fn peak_rss_mib(proc: &Proc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", proc.0.id())).unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    kib / 1024
}

/// An agent taking ingest records into `db`, with `extra` TOML appended.
fn ingest_agent(dir: &Path, port: u16, extra: &str) -> std::path::PathBuf {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"sqlite://{db}\"\ndata_dir = \"{data}\"\nagent_listen = \"127.0.0.1:{port}\"\n\
             [agent]\nname = \"ingest\"\nflush_interval_ms = 500\nbucket_width_ms = 5000\n[ingest]\n{extra}",
            db = dir.join("audit.db").display(),
            data = dir.join("agent").display()
        ),
    )
    .unwrap();
    config
}

/// A verifier over `db` judging `orders*` (producer → broker) with a webhook sink at `hook`.
fn verifier(dir: &Path, port: u16, hook: &str) -> std::path::PathBuf {
    let config = dir.join("verifier.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"sqlite://{db}\"\n[agent]\nflush_interval_ms = 500\n\
             [verifier]\nlisten = \"127.0.0.1:{port}\"\ngrace_ms = 2000\nevaluate_interval_ms = 1000\n\
             [[verifier.pipelines]]\ntopics = [\"orders\", \"orders.*\"]\ntiers = [\"producer\", \"broker\"]\n\
             [alerting]\nretry_base_ms = 100\nretry_max_ms = 500\n\
             [[alerting.sinks]]\ntype = \"webhook\"\nurl = \"{hook}\"\n",
            db = dir.join("audit.db").display()
        ),
    )
    .unwrap();
    config
}

/// A webhook receiver on loopback counting what it is sent.
async fn receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let inbox: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(inbox): axum::extract::State<Arc<Mutex<Vec<serde_json::Value>>>>,
                 body: axum::Json<serde_json::Value>| async move {
                    inbox.lock().unwrap().push(body.0);
                    "ok"
                },
            ),
        )
        .with_state(inbox.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, inbox)
}

/// One unauthenticated POST of 20,000 fake topics matching the pipeline's `orders.*` used to raise
/// 40,002 alerts and queue 120,006 notifications; now the flood guard sends a handful, and the
/// verifier's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_fake_topics_pages_a_handful_of_times() {
    let dir = tempfile::tempdir().unwrap();
    let (agent_port, verifier_port) = (free_port(), free_port());
    let agent_config = ingest_agent(dir.path(), agent_port, "");
    std::fs::write(
        &agent_config,
        std::fs::read_to_string(&agent_config).unwrap().replace("[ingest]", "max_streams = 50000\n[ingest]"),
    )
    .unwrap();
    let _agent = kaudit("agent", &agent_config, Some(&dir.path().join("agent.log")));
    wait_ok(agent_port, "/healthz", "agent", Duration::from_secs(30));
    let (hook, inbox) = receiver().await;
    let verifier_proc =
        kaudit("verifier", &verifier(dir.path(), verifier_port, &hook), Some(&dir.path().join("verifier.log")));
    wait_ok(verifier_port, "/healthz", "verifier", Duration::from_secs(30));

    let event_time = now_ms() - 10_000;
    let body: Vec<String> = (0..20_000)
        .map(|i| {
            format!(r#"{{"topic":"orders.card{i}","tier":"producer","fingerprint":"{i:x}","bytes":10,"event_time":{event_time}}}"#)
        })
        .collect();
    let (status, answer) = http(agent_port, "POST", "/v1/records", &body.join("\n")).unwrap();
    assert_eq!(status, 200, "{answer}");

    // Long enough for every new topic to be taken on (100 a pass) and its buckets judged.
    let started = Instant::now();
    let mut watched = String::new();
    while started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (_, metrics) = http(verifier_port, "GET", "/metrics", "").unwrap();
        watched = metrics.lines().filter(|l| l.starts_with("kaudit_verifier_topics_")).collect::<Vec<_>>().join("; ");
        if metrics.contains("kaudit_verifier_notifications_suppressed_total")
            && started.elapsed() > Duration::from_secs(20)
        {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // let the dispatcher deliver
    let received = inbox.lock().unwrap().len();
    let flood = inbox.lock().unwrap().iter().filter(|n| n["alert"]["kind"] == "flood").count();
    assert!(flood >= 1, "one summary alert names the flood ({received} received; {watched})");
    assert!(received <= 10, "{received} notifications for one flood: a handful expected ({watched})");
    let (status, alerts) = http(verifier_port, "GET", "/api/v1/alerts", "").unwrap();
    assert_eq!(status, 200);
    assert!(alerts.len() < 1_000_000, "the alert list is paged: {} bytes", alerts.len());
    let rss = peak_rss_mib(&verifier_proc);
    assert!(rss < 256, "verifier peak RSS {rss} MiB");
    eprintln!("flood: {received} notifications ({flood} flood summaries), verifier peak RSS {rss} MiB; {watched}");
}

/// Connections that send nothing, half a header or half a body are closed by the server's
/// timeouts, and past the connection cap the longest idle one gives way: `/healthz` and a valid
/// POST still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_do_not_starve_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = ingest_agent(dir.path(), port, "");
    let limits =
        "[http]\nmax_connections = 64\nheader_timeout_ms = 1000\nbody_timeout_ms = 1000\nidle_timeout_ms = 2000\n";
    std::fs::write(&config, format!("{}{limits}", std::fs::read_to_string(&config).unwrap())).unwrap();
    let agent = kaudit("agent", &config, Some(&dir.path().join("agent.log")));
    wait_ok(port, "/healthz", "agent", Duration::from_secs(30));

    let mut hostile = Vec::new();
    for i in 0..300 {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { continue };
        let _ = match i % 3 {
            0 => Ok(()),                                                                                 // idle
            1 => s.write_all(b"POST /v1/records HTTP/1.1\r\nHost: x\r\n"), // half a header
            _ => s.write_all(b"POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n[{"), // half a body
        };
        hostile.push(s);
    }
    let started = Instant::now();
    let (status, _) = http(port, "GET", "/healthz", "").expect("healthz answers under the hostile load");
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(5), "healthz took {:?}", started.elapsed());
    let record =
        format!(r#"[{{"topic":"orders","tier":"producer","fingerprint":"1","bytes":1,"event_time":{}}}]"#, now_ms());
    assert_eq!(http(port, "POST", "/v1/records", &record).map(|r| r.0), Some(200));

    // Every hostile connection is closed by the server within its timeouts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut closed = 0;
    for s in &mut hostile {
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 512];
        // Closed: end of stream, a last answer (408) before the close, or a reset. Open: the
        // read times out.
        closed += match s.read(&mut buf) {
            Ok(_) => 1,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => 0,
            Err(_) => 1,
        };
    }
    assert!(closed >= hostile.len() * 9 / 10, "{closed} of {} hostile connections closed", hostile.len());
    let rss = peak_rss_mib(&agent);
    assert!(rss < 256, "agent peak RSS {rss} MiB");
}

/// Secrets in sink URLs, tokens and passwords never reach a log line, an error or `check-config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // A receiver that refuses everything, so delivery fails and is logged.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refusing = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down") });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = dir.path().join("verifier.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"sqlite://{db}\"\n[agent]\nflush_interval_ms = 500\n\
             [verifier]\nlisten = \"127.0.0.1:{port}\"\ngrace_ms = 1000\nevaluate_interval_ms = 500\n\
             [[verifier.pipelines]]\ntopics = [\"orders\"]\ntiers = [\"producer\", \"broker\"]\n\
             [alerting]\nretry_base_ms = 100\nretry_max_ms = 200\n\
             [[alerting.sinks]]\ntype = \"webhook\"\nurl = \"http://{refusing}/hooks/PLANTEDPATH?token=PLANTEDTOKEN\"\nsecret = \"PLANTEDSECRET\"\n\
             [[alerting.sinks]]\ntype = \"slack\"\nurl = \"http://{refusing}/services/T000/B000/PLANTEDSLACK\"\n",
            db = dir.path().join("audit.db").display()
        ),
    )
    .unwrap();
    // A loss for the verifier to alert on: the producer tier reported one message, no broker.
    let store = kaudit_schema::SqliteStore::open(&dir.path().join("audit.db"), &Default::default()).unwrap();
    let mut tally = kaudit_schema::Tally::default();
    tally.add(1, 1);
    let start = (now_ms() - 20_000) / 5_000 * 5_000;
    let key = kaudit_schema::TallyKey {
        topic: "orders".into(),
        bucket_start_ms: start,
        tier: "producer".into(),
        agent_id: "p".into(),
    };
    let row = kaudit_schema::TallyRow { key, bucket_width_ms: 5_000, version: 1, tally };
    kaudit_schema::Store::write(&store, &kaudit_schema::FlushBatch { rows: vec![row], ..Default::default() })
        .await
        .unwrap();

    let log = dir.path().join("verifier.log");
    let mut verifier = Proc(
        std::process::Command::new(env!("CARGO_BIN_EXE_kaudit"))
            .args(["verifier", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "debug")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_ok(port, "/healthz", "verifier", Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(6)).await; // alerts raised, deliveries refused and retried
    verifier.terminate();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(["check-config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let bad_store = std::process::Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(["migrate", "--store", "scylla://admin:PLANTEDPASSWORD@127.0.0.1:1"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}{}{}{}",
        std::fs::read_to_string(&log).unwrap(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr),
        String::from_utf8_lossy(&bad_store.stdout),
        String::from_utf8_lossy(&bad_store.stderr)
    );
    assert!(text.contains("webhook") || text.contains("delivery"), "the failing deliveries were logged: {text}");
    assert!(!bad_store.status.success() && String::from_utf8_lossy(&bad_store.stderr).contains("password_env"));
    for secret in ["PLANTEDPATH", "PLANTEDTOKEN", "PLANTEDSECRET", "PLANTEDSLACK", "PLANTEDPASSWORD"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
}

/// An agent and a verifier started at the same moment on a new SQLite file both come up: the
/// migration is taken under a lock, and the loser finds the schema done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_starting_together_on_a_new_store_both_come_up() {
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let (agent_port, verifier_port) = (free_port(), free_port());
        let agent_config = ingest_agent(dir.path(), agent_port, "");
        let verifier_config = verifier(dir.path(), verifier_port, "http://127.0.0.1:9/hook");
        let mut agent = kaudit("agent", &agent_config, Some(&dir.path().join("agent.log")));
        let mut verifier = kaudit("verifier", &verifier_config, Some(&dir.path().join("verifier.log")));
        wait_ok(agent_port, "/healthz", "agent", Duration::from_secs(30));
        wait_ok(verifier_port, "/healthz", "verifier", Duration::from_secs(30));
        for (name, proc) in [("agent", &mut agent), ("verifier", &mut verifier)] {
            let status = proc.0.try_wait().unwrap();
            let log = std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default();
            assert!(status.is_none(), "round {round}: the {name} exited: {log}");
        }
    }
}

/// Records of `topic` stored across every agent id, read through the store.
async fn stored_count(db: &Path, topic: &str) -> u64 {
    let store = kaudit_schema::SqliteStore::open(db, &Default::default()).unwrap();
    let rows = kaudit_schema::Store::read_range(&store, topic, 0, now_ms() + 3_600_000).await.unwrap();
    rows.iter().map(|r| r.tally.count).sum()
}

/// A body of `n` records of `topic` whose fingerprints start at `first`.
fn records(topic: &str, first: u64, n: u64) -> String {
    let t = now_ms();
    (first..first + n)
        .map(|i| format!(r#"{{"topic":"{topic}","tier":"producer","fingerprint":"{i:x}","bytes":1,"event_time":{t}}}"#))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A 200 from ingest means the records survive `kill -9`: five kills with the store up and five
/// during a store outage (the SQLite file held under an exclusive lock by this test, so every
/// write fails and accepted records go to the fsynced spool), each followed by a restart that
/// replays the spool. Stored equals acknowledged, give or take the one request in flight at the
/// kill (counted but never answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_ingest_records_survive_kill_9_with_and_without_a_store_outage() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = ingest_agent(dir.path(), port, "");
    let db = dir.path().join("audit.db");
    let mut agent = kaudit("agent", &config, Some(&dir.path().join("agent-0.log")));
    wait_ok(port, "/healthz", "agent", Duration::from_secs(30));
    let (mut acked, mut next) = (0u64, 0u64);
    for round in 1..=10 {
        let outage = round > 5;
        let lock = outage.then(|| hold_exclusive_lock(&db));
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1_500) {
            match http(port, "POST", "/v1/records", &records("durable", next, 100)) {
                Some((200, _)) => acked += 100,
                other => panic!("round {round}: {other:?}"),
            }
            next += 100;
        }
        agent.0.kill().unwrap(); // SIGKILL right after the last answer
        agent.0.wait().unwrap();
        drop(lock); // the store is back
        agent = kaudit("agent", &config, Some(&dir.path().join(format!("agent-{round}.log"))));
        wait_ok(port, "/healthz", "agent", Duration::from_secs(30));
    }
    let started = Instant::now();
    let mut stored = 0;
    while started.elapsed() < Duration::from_secs(30) {
        stored = stored_count(&db, "durable").await;
        if stored >= acked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("acknowledged {acked}, stored {stored} across 10 kill -9 (5 during a store outage)");
    assert!(acked > 1_000, "{acked}");
    assert_eq!(stored, acked, "every acknowledged record is stored, and nothing twice");
}

/// Holds an exclusive lock on the SQLite file, as a wedged store would, until dropped: every write
/// of the agent (another process) fails once its busy timeout runs out.
fn hold_exclusive_lock(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    conn
}

/// A 16 MiB body of `0` lines and a 16 MiB JSON array are refused with a reason, in memory
/// bounded by the record limit, not by the body; records past the stream cap and far-future event
/// times neither open streams nor buckets without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bodies_and_name_floods_are_refused_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = ingest_agent(dir.path(), port, "");
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap().replace("[ingest]", "max_streams = 1000\n[ingest]"),
    )
    .unwrap();
    let agent = kaudit("agent", &config, Some(&dir.path().join("agent.log")));
    wait_ok(port, "/healthz", "agent", Duration::from_secs(30));
    let zeros = "0\n".repeat(8 << 20);
    let (status, answer) = http(port, "POST", "/v1/records", &zeros).unwrap();
    assert!((400..500).contains(&status), "{status} {}", &answer[..answer.len().min(300)]);
    assert!(answer.len() < 100_000, "the answer lists a bounded number of problems: {} bytes", answer.len());
    let array = format!("[{}]", vec!["0"; 8 << 20].join(","));
    let (status, _) = http(port, "POST", "/v1/records", &array).unwrap();
    assert!((400..500).contains(&status), "{status}");
    // 5,000 topics in one request: past the cap of 1,000 streams, refused whole, with the reason.
    let t = now_ms();
    let names: Vec<String> = (0..5_000)
        .map(|i| {
            format!(r#"{{"topic":"orders.t{i}","tier":"tier{}","fingerprint":"1","bytes":1,"event_time":{t}}}"#, i % 7)
        })
        .collect();
    let (status, answer) = http(port, "POST", "/v1/records", &names.join("\n")).unwrap();
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("max_streams"), "{answer}");
    // Far-future event times (up to year 9999) count as malformed in the arrival bucket.
    let future: Vec<String> = (0..20_000)
        .map(|i| {
            format!(
                r#"{{"topic":"orders","tier":"producer","fingerprint":"{i:x}","bytes":1,"event_time":{}}}"#,
                253_402_300_000_000_i64 - i * 60_000
            )
        })
        .collect();
    let (status, answer) = http(port, "POST", "/v1/records", &future.join("\n")).unwrap();
    assert_eq!(status, 200, "{answer}");
    let (_, metrics) = http(port, "GET", "/metrics", "").unwrap();
    assert!(metrics.len() < 200_000, "/metrics stays small: {} bytes", metrics.len());
    let open: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kaudit_agent_open_buckets "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::MAX);
    assert!(open < 100.0, "far-future records open no buckets: {open}");
    let rss = peak_rss_mib(&agent);
    eprintln!("garbage bodies: agent peak RSS {rss} MiB");
    assert!(rss < 256, "agent peak RSS {rss} MiB");
}

/// A spool entry that cannot be read is moved aside once and logged once, not retried in a tight
/// loop; the agent keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_spool_entry_is_quarantined_not_retried_forever() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = ingest_agent(dir.path(), port, "");
    let spool = dir.path().join("agent").join("spool").join("ingest").join("ingest");
    std::fs::create_dir_all(spool.join("00000000000000000007.batch")).unwrap();
    let log = dir.path().join("agent.log");
    let _agent = kaudit("agent", &config, Some(&log));
    wait_ok(port, "/healthz", "agent", Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(http(port, "GET", "/healthz", "").map(|r| r.0), Some(200));
    let record =
        format!(r#"[{{"topic":"orders","tier":"producer","fingerprint":"1","bytes":1,"event_time":{}}}]"#, now_ms());
    assert_eq!(http(port, "POST", "/v1/records", &record).map(|r| r.0), Some(200));
    assert!(spool.join("quarantine").exists(), "moved aside: {:?}", std::fs::read_dir(&spool).map(|d| d.count()));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().count() < 50, "logged once, not in a loop: {} lines", text.lines().count());
    let (_, metrics) = http(port, "GET", "/metrics", "").unwrap();
    assert!(metrics.contains("kaudit_agent_spool_quarantined_total 1"), "{metrics}");
}
