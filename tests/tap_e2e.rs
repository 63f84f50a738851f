//! The tap sidecar as a separate process against a mock Kafka cluster in another process, fed by
//! kcat: killed with SIGKILL mid-stream and restarted, its stored tallies equal what kcat
//! produced. Its `/metrics`, scraped over HTTP, pass `promtool check metrics`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{http, kaudit, mock_cluster, wait_ok};

use kaudit_agent::fingerprint;
use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{SqliteStore, Store};

const W: i64 = 60_000;

/// Event times are recent (the last three buckets), so a restarted tap must continue its stored
/// rows: those buckets are still open, not handled as late rows.
fn base_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    now / W * W - 2 * W
}

/// Produce messages `range` with kcat (an independent producer), one kcat run per event-time
/// bucket (`-H event-time=...` applies to a whole run); returns after kcat has flushed.
fn produce(bootstrap: &str, base: i64, range: std::ops::Range<u64>, truth: &mut BTreeMap<i64, (u64, u64, u64)>) {
    let mut by_event: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
    for i in range {
        by_event.entry(base + (i % 3) as i64 * W + 1_000).or_default().push(i);
    }
    for (event, ids) in by_event {
        let mut kcat = Command::new("kcat")
            .args(["-P", "-b", bootstrap, "-t", "orders", "-K", ":", "-H", &format!("event-time={event}")])
            .stdin(Stdio::piped())
            .spawn()
            .expect("kcat must be installed (Debian package kcat; scripts/test.sh installs it)");
        let mut input = String::new();
        for i in ids {
            let (key, payload) = (format!("order-{i}"), format!("{{\"n\":{i}}}"));
            input.push_str(&format!("{key}:{payload}\n"));
            let fp = fingerprint(key.as_bytes(), payload.as_bytes());
            let e = truth.entry(event.div_euclid(W) * W).or_default();
            e.0 += 1;
            e.1 ^= fp;
            e.2 = e.2.wrapping_add(fp);
        }
        kcat.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        assert!(kcat.wait().unwrap().success(), "kcat failed");
    }
}

async fn stored(db: &Path, base: i64) -> BTreeMap<i64, (u64, u64, u64)> {
    let store = SqliteStore::open(db, &SqliteOptions::default()).unwrap();
    let mut out: BTreeMap<i64, (u64, u64, u64)> = BTreeMap::new();
    for r in
        store.read_range("orders", base - W, base + 5 * W).await.unwrap().into_iter().filter(|r| r.key.tier == "broker")
    {
        let e = out.entry(r.key.bucket_start_ms).or_default();
        e.0 += r.tally.count;
        e.1 ^= r.tally.fp_xor;
        e.2 = e.2.wrapping_add(r.tally.fp_sum);
    }
    out
}

async fn wait_for_count(db: &Path, base: i64, at_least: u64, timeout: Duration) -> BTreeMap<i64, (u64, u64, u64)> {
    let started = Instant::now();
    loop {
        let s = stored(db, base).await;
        if s.values().map(|v| v.0).sum::<u64>() >= at_least || started.elapsed() > timeout {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_killed_mid_stream_resumes_with_exact_tallies() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, _stdin, bootstrap) = mock_cluster("orders:4");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let db = dir.path().join("audit.db");
    let config = dir.path().join("tap.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"sqlite://{db}\"\ndata_dir = \"{data}\"\nagent_listen = \"127.0.0.1:{port}\"\n\
             [agent]\nname = \"tap-broker\"\nflush_interval_ms = 100\n\
             [[agent.topics]]\npattern = \"*\"\nevent_time = \"header:event-time\"\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             [kafka.options]\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n\
             [tap]\ntier = \"broker\"\ntopics = [\"orders\"]\n",
            db = db.display(),
            data = dir.path().display()
        ),
    )
    .unwrap();
    let mut truth = BTreeMap::new();
    let base = base_ms();

    let mut tap = kaudit("agent", &config, None);
    wait_ok(port, "/readyz", "tap", Duration::from_secs(60));
    produce(&bootstrap, base, 0..20_000, &mut truth);
    // Kill it while it is still working through the backlog (tallies partly flushed).
    let partial = wait_for_count(&db, base, 2_000, Duration::from_secs(60)).await;
    let (_, body) = http(port, "GET", "/metrics", "").unwrap();
    assert!(body.contains("kaudit_agent_messages_total{tier=\"broker\",topic=\"orders\"}"), "{body}");
    let (ok, report) = kaudit_testkit::promtool_check(&body);
    assert!(ok && report.trim().is_empty(), "promtool: {report}");
    tap.0.kill().unwrap(); // SIGKILL: no final flush
    tap.0.wait().unwrap();
    let at_kill: u64 = partial.values().map(|v| v.0).sum();

    produce(&bootstrap, base, 20_000..25_000, &mut truth); // while the tap is down
    let _tap = kaudit("agent", &config, None);
    let total: u64 = truth.values().map(|v| v.0).sum();
    let mut settled = wait_for_count(&db, base, total, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(800)).await; // a few more flushes: nothing may be added
    settled = {
        let again = stored(&db, base).await;
        assert_eq!(again, settled, "tallies still changing after reaching the total");
        again
    };
    assert!(at_kill > 0 && at_kill < total, "killed mid-stream ({at_kill} of {total} stored)");
    assert_eq!(settled, truth, "per-bucket count, xor and sum equal what was produced");
}

/// A tap's config file named `name`, in tap group `kaudit-tap-broker` (the default for its tier).
fn tap_config(dir: &Path, name: &str, db: &Path, bootstrap: &str) -> (std::path::PathBuf, u16) {
    let port = common::free_port();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "store = \"sqlite://{db}\"\ndata_dir = \"{data}\"\nagent_listen = \"127.0.0.1:{port}\"\n\
             [agent]\nname = \"{name}\"\nflush_interval_ms = 100\n\
             [[agent.topics]]\npattern = \"*\"\nevent_time = \"header:event-time\"\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             [kafka.options]\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n\
             [tap]\ntier = \"broker\"\ntopics = [\"orders\"]\n",
            db = db.display(),
            data = dir.join(name).display()
        ),
    )
    .unwrap();
    (config, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taps_of_different_names_in_one_group_hand_over_without_recounting() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, _stdin, bootstrap) = mock_cluster("orders:4");
    let db = dir.path().join("audit.db");
    let (config_a, port_a) = tap_config(dir.path(), "tap-a", &db, &bootstrap);
    let (config_b, port_b) = tap_config(dir.path(), "tap-b", &db, &bootstrap);
    let mut truth = BTreeMap::new();
    let base = base_ms();

    let mut tap_a = kaudit("agent", &config_a, None);
    let _tap_b = kaudit("agent", &config_b, None);
    wait_ok(port_a, "/readyz", "tap-a", Duration::from_secs(60));
    wait_ok(port_b, "/readyz", "tap-b", Duration::from_secs(60));
    produce(&bootstrap, base, 0..20_000, &mut truth);
    let partial = wait_for_count(&db, base, 4_000, Duration::from_secs(60)).await;
    tap_a.0.kill().unwrap(); // SIGKILL: tap-b takes its partitions once the session times out
    tap_a.0.wait().unwrap();
    let at_kill: u64 = partial.values().map(|v| v.0).sum();
    produce(&bootstrap, base, 20_000..24_000, &mut truth);
    let total: u64 = truth.values().map(|v| v.0).sum();
    let settled = wait_for_count(&db, base, total, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await; // more flushes: nothing may be added
    assert_eq!(stored(&db, base).await, settled, "tallies still changing after reaching the total");
    assert!(at_kill > 0 && at_kill < total, "killed mid-stream ({at_kill} of {total} stored)");
    assert_eq!(settled, truth, "the broker tier holds exactly what was produced, however the taps are named");
}
