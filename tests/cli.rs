//! The `kaudit` binary as a user runs it, as a child process.

use std::path::PathBuf;
use std::process::{Command, Output};

fn kaudit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kaudit")).args(args).output().expect("kaudit runs")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn fingerprint_prints_the_vector_value() {
    let out = kaudit(&["fingerprint", "--business-id", "order-42", "--payload", r#"{"id":"order-42","amount":1999}"#]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "c283aaa0f9f3f99e\n");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, vec![b'x'; 1024]).unwrap();
    let out = kaudit(&["fingerprint", "--business-id", "k", "--payload-file", file.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "07972220eefa0ee3\n");

    let out = kaudit(&["fingerprint", "--payload-file", "/nonexistent/payload"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read payload file"));
}

#[test]
fn check_config_accepts_examples_and_names_every_error() {
    let good = repo().join("config/kaudit.example.toml");
    let out = kaudit(&["check-config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));

    let bad = repo().join("config/invalid/wrongkey.toml");
    let out = kaudit(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrongkey.toml:4:1: key `agent.flush_intervl_ms`"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("  ") && l.contains("wrongkey.toml:")).count(), 5, "{err}");
}

#[test]
fn demo_audits_a_mock_cluster_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = kaudit(&["demo", "--messages", "3000", "--data-dir", dir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("audit: every bucket complete at every tier"), "{stdout}");
    assert!(stdout.contains("produced 3000 messages, consumed 3000"), "{stdout}");
    let consumer_lines: Vec<&str> = stdout.lines().filter(|l| l.contains("consumer/billing")).collect();
    assert!(!consumer_lines.is_empty() && consumer_lines.iter().all(|l| l.ends_with("complete")), "{stdout}");
    assert!(dir.path().join("audit.db").exists());
}

#[test]
fn migrate_creates_a_scylla_keyspace_once() {
    let server = kaudit_testkit::CqlServer::start();
    let store = format!("scylla://{}", server.addr());
    let args =
        ["migrate", "--store", &store, "--keyspace", "cli_ks", "--replication-factor", "1", "--no-schema-agreement"];
    let first = kaudit(&args);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}{}", String::from_utf8_lossy(&first.stderr));
    assert!(stdout.contains("applied [1, 2], now at [1, 2]"), "{stdout}");
    assert!(stdout.contains("'class': 'SimpleStrategy', 'replication_factor': 1"), "{stdout}");
    let second = kaudit(&args);
    assert!(String::from_utf8_lossy(&second.stdout).contains("applied [], now at [1, 2]"));
}

#[test]
fn migrate_sqlite_and_bad_urls() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/audit.db", dir.path().display());
    let out = kaudit(&["migrate", "--store", &url]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("schema at version 2"));

    let out = kaudit(&["migrate", "--store", "postgres://db:5432"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scheme must be sqlite:// or scylla://"));
    let out = kaudit(&["migrate", "--store", "scylla://db-without-port"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no port"));
    let out = kaudit(&["migrate", "--store", "scylla://127.0.0.1:9", "--datacenter", "eu"]);
    assert_eq!(out.status.code(), Some(2), "clap rejects a datacenter without =N");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not DC=N"));
}

#[test]
fn report_prints_a_demo_run_and_rejects_bad_durations() {
    let dir = tempfile::tempdir().unwrap();
    let out = kaudit(&["demo", "--messages", "1000", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    let store = format!("sqlite://{}/audit.db", dir.path().display());
    let out = kaudit(&["report", "--topic", "orders", "--since", "1h", "--store", &store]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = table.lines().filter(|l| l.contains("consumer/billing")).collect();
    assert!(!lines.is_empty() && lines.iter().all(|l| l.ends_with("complete")), "{table}");
    let out = kaudit(&["report", "--topic", "nothing-here", "--store", &store]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("no tallies for topic"));
    let out = kaudit(&["report", "--topic", "orders", "--since", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
}

#[test]
fn verifier_serves_its_api_and_stops_on_sigterm() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("v.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"sqlite://{}/audit.db\"\n[verifier]\nlisten = \"127.0.0.1:{port}\"\nevaluate_interval_ms = 100\n\
             [[verifier.pipelines]]\ntopics = [\"*\"]\ntiers = [\"producer\"]\nconsumers = [\"consumer/billing\"]\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(["verifier", "--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let get = |path: &str| -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    };
    let started = std::time::Instant::now();
    while !get("/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "verifier never became ready");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(get("/api/v1/topics").unwrap().contains("{\"topics\":[]}"));
    assert!(get("/api/v1/buckets?topic=x").unwrap().starts_with("HTTP/1.1 400"));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");

    std::fs::write(&config, "[verifier]\nlisten = \"127.0.0.1:1\"\n").unwrap();
    let out = kaudit(&["verifier", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [[verifier.pipelines]]"));
}
