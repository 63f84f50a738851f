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
fn migrate_creates_a_scylla_keyspace_once() {
    let server = kaudit_testkit::CqlServer::start();
    let store = format!("scylla://{}", server.addr());
    let args =
        ["migrate", "--store", &store, "--keyspace", "cli_ks", "--replication-factor", "1", "--no-schema-agreement"];
    let first = kaudit(&args);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}{}", String::from_utf8_lossy(&first.stderr));
    assert!(stdout.contains("applied [1, 2, 3], now at [1, 2, 3]"), "{stdout}");
    assert!(stdout.contains("'class': 'SimpleStrategy', 'replication_factor': 1"), "{stdout}");
    let second = kaudit(&args);
    assert!(String::from_utf8_lossy(&second.stdout).contains("applied [], now at [1, 2, 3]"));
}

#[test]
fn migrate_sqlite_and_bad_urls() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/audit.db", dir.path().display());
    let out = kaudit(&["migrate", "--store", &url]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("schema at version 3"));

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

/// A fault-free demo: every bucket complete on every edge, no alert, exit 0; `kaudit report` then
/// reads the run's database back.
#[test]
fn a_clean_demo_passes_and_report_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = kaudit(&[
        "demo",
        "--duration",
        "4s",
        "--rate",
        "500",
        "--bucket",
        "2s",
        "--loss",
        "0",
        "--duplicates",
        "0",
        "--delay-ms",
        "0",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("detection matches injection"), "{stdout}");
    assert!(stdout.contains("injected: 0 lost, 0 duplicated, 0 delayed"), "{stdout}");
    assert!(!stdout.contains("fired after"), "no alert on a clean run: {stdout}");
    let bucket_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("20")).collect();
    assert!(bucket_lines.len() >= 2, "{stdout}");
    assert!(bucket_lines.iter().all(|l| l.matches("complete").count() == 3), "{stdout}");
    let produced: u64 = bucket_lines.iter().map(|l| l.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap()).sum();
    assert!((1_500..=2_100).contains(&produced), "about 4 s × 500/s: {produced}");

    let store = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tallies and verdicts in "))
        .expect("the store is named")
        .to_string();
    assert!(store.starts_with("sqlite://") && store.contains(dir.path().to_str().unwrap()), "{store}");
    assert!(stdout.contains(&format!("read them back with: kaudit report --store {store} --topic orders")), "{stdout}");
    assert!(stdout.contains("alerts: none (none expected)"), "{stdout}");
    assert!(stdout.lines().all(|l| l == l.trim_end()), "no trailing spaces: {stdout:?}");
    let out = kaudit(&["report", "--topic", "orders", "--since", "1h", "--store", &store]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for tier in ["broker", "consumer/billing", "consumer/analytics"] {
        let lines: Vec<&str> = table.lines().filter(|l| l.contains(tier)).collect();
        assert_eq!(lines.len(), bucket_lines.len(), "{table}");
        assert!(lines.iter().all(|l| l.ends_with("complete")), "{table}");
    }
    let out = kaudit(&["report", "--topic", "nothing-here", "--store", &store]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("no tallies for topic \"nothing-here\" in the last 1h"), "{text}");
    assert!(text.contains("topics with tallies: orders"), "{text}");
    let missing = format!("sqlite://{}/no-such.db", dir.path().display());
    let out = kaudit(&["report", "--topic", "orders", "--store", &missing]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database at"));
    assert!(!dir.path().join("no-such.db").exists(), "report must not create a database");
    let out = kaudit(&["report", "--topic", "orders", "--since", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
    for (args, reason) in [
        (&["--loss", "2"][..], "must be a probability"),
        (&["--loss", "-0.1"][..], "must be a probability"),
        (&["--delay-ms", "-5"][..], "whole number of milliseconds"),
        (&["--duration", "0s"][..], "--duration must be from 1s"),
        (&["--listen", "nonsense"][..], "--listen \"nonsense\""),
    ] {
        let out = kaudit(&[&["demo"][..], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(reason), "{args:?}: {err}");
    }
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
    /// Killed when dropped, so a failing assertion leaves no verifier running.
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_kaudit"))
            .args(["verifier", "--config", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
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
    let topics = get("/api/v1/topics").unwrap();
    assert!(topics.contains("\"topics\":[]") && topics.starts_with("HTTP/1.1 200"), "{topics}");
    assert!(get("/api/v1/buckets?topic=x").unwrap().starts_with("HTTP/1.1 400"));
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");

    std::fs::write(&config, "[verifier]\nlisten = \"127.0.0.1:1\"\n").unwrap();
    let out = kaudit(&["verifier", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [[verifier.pipelines]]"));
}
