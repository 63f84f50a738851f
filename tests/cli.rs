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
    assert!(stdout.contains("applied [1, 2, 3, 4, 5, 6, 7], now at [1, 2, 3, 4, 5, 6, 7]"), "{stdout}");
    assert!(stdout.contains("'class': 'SimpleStrategy', 'replication_factor': 1"), "{stdout}");
    let second = kaudit(&args);
    assert!(String::from_utf8_lossy(&second.stdout).contains("applied [], now at [1, 2, 3, 4, 5, 6, 7]"));
}

#[test]
fn migrate_sqlite_and_bad_urls() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/audit.db", dir.path().display());
    let out = kaudit(&["migrate", "--store", &url]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("schema at version 7"));

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
        "--consumer-loss",
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
    assert!(
        stdout.contains("injected: 0 lost before the broker, 0 lost and 0 duplicated at billing, 0 delayed"),
        "{stdout}"
    );
    assert!(!stdout.contains("named by the verifier"), "nothing to name: {stdout}");
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
    let unsketched = dir.path().join("unsketched.toml");
    std::fs::write(&unsketched, "[agent.sketch]\nenabled = false\n").unwrap();
    let out = kaudit(&["report", "--topic", "orders", "--since", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
    for (args, reason) in [
        (&["--loss", "2"][..], "must be a probability"),
        (&["--loss", "-0.1"][..], "must be a probability"),
        (&["--delay-ms", "-5"][..], "whole number of milliseconds"),
        (&["--duration", "0s"][..], "--duration must be from 1s"),
        (&["--listen", "nonsense"][..], "--listen \"nonsense\""),
        (&["--consumer-loss", "0.3", "--duplicates", "0.3"][..], "together must be at most 0.5"),
        (&["--config", unsketched.to_str().unwrap()][..], "needs agent.sketch.enabled = true"),
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

/// `kaudit` with `vars` set in its environment.
fn kaudit_with(args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kaudit")).args(args).envs(vars.iter().copied()).output().expect("kaudit runs")
}

/// Every stderr line as a JSON object.
fn json_lines(out: &Output) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .map(|l| match serde_json::from_str(l) {
            Ok(serde_json::Value::Object(o)) => o,
            _ => panic!("not a JSON object: {l:?}\nstderr:\n{stderr}"),
        })
        .collect()
}

#[test]
fn log_format_json_writes_every_stderr_line_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("k.toml");
    std::fs::write(&config, "[agent]\nname = \"file\"\nflush_interval = \"10s\"\n").unwrap();
    let vars = [
        ("RUST_LOG", "info"),
        ("KAUDIT__AGENT__NAME", "from-env"),
        ("KAUDIT__SCYLLA__USERNAME", "kaudit"),
        ("KAUDIT__SCYLLA__PASSWORD", "hunter2-pw"),
    ];
    let out = kaudit_with(&["--log-format", "json", "check-config", config.to_str().unwrap()], &vars);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ok (agent \"from-env\""), "{stdout}");
    assert!(stdout.contains("  agent.name set by the environment (KAUDIT__AGENT__NAME)"), "{stdout}");
    assert!(stdout.contains("  scylla.password set by the environment (KAUDIT__SCYLLA__PASSWORD)"), "{stdout}");
    let lines = json_lines(&out);
    let set: Vec<_> = lines.iter().filter(|l| l["message"] == "configuration key set from the environment").collect();
    assert_eq!(set.len(), 3, "{lines:?}");
    let line = set.iter().find(|l| l["variable"] == "KAUDIT__AGENT__NAME").expect("fields are flattened");
    assert_eq!((line["level"].as_str(), line["key"].as_str()), (Some("INFO"), Some("agent.name")));
    assert_eq!(line["target"], "kaudit::support::load");
    assert!(line["timestamp"].as_str().is_some_and(|t| t.starts_with("20") && t.ends_with('Z')), "{line:?}");
    assert_eq!(line["span"]["name"], "config", "{line:?}");
    assert_eq!(line["span"]["file"], config.to_str().unwrap(), "{line:?}");
    assert_eq!(line["spans"].as_array().map(Vec::len), Some(1), "{line:?}");
    let everything = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!everything.contains("hunter2"), "a value from the environment is never printed: {everything}");

    // From KAUDIT_LOG_FORMAT too, and the closing error is a JSON line as well.
    std::fs::write(&config, "[agent]\nflush_intervl_ms = 10\n").unwrap();
    let out = kaudit_with(
        &["check-config", config.to_str().unwrap()],
        &[("KAUDIT_LOG_FORMAT", "json"), ("KAUDIT__AGENT__BUCKET_WIDTH", "soon")],
    );
    assert_eq!(out.status.code(), Some(78));
    let lines = json_lines(&out);
    let last = lines.last().expect("the error");
    assert_eq!((last["level"].as_str(), last["target"].as_str()), (Some("ERROR"), Some("kaudit")));
    let message = last["message"].as_str().unwrap();
    assert!(message.contains("k.toml:2:1: key `agent.flush_intervl_ms`: unknown field"), "{message}");
    assert!(
        message.contains("environment KAUDIT__AGENT__BUCKET_WIDTH: key `agent.bucket_width`: \"soon\""),
        "{message}"
    );

    let out = kaudit(&["--log-format", "yaml", "man"]);
    assert_eq!(out.status.code(), Some(2), "only text and json");
}

#[test]
fn environment_overrides_reach_every_command() {
    // `migrate` with no file: the environment alone, and a bad key named by its variable.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/audit.db", dir.path().display());
    let out = kaudit_with(&["migrate", "--store", &url], &[("KAUDIT__AGENT__FLUSH_INTERVAL", "1 fortnight")]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("environment: 1 configuration error"), "{err}");
    assert!(err.contains("  environment KAUDIT__AGENT__FLUSH_INTERVAL: key `agent.flush_interval`"), "{err}");
    assert!(err.contains("units ms, s, m, h, d"), "{err}");
    let out = kaudit_with(&["migrate", "--store", &url], &[("KAUDIT__AGENT__FLUSH_INTERVAL", "1m")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

const SUBCOMMANDS: [&str; 11] = [
    "fingerprint",
    "check-config",
    "demo",
    "migrate",
    "agent",
    "verifier",
    "report",
    "lost",
    "health",
    "completions",
    "man",
];

#[test]
fn completions_cover_every_subcommand_in_every_shell() {
    let out = kaudit(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for name in SUBCOMMANDS {
        assert!(script.contains(name), "bash completion lacks {name}");
    }
    assert!(script.contains("--log-format"), "global flags too");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = kaudit(&["completions", shell]);
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("check-config"), "{shell}");
    }
    assert_eq!(kaudit(&["completions", "tcsh"]).status.code(), Some(2));
    // bash itself loads it and registers the completion.
    let loaded = Command::new("bash")
        .args(["-c", "source \"$1\" && complete -p kaudit", "bash", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    if let Ok(mut child) = loaded {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("kaudit"), "{out:?}");
    }
}

#[test]
fn man_pages_name_every_subcommand_and_render_cleanly() {
    let out = kaudit(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH kaudit 1"), "{page}");
    for name in SUBCOMMANDS {
        assert!(page.contains(&format!("kaudit\\-{}(1)", name.replace('-', "\\-"))), "kaudit(1) lacks {name}");
    }
    let out = kaudit(&["man", "health"]);
    let health = String::from_utf8(out.stdout).unwrap();
    assert!(health.contains(".TH kaudit-health 1") && health.contains("\\-\\-token\\-env"), "{health}");
    assert_eq!(kaudit(&["man", "nonsense"]).status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    assert!(kaudit(&["man", "--out-dir", dir.path().to_str().unwrap()]).status.success());
    for name in SUBCOMMANDS {
        assert!(dir.path().join(format!("kaudit-{name}.1")).exists(), "{name}");
    }
    // groff, where installed, renders both without a warning.
    for roff in [&page, &health] {
        let file = dir.path().join("page.1");
        std::fs::write(&file, roff).unwrap();
        if let Ok(out) = Command::new("groff").args(["-man", "-ww", "-z"]).arg(&file).output() {
            assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// A loopback HTTP server: `/ok` 200, `/down` 503 with a two-line body, `/auth` 200 only with
/// `Authorization: Bearer s3cret`. Serves until the runtime is dropped.
fn health_server() -> (std::net::SocketAddr, tokio::runtime::Runtime) {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/ok", get(|| async { "fine" }))
        .route(
            "/down",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "not ready: store unreachable\nsecond line") }),
        )
        .route(
            "/auth",
            get(|headers: HeaderMap| async move {
                match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    Some("Bearer s3cret") => (StatusCode::OK, "fine"),
                    _ => (StatusCode::UNAUTHORIZED, "missing or wrong token"),
                }
            }),
        );
    runtime.spawn(async move { axum::serve(listener, app).await });
    (addr, runtime)
}

#[test]
fn health_exits_0_on_2xx_and_1_with_one_line_otherwise() {
    let (addr, _server) = health_server();
    let url = |path: &str| format!("http://{addr}{path}");
    let one_line_failure = |out: &Output| -> String {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };

    let out = kaudit(&["health", &url("/ok")]);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let err = one_line_failure(&kaudit(&["health", &url("/down")]));
    assert_eq!(err, "kaudit health: 503 Service Unavailable: not ready: store unreachable\n");

    let err = one_line_failure(&kaudit(&["health", &url("/auth"), "--token-env", "KAUDIT_TEST_PROBE_TOKEN"]));
    assert!(err.contains("401 Unauthorized: missing or wrong token"), "unset variable: no header: {err}");
    let out = kaudit_with(
        &["health", &url("/auth"), "--token-env", "KAUDIT_TEST_PROBE_TOKEN"],
        &[("KAUDIT_TEST_PROBE_TOKEN", "s3cret")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Connection refused: a port just bound and released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = one_line_failure(&kaudit(&["health", &format!("http://{closed}/readyz")]));
    assert!(err.contains("Connection refused"), "{err}");
    // TLS to a plain HTTP port fails as a request error, on one line.
    let err = one_line_failure(&kaudit(&["health", &format!("https://{addr}/ok"), "--timeout", "3s"]));
    assert!(err.starts_with("kaudit health: request failed: "), "{err}");

    // A server that accepts and never answers: the timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = std::time::Instant::now();
    let out = kaudit(&["health", &format!("http://{}/readyz", silent.local_addr().unwrap()), "--timeout", "300ms"]);
    let err = one_line_failure(&out);
    assert_eq!(err, "kaudit health: no answer within 300ms\n");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    drop(silent);

    let err = one_line_failure(&kaudit(&["health", "ftp://example/x"]));
    assert!(err.contains("is not an http:// or https:// URL"), "{err}");
}

/// Several verifier instances need a store they all reach: SQLite is refused, naming the key and
/// the file, as are a Kafka-less group and a shard count out of range.
#[test]
fn coordination_with_sqlite_or_without_kafka_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shared.toml");
    std::fs::write(
        &config,
        "store = \"sqlite:///tmp/one-machine.db\"\n[[verifier.pipelines]]\ntopics = [\"orders\"]\ntiers = [\"producer\"]\n\
         [verifier.coordination]\nshards = 0\n",
    )
    .unwrap();
    let out = kaudit(&["check-config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("verifier.coordination") && stderr.contains("SQLite is one machine's file"), "{stderr}");
    assert!(stderr.contains("needs kafka.bootstrap_servers"), "{stderr}");
    assert!(stderr.contains("verifier.coordination.shards"), "{stderr}");
    assert!(stderr.contains("shared.toml"), "names the file: {stderr}");
    let verifier = kaudit(&["verifier", "--config", config.to_str().unwrap()]);
    assert_eq!(verifier.status.code(), Some(78), "{}", String::from_utf8_lossy(&verifier.stderr));
}
