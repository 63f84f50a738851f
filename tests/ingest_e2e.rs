//! Ingest mode as a separate process: records over HTTP (JSON array and NDJSON) and UDP, bad
//! requests answered 400 with the reasons, and SIGTERM flushing every tally to the store.

mod common;

use std::time::{Duration, Instant};

use common::free_port;

use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{SqliteStore, Store};

fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    common::http(port, method, path, body).expect("the agent answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_udp_records_are_counted_and_flushed_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (port, udp_port) = (free_port(), free_port());
    let db = dir.path().join("audit.db");
    let config = dir.path().join("ingest.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"sqlite://{}\"\ndata_dir = \"{}\"\nagent_listen = \"127.0.0.1:{port}\"\n[agent]\nname = \"ingest-php\"\n\
             [ingest]\nudp_listen = \"127.0.0.1:{udp_port}\"\n",
            db.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let mut agent = common::kaudit("agent", &config, None);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "agent did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let rec = |i: u64| {
        format!(
            r#"{{"topic":"orders","tier":"producer/php","business_id":"o-{i}","payload_xxh64":"{:016x}","bytes":100,"event_time":{now}}}"#,
            i * 7919
        )
    };

    let array = format!("[{}]", (0..300).map(rec).collect::<Vec<_>>().join(","));
    assert_eq!(http(port, "POST", "/v1/records", &array), (200, r#"{"accepted":300,"progress":0}"#.to_string()));
    let ndjson = (300..500).map(rec).collect::<Vec<_>>().join("\n");
    assert_eq!(http(port, "POST", "/v1/records", &ndjson).0, 200);
    let (status, body) = http(port, "POST", "/v1/records", &format!("{}\n{{\"topic\":\"orders\"}}", rec(999)));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("line 2: tier: missing"), "{body}");

    assert_eq!(http(port, "POST", "/v1/records", "[]"), (200, r#"{"accepted":0,"progress":0}"#.to_string()));
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let lines: String = (0..50).map(|i| format!("v1 orders consumer/go fp={:x} 100 {now} o-{i}\n", 1000 + i)).collect();
    udp.send_to(format!("{lines}v1 orders consumer/go md5=zz 1 - bad\n").as_bytes(), ("127.0.0.1", udp_port)).unwrap();
    let started = Instant::now();
    loop {
        let (_, metrics) = http(port, "GET", "/metrics", "");
        if metrics.contains(r#"kaudit_agent_ingest_records_total{outcome="accepted",protocol="udp"} 50"#) {
            assert!(
                metrics.contains(r#"kaudit_agent_ingest_records_total{outcome="rejected",protocol="udp"} 1"#),
                "{metrics}"
            );
            assert!(
                // The refused request's two records (all or nothing: the valid one is refused too).
                metrics.contains(r#"kaudit_agent_ingest_records_total{outcome="rejected",protocol="http"} 2"#),
                "{metrics}"
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "udp records not counted: {metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }

    assert!(agent.terminate().success(), "exit 0 on SIGTERM");
    let store = SqliteStore::open(&db, &SqliteOptions::default()).unwrap();
    let rows = store.read_range("orders", now - 120_000, now + 60_000).await.unwrap();
    let count = |tier: &str| rows.iter().filter(|r| r.key.tier == tier).map(|r| r.tally.count).sum::<u64>();
    assert_eq!((count("producer/php"), count("consumer/go")), (500, 50), "every accepted record is in the store");
    assert!(rows.iter().all(|r| r.key.agent_id.starts_with("ingest-php-")));
}
