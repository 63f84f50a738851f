//! Auditing a secured cluster end to end: an audited producer, the tap sidecar and an audited
//! consumer group (each its own process, as deployed) reach the brokers only through TLS
//! listeners (mutual TLS in one test, SASL/PLAIN over TLS in the other), configured by nothing but
//! `[kafka.options]`; every tier's stored tallies agree. Wrong credentials are refused with the
//! broker's reason. The brokers are librdkafka's mock cluster behind kaudit-testkit's secured
//! listeners (TLS termination and the broker's side of the SASL exchange, in front of each broker,
//! which advertises only the secured port).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Proc, free_port, kaudit, now_ms, wait_ok};
use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{SqliteStore, Store};
use kaudit_testkit::{SecuredMockCluster, Security};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;

/// A configuration for one agent process: SQLite store, the secured cluster, `extra` sections.
fn config(dir: &Path, name: &str, cluster: &SecuredMockCluster, extra: &str) -> std::path::PathBuf {
    let mut options = String::new();
    for (key, value) in cluster.client_options() {
        options.push_str(&format!("\"{key}\" = \"{value}\"\n"));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "store = \"sqlite://{db}\"\ndata_dir = \"{data}\"\n{extra}\n\
             [agent]\nname = \"{name}\"\nflush_interval_ms = 200\n\
             [[agent.topics]]\npattern = \"*\"\nevent_time = \"header:event-time\"\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             [kafka.options]\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n{options}",
            db = dir.join("audit.db").display(),
            data = dir.join(name).display(),
            bootstrap = cluster.bootstrap_servers(),
        ),
    )
    .unwrap();
    path
}

/// Per tier: (count, xor, sum) of the stored tallies of topic `orders`.
async fn tallies(db: &Path) -> BTreeMap<String, (u64, u64, u64)> {
    let store = SqliteStore::open(db, &SqliteOptions::default()).unwrap();
    let now = now_ms();
    let mut out: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for r in store.read_range("orders", now - 600_000, now + 600_000).await.unwrap() {
        let e = out.entry(r.key.tier.clone()).or_default();
        e.0 += r.tally.count;
        e.1 ^= r.tally.fp_xor;
        e.2 = e.2.wrapping_add(r.tally.fp_sum);
    }
    out
}

fn sample_app(args: &[&str], config: &Path) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_kaudit-sample-app"))
            .args(args)
            .args(["--config", config.to_str().unwrap(), "--topic", "orders"])
            .spawn()
            .unwrap(),
    )
}

/// Produce through the secured listeners with the audited producer while the tap and an audited
/// consumer read them back; all three tiers' tallies must end equal and non-empty.
async fn audit_is_exact_through(security: Security) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = SecuredMockCluster::start(2, security, dir.path());
    cluster.create_topic("orders", 3);
    let port = free_port();
    let tap = config(
        dir.path(),
        "tap",
        &cluster,
        &format!("agent_listen = \"127.0.0.1:{port}\"\n[tap]\ntier = \"broker\"\ntopics = [\"orders\"]"),
    );
    let producer = config(dir.path(), "producer", &cluster, "");
    let consumer = config(dir.path(), "consumer", &cluster, "");
    let checked =
        Command::new(env!("CARGO_BIN_EXE_kaudit")).args(["check-config", tap.to_str().unwrap()]).output().unwrap();
    assert!(checked.status.success(), "check-config: {}", String::from_utf8_lossy(&checked.stderr));

    let log = dir.path().join("tap.log");
    let _tap = kaudit("agent", &tap, Some(&log));
    wait_ok(port, "/readyz", "tap", Duration::from_secs(60));
    let mut billing = sample_app(&["consume", "--group", "billing", "--tier", "consumer/billing"], &consumer);
    let mut produced = sample_app(&["produce", "--tier", "producer", "--rate", "1000", "--duration", "3s"], &producer);
    assert!(produced.0.wait().unwrap().success(), "the producer failed");

    let db = dir.path().join("audit.db");
    let started = Instant::now();
    let settled = loop {
        let now = tallies(&db).await;
        let producer = now.get("producer").copied().unwrap_or_default();
        let others = ["broker", "consumer/billing"].map(|tier| now.get(tier).copied().unwrap_or_default());
        if producer.0 > 0 && others.iter().all(|t| *t == producer) {
            break now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "tiers did not agree within 90 s: {now:?}\ntap log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(billing.terminate().success(), "the consumer did not stop cleanly");
    assert!(settled["producer"].0 >= 1_000, "about 3,000 messages were produced: {settled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_through_mutual_tls_is_exact() {
    audit_is_exact_through(Security { tls: true, client_certificates: true, sasl_plain: None }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_through_sasl_plain_over_tls_is_exact() {
    let sasl = Some(("kaudit".to_string(), "s3cret-for-tests".to_string()));
    audit_is_exact_through(Security { tls: true, client_certificates: false, sasl_plain: sasl }).await;
}

/// Records the errors librdkafka reports (authentication, TLS handshake).
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<String>>>);

impl ClientContext for Errors {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.lock().unwrap().push(format!("{error}: {reason}"));
    }
}
impl ConsumerContext for Errors {}

/// What librdkafka reports when a client with `options` asks the cluster for metadata.
fn refusal(cluster: &SecuredMockCluster, options: &[(&str, String)]) -> String {
    let errors = Errors::default();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", cluster.bootstrap_servers()).set("group.id", "refused");
    for (key, value) in options {
        config.set(*key, value);
    }
    let consumer: BaseConsumer<Errors> = config.create_with_context(errors.clone()).unwrap();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(3));
    assert!(metadata.is_err(), "the cluster answered a client it must refuse");
    let started = Instant::now();
    while errors.0.lock().unwrap().is_empty() && started.elapsed() < Duration::from_secs(5) {
        consumer.poll(Duration::from_millis(100));
    }
    errors.0.lock().unwrap().join("\n")
}

#[test]
fn wrong_credentials_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let sasl = Some(("kaudit".to_string(), "right".to_string()));
    let cluster =
        SecuredMockCluster::start(1, Security { tls: true, client_certificates: false, sasl_plain: sasl }, dir.path());
    let mut options = cluster.client_options();
    options.iter_mut().filter(|(k, _)| *k == "sasl.password").for_each(|(_, v)| *v = "wrong".to_string());
    let why = refusal(&cluster, &options);
    assert!(why.contains("Authentication failed: Invalid username or password"), "{why}");

    let dir = tempfile::tempdir().unwrap();
    let cluster =
        SecuredMockCluster::start(1, Security { tls: true, client_certificates: true, sasl_plain: None }, dir.path());
    let without_certificate: Vec<_> = cluster
        .client_options()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("ssl.certificate") && !k.starts_with("ssl.key"))
        .collect();
    let why = refusal(&cluster, &without_certificate);
    assert!(why.contains("SSL") || why.contains("ssl") || why.contains("handshake"), "{why}");
    // Plaintext against a TLS listener is not a way in either.
    let why = refusal(&cluster, &[]);
    assert!(!why.is_empty(), "a plaintext client got no error");
}
