//! An agent writing through the Scylla backend while its CQL server is stopped and started again
//! loses no tally: the flusher's queue and spool hold the batches and replay them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaudit_agent::{
    AgentMetrics, Auditor, AuditorOptions, Clock, Flusher, FlusherOptions, ManualClock, Spool, fingerprint,
};
use kaudit_schema::scylladb::migrate::migrate;
use kaudit_schema::scylladb::{ScyllaOptions, connect_session};
use kaudit_schema::{ScyllaStore, Store, Tally};
use kaudit_testkit::CqlServer;

const W: i64 = 60_000;
const T0: i64 = 1_700_000_000_000 / W * W;

fn free_loopback_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_cql_server_mid_run_loses_no_tally() {
    let mut server = CqlServer::start_on(free_loopback_port());
    let options = ScyllaOptions {
        keyspace: "outage".into(),
        await_schema_agreement: false,
        request_timeout_ms: 1_000,
        connection_timeout_ms: 1_000,
        ..ScyllaOptions::default()
    };
    let hosts = vec![server.addr().to_string()];
    let session = connect_session(&hosts, &options).await.unwrap();
    migrate(&session, &options).await.unwrap();
    let store = ScyllaStore::from_session(session, &hosts, &options).await.unwrap();

    let clock = ManualClock::new(T0);
    let auditor = Auditor::new(AuditorOptions {
        clock: Arc::new(clock.clone()),
        close_after_ms: 2 * W,
        ..AuditorOptions::named("outage")
    });
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool"), 16 << 20).unwrap();
    let metrics = AgentMetrics::register(&prometheus::Registry::new()).unwrap();
    let options = FlusherOptions { max_queued_batches: 2, ..FlusherOptions::default() };
    let mut flusher = Flusher::new(auditor.clone(), Arc::new(store.clone()), Some(spool), options, metrics);

    let mut truth: BTreeMap<i64, Tally> = BTreeMap::new();
    let mut n = 0u64;
    let mut send = |k: u64| {
        for _ in 0..k {
            n += 1;
            let id = format!("m-{n}");
            let event = clock.now_ms() - (n as i64 % 5) * 700;
            auditor.record("orders", "producer", id.as_bytes(), b"body", Some(event));
            truth.entry(event.div_euclid(W) * W).or_default().add(fingerprint(id.as_bytes(), b"body"), 4);
        }
    };

    send(100);
    assert_eq!(flusher.flush_once().await.pending, 0);

    server.stop();
    for _ in 0..6 {
        clock.advance(W / 2);
        send(50);
        let report = flusher.flush_once().await;
        assert_eq!(report.written, 0, "the server is down");
    }
    assert_eq!(flusher.pending(), 6, "every batch of the outage is held");

    server.restart();
    send(25);
    let started = Instant::now();
    while flusher.flush_once().await.pending > 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "backlog did not drain after the restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let rows = store.read_range("orders", T0 - 2 * W, T0 + 10 * W).await.unwrap();
    let mut stored: BTreeMap<i64, (u64, u64, u64)> = BTreeMap::new();
    for row in rows {
        let e = stored.entry(row.key.bucket_start_ms).or_default();
        e.0 += row.tally.count;
        e.1 ^= row.tally.fp_xor;
        e.2 = e.2.wrapping_add(row.tally.fp_sum);
    }
    let expected: BTreeMap<i64, (u64, u64, u64)> =
        truth.iter().map(|(b, t)| (*b, (t.count, t.fp_xor, t.fp_sum))).collect();
    assert_eq!(stored, expected);
    assert_eq!(expected.values().map(|v| v.0).sum::<u64>(), 425);
}
